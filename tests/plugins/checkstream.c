/*
 * checkstream: an executor that streams asynchronously and logs within its calls, for the
 * tests of `cliproxy-host check`. Built as is, it does everything right; each knob (-D...)
 * breaks one thing check must report:
 *
 *   CS_NEVER_CLOSE       never calls host.stream.close
 *   CS_EMIT_AFTER_CLOSE  emits once more after host.stream.close
 *   CS_BAD_BASE64        emits a payload that is not base64
 *   CS_WRONG_STREAM_ID   emits to a stream id it was not given
 *   CS_NO_ECHO           host.log within executor.execute without host_callback_id
 *   CS_NO_FORMATS        registers the executor without input/output formats
 *
 * executor.execute_stream answers no chunks; a thread of its own emits three chunks
 * ("c0", "c1", "c2") and closes the stream.
 */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cliproxy_plugin.h"
#include "cliproxy_example.h"

#ifdef CS_NO_FORMATS
#define CS_FORMATS ""
#else
#define CS_FORMATS ",\"executor_input_formats\":[\"openai\"],\"executor_output_formats\":[\"openai\"]"
#endif

static const cliproxy_host_api* _Atomic g_host;
static atomic_int g_running;

static void cs_host(const char* method, const cpx_buf* req) {
    const cliproxy_host_api* host = atomic_load(&g_host);
    cliproxy_buffer resp = {0};
    if (!host || req->failed) return;
    if (host->call(host->host_ctx, method, (const uint8_t*)req->data, req->len, &resp) == 0) {
        host->free_buffer(resp.ptr, resp.len);
    }
}

static void cs_emit(const char* stream_id, const char* text) {
    cpx_buf req = {0};
    cpx_buf_puts(&req, "{\"stream_id\":");
    cpx_buf_json_cstring(&req, stream_id);
    cpx_buf_puts(&req, ",\"payload\":\"");
#ifdef CS_BAD_BASE64
    cpx_buf_puts(&req, "%%not base64%%");
    (void)text;
#else
    cpx_buf_base64(&req, (const uint8_t*)text, strlen(text));
#endif
    cpx_buf_puts(&req, "\"}");
    cs_host("host.stream.emit", &req);
    cpx_buf_free(&req);
}

static void* cs_stream(void* arg) {
    char* stream_id = (char*)arg;
#ifdef CS_WRONG_STREAM_ID
    const char* target = "999999";
#else
    const char* target = stream_id;
#endif
    cs_emit(target, "c0");
    cs_emit(target, "c1");
    cs_emit(target, "c2");
#ifndef CS_NEVER_CLOSE
    cpx_buf req = {0};
    cpx_buf_puts(&req, "{\"stream_id\":");
    cpx_buf_json_cstring(&req, stream_id);
    cpx_buf_puts(&req, "}");
    cs_host("host.stream.close", &req);
    cpx_buf_free(&req);
#endif
#ifdef CS_EMIT_AFTER_CLOSE
    cs_emit(target, "late");
#endif
    free(stream_id);
    atomic_fetch_sub(&g_running, 1);
    return NULL;
}

static void cs_execute_stream(const char* req, size_t len, cpx_buf* out) {
    char* stream_id = cpx_json_get_string(req, len, "stream_id", NULL);
    if (!stream_id) {
        cpx_error(out, "invalid_request", "checkstream: stream_id is missing");
        return;
    }
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_t thread;
    atomic_fetch_add(&g_running, 1);
    if (pthread_create(&thread, &attr, cs_stream, stream_id) != 0) {
        atomic_fetch_sub(&g_running, 1);
        free(stream_id);
        cpx_error(out, "internal", "checkstream: no thread");
    } else {
        cpx_buf_puts(out, "{\"ok\":true,\"result\":{\"headers\":{},\"chunks\":[]}}");
    }
    pthread_attr_destroy(&attr);
}

/* host.log within a scoped call, echoing its host_callback_id (unless CS_NO_ECHO). */
static void cs_log(const char* req, size_t len) {
    char* callback_id = cpx_json_get_string(req, len, "host_callback_id", NULL);
    cpx_buf log = {0};
    cpx_buf_puts(&log, "{\"level\":\"info\",\"message\":\"checkstream called\"");
#ifndef CS_NO_ECHO
    cpx_buf_puts(&log, ",\"host_callback_id\":");
    cpx_buf_json_cstring(&log, callback_id ? callback_id : "");
#endif
    cpx_buf_puts(&log, "}");
    cs_host("host.log", &log);
    cpx_buf_free(&log);
    free(callback_id);
}

static int cs_call(const char* method, const uint8_t* request, size_t request_len,
                   cliproxy_buffer* response) {
    if (!response) return 1;
    response->ptr = NULL;
    response->len = 0;
    if (!method) method = "";
    const char* req = request ? (const char*)request : "";
    size_t len = request ? request_len : 0;
    cpx_buf out = {0};
    if (strcmp(method, "plugin.register") == 0 || strcmp(method, "plugin.reconfigure") == 0) {
        cpx_buf_puts(&out,
                     "{\"ok\":true,\"result\":{\"schema_version\":1,\"metadata\":{"
                     "\"Name\":\"checkstream\",\"Version\":\"1.0.0\",\"Author\":\"tests\","
                     "\"GitHubRepository\":\"https://github.com/cliproxy-host/cliproxy-host\"},"
                     "\"capabilities\":{\"executor\":true" CS_FORMATS "}}}");
    } else if (strcmp(method, "plugin.shutdown") == 0) {
        cpx_buf_puts(&out, "{\"ok\":true,\"result\":{}}");
    } else if (strcmp(method, "executor.identifier") == 0) {
        cpx_buf_puts(&out, "{\"ok\":true,\"result\":{\"identifier\":\"checkstream\"}}");
    } else if (strcmp(method, "executor.execute") == 0) {
        cs_log(req, len);
        cpx_buf_puts(&out, "{\"ok\":true,\"result\":{\"Payload\":\"YzA=\"}}");
    } else if (strcmp(method, "executor.execute_stream") == 0) {
        cs_execute_stream(req, len, &out);
    } else if (strcmp(method, "executor.count_tokens") == 0) {
        cpx_buf_puts(&out, "{\"ok\":true,\"result\":{\"Payload\":\"e30=\"}}");
    } else if (strcmp(method, "executor.http_request") == 0) {
        cs_log(req, len);
        cpx_buf_puts(&out, "{\"ok\":true,\"result\":{\"StatusCode\":200,\"Body\":\"\"}}");
    } else {
        cpx_unknown_method(&out, method);
    }
    return cpx_respond(&out, response, 0);
}

static void cs_free_buffer(void* ptr, size_t len) {
    (void)len;
    free(ptr);
}

/* Waits (bounded, 5 s) for the streaming threads: the library must outlive them. */
static void cs_shutdown(void) {
    struct timespec ts = {0, 10 * 1000 * 1000};
    for (int i = 0; i < 500 && atomic_load(&g_running) > 0; i++) nanosleep(&ts, NULL);
}

CLIPROXY_EXPORT int cliproxy_plugin_init(const cliproxy_host_api* host,
                                         cliproxy_plugin_api* plugin) {
    if (!plugin) return 1;
    atomic_store(&g_host, host);
    plugin->abi_version = CLIPROXY_ABI_VERSION;
    plugin->call = cs_call;
    plugin->free_buffer = cs_free_buffer;
    plugin->shutdown = cs_shutdown;
    return 0;
}
