/*
 * plugin_common.h: what the C test plugins chatexec.c, streamplugin.c, checkstream.c and
 * busplugin.c share: the host's API pointer and calls to it, host.stream.emit and close,
 * threads that emit (counted, so that shutdown can wait for them), JSON answers, and the
 * call skeleton. Included with quotes, it is found beside the plugin's source: the test
 * and bench builds need no -I of their own for it (they pass include/ and the directory
 * of cliproxy_example.h).
 *
 * A plugin writes its own methods as one function answering 1 when it knows the method:
 *
 *     static int xx_methods(const char* method, const char* req, size_t len, cpx_buf* out);
 *
 * and then PC_PLUGIN(REGISTRATION, xx_methods, shutdown) defines its call, free_buffer
 * and cliproxy_plugin_init: plugin.register and plugin.reconfigure answer REGISTRATION
 * (the result object's JSON), plugin.shutdown answers {}, a method xx_methods does not
 * know answers unknown_method.
 */
#ifndef PLUGIN_COMMON_H
#define PLUGIN_COMMON_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cliproxy_plugin.h"
#include "cliproxy_example.h"

#define PC_STATIC static inline

/* The host's API from cliproxy_plugin_init; emitting threads read it, hence atomic. */
static const cliproxy_host_api* _Atomic pc_host_api;
/* Threads started by pc_spawn that have not returned yet. */
static atomic_llong pc_running;

PC_STATIC void pc_sleep_us(unsigned long long us) {
    struct timespec ts = {(time_t)(us / 1000000), (long)(us % 1000000) * 1000};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

/* ------------------------------------------------------------------------ */
/* Calling the host                                                         */
/* ------------------------------------------------------------------------ */

/* One host call; 1 when the host answered ok. Otherwise `failure` (when not NULL, `cap`
 * bytes) holds the host's envelope, cut to fit, or why there is none. */
PC_STATIC int pc_host_call(const char* method, const char* req, size_t len, char* failure,
                           size_t cap) {
    const cliproxy_host_api* host = atomic_load(&pc_host_api);
    cliproxy_buffer resp = {0};
    if (!host || host->call(host->host_ctx, method, (const uint8_t*)req, len, &resp) != 0) {
        if (failure && cap) snprintf(failure, cap, "host->call returned non-zero");
        return 0;
    }
    int ok = resp.len >= 10 && memcmp(resp.ptr, "{\"ok\":true", 10) == 0;
    if (!ok && failure && cap) {
        size_t n = resp.len < cap - 1 ? resp.len : cap - 1;
        if (n) memcpy(failure, resp.ptr, n);
        failure[n] = '\0';
    }
    host->free_buffer(resp.ptr, resp.len);
    return ok;
}

/* pc_host_call with a built request; one that could not be built is not sent (0). */
PC_STATIC int pc_host_buf(const char* method, const cpx_buf* req, char* failure, size_t cap) {
    if (req->failed) {
        if (failure && cap) snprintf(failure, cap, "out of memory building %s's request", method);
        return 0;
    }
    return pc_host_call(method, req->data, req->len, failure, cap);
}

/* host.stream.emit of one chunk; a non-NULL `error` ends the stream with it. 1 when the
 * host took the chunk; `failure` as for pc_host_call. */
PC_STATIC int pc_stream_emit(const char* stream_id, const void* payload, size_t payload_len,
                             const char* error, char* failure, size_t cap) {
    cpx_buf req = {0};
    cpx_buf_puts(&req, "{\"stream_id\":");
    cpx_buf_json_cstring(&req, stream_id);
    cpx_buf_puts(&req, ",\"payload\":\"");
    cpx_buf_base64(&req, (const uint8_t*)payload, payload_len);
    cpx_buf_puts(&req, "\"");
    if (error) {
        cpx_buf_puts(&req, ",\"error\":");
        cpx_buf_json_cstring(&req, error);
    }
    cpx_buf_puts(&req, "}");
    int ok = pc_host_buf("host.stream.emit", &req, failure, cap);
    cpx_buf_free(&req);
    return ok;
}

/* host.stream.close, with `error` when not NULL; 1 when the host answered ok. */
PC_STATIC int pc_stream_close(const char* stream_id, const char* error) {
    cpx_buf req = {0};
    cpx_buf_puts(&req, "{\"stream_id\":");
    cpx_buf_json_cstring(&req, stream_id);
    if (error) {
        cpx_buf_puts(&req, ",\"error\":");
        cpx_buf_json_cstring(&req, error);
    }
    cpx_buf_puts(&req, "}");
    int ok = pc_host_buf("host.stream.close", &req, NULL, 0);
    cpx_buf_free(&req);
    return ok;
}

/* ------------------------------------------------------------------------ */
/* Threads that emit                                                        */
/* ------------------------------------------------------------------------ */

typedef struct {
    void (*run)(void*);
    void* arg;
} pc_start;

PC_STATIC void* pc_thread_main(void* p) {
    pc_start start = *(pc_start*)p;
    free(p);
    start.run(start.arg);
    atomic_fetch_sub(&pc_running, 1);
    return NULL;
}

/* Runs run(arg) on a detached thread of its own, counted in pc_running until it returns.
 * 0 when no thread could be started: run was not called and arg is still the caller's. */
PC_STATIC int pc_spawn(void (*run)(void*), void* arg) {
    pc_start* start = (pc_start*)malloc(sizeof *start);
    if (!start) return 0;
    start->run = run;
    start->arg = arg;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_t thread;
    atomic_fetch_add(&pc_running, 1);
    int rc = pthread_create(&thread, &attr, pc_thread_main, start);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        atomic_fetch_sub(&pc_running, 1);
        free(start);
        return 0;
    }
    return 1;
}

/* A shutdown that waits (bounded, 5 s) for the threads of pc_spawn: the library must not
 * be unmapped under them. */
PC_STATIC void pc_wait_threads(void) {
    for (int i = 0; i < 500 && atomic_load(&pc_running) > 0; i++) pc_sleep_us(10000);
}

/* ------------------------------------------------------------------------ */
/* Answers and the call skeleton                                            */
/* ------------------------------------------------------------------------ */

/* An ok envelope whose result is the JSON text `result`. */
PC_STATIC void pc_ok(cpx_buf* out, const char* result) {
    cpx_ok_begin(out);
    cpx_buf_puts(out, result);
    cpx_ok_end(out);
}

/* An ok envelope whose result is the request as it came ({} when empty). */
PC_STATIC void pc_echo(cpx_buf* out, const char* req, size_t len) {
    cpx_ok_begin(out);
    cpx_buf_append(out, len ? req : "{}", len ? len : 2);
    cpx_ok_end(out);
}

typedef int (*pc_methods)(const char* method, const char* req, size_t len, cpx_buf* out);

/* The body of a plugin's call: see the top of this file. */
PC_STATIC int pc_call(const char* registration, pc_methods methods, const char* method,
                      const uint8_t* request, size_t request_len, cliproxy_buffer* response) {
    if (!response) return 1;
    response->ptr = NULL;
    response->len = 0;
    if (!method) method = "";
    const char* req = request ? (const char*)request : "";
    size_t len = request ? request_len : 0;
    cpx_buf out = {0};
    if (strcmp(method, "plugin.register") == 0 || strcmp(method, "plugin.reconfigure") == 0) {
        pc_ok(&out, registration);
    } else if (strcmp(method, "plugin.shutdown") == 0) {
        pc_ok(&out, "{}");
    } else if (!methods(method, req, len, &out)) {
        cpx_unknown_method(&out, method);
    }
    return cpx_respond(&out, response, 0);
}

PC_STATIC void pc_free_buffer(void* ptr, size_t len) {
    (void)len;
    free(ptr);
}

/* The plugin's call, free_buffer and cliproxy_plugin_init; `on_shutdown` may be NULL. */
#define PC_PLUGIN(registration, methods, on_shutdown)                                         \
    static int pc_plugin_call(const char* method, const uint8_t* request, size_t request_len, \
                              cliproxy_buffer* response) {                                   \
        return pc_call(registration, methods, method, request, request_len, response);       \
    }                                                                                        \
    CLIPROXY_EXPORT int cliproxy_plugin_init(const cliproxy_host_api* host,                  \
                                             cliproxy_plugin_api* plugin) {                  \
        if (!plugin) return 1;                                                               \
        atomic_store(&pc_host_api, host);                                                    \
        plugin->abi_version = CLIPROXY_ABI_VERSION;                                          \
        plugin->call = pc_plugin_call;                                                       \
        plugin->free_buffer = pc_free_buffer;                                                \
        plugin->shutdown = on_shutdown;                                                      \
        return 0;                                                                            \
    }

#endif /* PLUGIN_COMMON_H */
