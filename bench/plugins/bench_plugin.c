/*
 * bench_plugin: the plugin the benchmarks call. It does as little as a plugin can,
 * so that what the benchmarks measure is the call path, not the plugin.
 *
 *   cc -shared -fPIC -O2 -pthread -I include -I examples/c bench/plugins/bench_plugin.c -o X.so
 *
 * Methods:
 *   plugin.register, plugin.reconfigure   a valid registration (executor)
 *   plugin.shutdown                        {}
 *   echo      {"ok":true,"result":<request verbatim>} built with one malloc + memcpy
 *   spin      {"us":N}: burn N microseconds of CPU, answer {"spun_us":N}
 *   log       {"n":N}: call host->call("host.log", <constant ~80 B request>) N times in
 *             a row, release each answer with host->free_buffer, and answer
 *             {"n":N,"ns":<elapsed ns, measured here in C>,"failures":<non-0 rc or
 *             answers that are not {"ok":true...>}
 *   thread_log  the same, with the N host calls made on a thread the plugin starts (and
 *             joins before answering): in isolated mode these travel the control socket
 *   anything else: an unknown_method error envelope
 *
 * Responses are malloc'd; free_buffer is free().
 */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cliproxy_plugin.h"
#include "cliproxy_example.h"

static const cliproxy_host_api* _Atomic g_host;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static int respond_copy(const char* data, size_t n, cliproxy_buffer* response) {
    char* p = (char*)malloc(n ? n : 1);
    if (!p) return 1;
    memcpy(p, data, n);
    response->ptr = p;
    response->len = n;
    return 0;
}

static int respond_buf(cpx_buf* b, cliproxy_buffer* response) {
    if (b->failed || !b->data) {
        cpx_buf_free(b);
        return 1;
    }
    /* hand the buffer itself over: no second copy */
    response->ptr = b->data;
    response->len = b->len;
    return 0;
}

static int bench_echo(const char* req, size_t len, cliproxy_buffer* response) {
    static const char head[] = "{\"ok\":true,\"result\":";
    const size_t hl = sizeof head - 1;
    if (!len) {
        req = "{}";
        len = 2;
    }
    if (len > SIZE_MAX - hl - 2) return 1;
    char* p = (char*)malloc(hl + len + 1);
    if (!p) return 1;
    memcpy(p, head, hl);
    memcpy(p + hl, req, len);
    p[hl + len] = '}';
    response->ptr = p;
    response->len = hl + len + 1;
    return 0;
}

static int bench_spin(const char* req, size_t len, cliproxy_buffer* response) {
    unsigned long long us = cpx_json_get_uint(req, len, "us", 0);
    uint64_t until = now_ns() + (uint64_t)us * 1000ULL;
    while (now_ns() < until) {
    }
    char out[96];
    int n = snprintf(out, sizeof out, "{\"ok\":true,\"result\":{\"spun_us\":%llu}}", us);
    return respond_copy(out, (size_t)n, response);
}

struct log_loop {
    const cliproxy_host_api* host;
    unsigned long long n;
    unsigned long long failures;
    uint64_t elapsed;
};

static void* log_loop_run(void* arg) {
    static const char log_req[] =
        "{\"level\":\"debug\",\"message\":\"bench: host.log round trip\",\"fields\":{\"i\":1}}";
    static const char ok_prefix[] = "{\"ok\":true";
    struct log_loop* loop = (struct log_loop*)arg;
    const cliproxy_host_api* host = loop->host;
    uint64_t start = now_ns();
    for (unsigned long long i = 0; i < loop->n; i++) {
        cliproxy_buffer answer = {0};
        int rc = host->call(host->host_ctx, "host.log", (const uint8_t*)log_req,
                            sizeof log_req - 1, &answer);
        if (rc != 0 || !answer.ptr || answer.len < sizeof ok_prefix - 1 ||
            memcmp(answer.ptr, ok_prefix, sizeof ok_prefix - 1) != 0)
            loop->failures++;
        if (answer.ptr) host->free_buffer(answer.ptr, answer.len);
    }
    loop->elapsed = now_ns() - start;
    return NULL;
}

static int bench_log(const char* req, size_t len, int on_thread, cliproxy_buffer* response) {
    const cliproxy_host_api* host = atomic_load(&g_host);
    cpx_buf out = {0};
    if (!host || !host->call || !host->free_buffer) {
        cpx_error(&out, "plugin_error", "no host API");
        return respond_buf(&out, response);
    }
    struct log_loop loop = {host, cpx_json_get_uint(req, len, "n", 1), 0, 0};
    if (on_thread) {
        pthread_t thread;
        if (pthread_create(&thread, NULL, log_loop_run, &loop) != 0) {
            cpx_error(&out, "plugin_error", "pthread_create failed");
            return respond_buf(&out, response);
        }
        pthread_join(thread, NULL);
    } else {
        log_loop_run(&loop);
    }
    cpx_buf_printf(&out, "{\"ok\":true,\"result\":{\"n\":%llu,\"ns\":%llu,\"failures\":%llu}}",
                   loop.n, (unsigned long long)loop.elapsed, loop.failures);
    return respond_buf(&out, response);
}

static int bench_call(const char* method, const uint8_t* request, size_t request_len,
                      cliproxy_buffer* response) {
    if (!response) return 1;
    response->ptr = NULL;
    response->len = 0;
    if (!method) method = "";
    const char* req = (const char*)request;
    size_t len = request ? request_len : 0;
    cpx_buf out = {0};

    if (strcmp(method, "echo") == 0) return bench_echo(req, len, response);
    if (strcmp(method, "spin") == 0) return bench_spin(req, len, response);
    if (strcmp(method, "log") == 0) return bench_log(req, len, 0, response);
    if (strcmp(method, "thread_log") == 0) return bench_log(req, len, 1, response);
    if (strcmp(method, "plugin.register") == 0 || strcmp(method, "plugin.reconfigure") == 0) {
        cpx_buf_puts(&out,
                     "{\"ok\":true,\"result\":{\"schema_version\":1,\"metadata\":{"
                     "\"Name\":\"bench\",\"Version\":\"1.0.0\",\"Author\":\"bench\","
                     "\"GitHubRepository\":\"https://example.invalid/bench\","
                     "\"ConfigFields\":[]},\"capabilities\":{\"executor\":true}}}");
    } else if (strcmp(method, "plugin.shutdown") == 0) {
        cpx_buf_puts(&out, "{\"ok\":true,\"result\":{}}");
    } else {
        cpx_unknown_method(&out, method);
    }
    return respond_buf(&out, response);
}

static void bench_free(void* ptr, size_t len) {
    (void)len;
    free(ptr);
}

CLIPROXY_EXPORT int cliproxy_plugin_init(const cliproxy_host_api* host,
                                         cliproxy_plugin_api* plugin) {
    if (!plugin) return 1;
    atomic_store(&g_host, host);
    plugin->abi_version = 1;
    plugin->call = bench_call;
    plugin->free_buffer = bench_free;
    plugin->shutdown = NULL;
    return 0;
}
