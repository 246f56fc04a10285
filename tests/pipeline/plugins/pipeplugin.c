/*
 * pipeplugin: a stage of the model pipeline for the tests, built with knobs.
 *
 * Every chained stage (interceptors, normalizers, translators, stream-chunk
 * interceptors) answers its input Body with "|<name>:<method>" appended, and the
 * executor does the same to its Payload, so a test reads the order of the stages
 * off the final body.
 *
 * Knobs (-D...; string knobs are C string literals):
 *   PP_NAME="x"        the name appended (default "pp")
 *   PP_CAPS="..."      the inside of the registration's capabilities object
 *   PP_SCHEMA=N        the registration's schema_version (default 3)
 *   PP_LOG="path"      append {"plugin","method","request"} as one line per call
 *   PP_FAIL="method"   answer that method with an error envelope
 *   PP_TERMINATE="method"  an interceptor answering Terminate with status 429
 *   PP_DROP_INDEX=N    the stream-chunk interceptor drops chunk N
 *   PP_MODELS="json"   the result of model.static and model.register
 *   PP_FOR_AUTH="json" the result of model.for_auth
 *   PP_ROUTE="json"    the result of model.route (default: not handled)
 *   PP_CHUNKS=N        executor.execute_stream answers N chunks (default 3)
 */
#define _POSIX_C_SOURCE 200809L

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cliproxy_plugin.h"
#include "cliproxy_example.h"

#ifndef PP_NAME
#define PP_NAME "pp"
#endif
#ifndef PP_CAPS
#define PP_CAPS "\"executor\":true"
#endif
#ifndef PP_SCHEMA
#define PP_SCHEMA 3
#endif
#ifndef PP_CHUNKS
#define PP_CHUNKS 3
#endif

static void pp_log(const char* method, const char* req, size_t len) {
#ifdef PP_LOG
    cpx_buf line = {0};
    cpx_buf_puts(&line, "{\"plugin\":");
    cpx_buf_json_cstring(&line, PP_NAME);
    cpx_buf_puts(&line, ",\"method\":");
    cpx_buf_json_cstring(&line, method);
    cpx_buf_puts(&line, ",\"request\":");
    cpx_buf_append(&line, len ? req : "{}", len ? len : 2);
    cpx_buf_puts(&line, "}\n");
    if (!line.failed) {
        /* One write() on an O_APPEND fd per line: lines of parallel calls never mix. */
        int fd = open(PP_LOG, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd >= 0) {
            ssize_t written = write(fd, line.data, line.len);
            (void)written;
            close(fd);
        }
    }
    cpx_buf_free(&line);
#else
    (void)method;
    (void)req;
    (void)len;
#endif
}

/* {"<key>":"<base64 of field + |name:method + suffix>"} plus `extra` inside the object. */
static void pp_append(const char* req, size_t len, const char* field, const char* key,
                      const char* method, const char* suffix, const char* extra, cpx_buf* out) {
    size_t b64_len = 0;
    char* b64 = cpx_json_get_string(req, len, field, &b64_len);
    size_t raw_len = 0;
    uint8_t* raw = b64 ? cpx_base64_decode(b64, b64_len, &raw_len) : NULL;
    free(b64);
    cpx_buf body = {0};
    if (raw) cpx_buf_append(&body, raw, raw_len);
    free(raw);
    cpx_buf_printf(&body, "|%s:%s%s", PP_NAME, method, suffix);
    cpx_ok_begin(out);
    cpx_buf_printf(out, "{\"%s\":\"", key);
    cpx_buf_base64(out, (const uint8_t*)body.data, body.len);
    cpx_buf_puts(out, "\"");
    cpx_buf_puts(out, extra);
    cpx_buf_puts(out, "}");
    cpx_ok_end(out);
    cpx_buf_free(&body);
}

static void pp_result(const char* json, cpx_buf* out) {
    cpx_ok_begin(out);
    cpx_buf_puts(out, json);
    cpx_ok_end(out);
}

static void pp_stream(const char* req, size_t len, cpx_buf* out) {
    size_t b64_len = 0;
    char* b64 = cpx_json_get_string(req, len, "Payload", &b64_len);
    size_t raw_len = 0;
    uint8_t* raw = b64 ? cpx_base64_decode(b64, b64_len, &raw_len) : NULL;
    free(b64);
    cpx_ok_begin(out);
    cpx_buf_printf(out, "{\"headers\":{\"X-Executor\":[\"%s\"]},\"chunks\":[", PP_NAME);
    for (int i = 0; i < PP_CHUNKS; i++) {
        cpx_buf chunk = {0};
        if (i == 0 && raw) cpx_buf_append(&chunk, raw, raw_len);
        cpx_buf_printf(&chunk, "|%s:c%d", PP_NAME, i);
        cpx_buf_puts(out, i ? ",{\"Payload\":\"" : "{\"Payload\":\"");
        cpx_buf_base64(out, (const uint8_t*)chunk.data, chunk.len);
        cpx_buf_puts(out, "\"}");
        cpx_buf_free(&chunk);
    }
    cpx_buf_puts(out, "]}");
    cpx_ok_end(out);
    free(raw);
}

static int pp_is(const char* a, const char* b) { return strcmp(a, b) == 0; }

static int pp_call(const char* method, const uint8_t* request, size_t len,
                   cliproxy_buffer* response) {
    const char* req = (const char*)request;
    cpx_buf out = {0};
    pp_log(method, req, len);
#ifdef PP_FAIL
    if (pp_is(method, PP_FAIL)) {
        cpx_error(&out, "stage_broke", PP_NAME " failed on purpose");
        return cpx_respond(&out, response, 0);
    }
#endif
#ifdef PP_TERMINATE
    if (pp_is(method, PP_TERMINATE)) {
        pp_result("{\"Terminate\":true,\"StatusCode\":429,\"ResponseBody\":\"Z28gYXdheQ==\"}", &out);
        return cpx_respond(&out, response, 0);
    }
#endif
    if (pp_is(method, "plugin.register") || pp_is(method, "plugin.reconfigure")) {
        cpx_ok_begin(&out);
        cpx_buf_printf(&out, "{\"schema_version\":%d,\"metadata\":{\"Name\":\"%s\","
                       "\"Version\":\"0.1.0\",\"Author\":\"tests\","
                       "\"GitHubRepository\":\"https://example.invalid/pp\"},"
                       "\"capabilities\":{%s}}", PP_SCHEMA, PP_NAME, PP_CAPS);
        cpx_ok_end(&out);
    } else if (pp_is(method, "plugin.shutdown") || pp_is(method, "usage.handle") ||
               pp_is(method, "request.complete")) {
        pp_result("{}", &out);
    } else if (pp_is(method, "executor.identifier")) {
        pp_result("{\"identifier\":\"" PP_NAME "\"}", &out);
    } else if (pp_is(method, "executor.execute")) {
        pp_append(req, len, "Payload", "Payload", method, "", ",\"Headers\":{\"X-Executor\":[\"" PP_NAME "\"]}", &out);
    } else if (pp_is(method, "executor.execute_stream")) {
        pp_stream(req, len, &out);
    } else if (pp_is(method, "model.static") || pp_is(method, "model.register")) {
#ifdef PP_MODELS
        pp_result(PP_MODELS, &out);
#else
        pp_result("{}", &out);
#endif
    } else if (pp_is(method, "model.for_auth")) {
#ifdef PP_FOR_AUTH
        pp_result(PP_FOR_AUTH, &out);
#else
        pp_result("{}", &out);
#endif
    } else if (pp_is(method, "model.route")) {
#ifdef PP_ROUTE
        pp_result(PP_ROUTE, &out);
#else
        pp_result("{\"Handled\":false}", &out);
#endif
    } else if (pp_is(method, "response.intercept_stream_chunk")) {
        long long index = -1;
        cpx_span v;
        if (cpx_json_find(req, len, "ChunkIndex", &v) == 1) index = strtoll(v.ptr, NULL, 10);
        if (index < 0) {
            pp_result("{\"Headers\":{\"X-Chunk-Init\":[\"" PP_NAME "\"]}}", &out);
        }
#ifdef PP_DROP_INDEX
        else if (index == PP_DROP_INDEX) {
            pp_result("{\"DropChunk\":true}", &out);
        }
#endif
        else {
            pp_append(req, len, "Body", "Body", "chunk", "", "", &out);
        }
    } else if (pp_is(method, "request.intercept_before") || pp_is(method, "request.intercept_after") ||
               pp_is(method, "request.normalize") || pp_is(method, "request.translate") ||
               pp_is(method, "response.normalize_before") || pp_is(method, "response.translate") ||
               pp_is(method, "response.normalize_after") || pp_is(method, "response.intercept_after")) {
        pp_append(req, len, "Body", "Body", method, "", "", &out);
    } else {
        cpx_unknown_method(&out, method);
    }
    return cpx_respond(&out, response, 0);
}

static void pp_free(void* ptr, size_t len) {
    (void)len;
    free(ptr);
}

CLIPROXY_EXPORT int cliproxy_plugin_init(const cliproxy_host_api* host, cliproxy_plugin_api* plugin) {
    (void)host;
    if (!plugin) return 1;
    plugin->abi_version = CLIPROXY_ABI_VERSION;
    plugin->call = pp_call;
    plugin->free_buffer = pp_free;
    plugin->shutdown = NULL;
    return 0;
}
