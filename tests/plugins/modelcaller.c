/*
 * modelcaller: an executor whose executor.execute runs another model through the host
 * (host.model.execute), for the host.model.* tests.
 *
 * It serves MC_MODEL (model.static). Its executor.execute calls host.model.execute with
 * {"model": MC_TARGET, "stream": false, "body": <its Payload>, "host_callback_id": <its
 * own>} and answers the inner body with "|<MC_NAME>" appended. An error answer of the
 * host is answered as it is (code and message), so a test sees the host's error.
 *
 * Knobs (-D...; string knobs are C string literals):
 *   MC_NAME="x"      the name appended (default "mc")
 *   MC_MODEL="m"     the model it serves (default "outer")
 *   MC_TARGET="m"    the model it calls (default "inner")
 *   MC_METHOD="..."  the host method it calls (default "host.model.execute")
 *   MC_REQUEST="{}"  send this request as it is instead (bad-input tests)
 *   MC_NO_ID         leave host_callback_id out of the request
 */
#define _POSIX_C_SOURCE 200809L

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cliproxy_plugin.h"
#include "cliproxy_example.h"

#ifndef MC_NAME
#define MC_NAME "mc"
#endif
#ifndef MC_MODEL
#define MC_MODEL "outer"
#endif
#ifndef MC_TARGET
#define MC_TARGET "inner"
#endif
#ifndef MC_METHOD
#define MC_METHOD "host.model.execute"
#endif

static const cliproxy_host_api* mc_host;

static int mc_is(const char* a, const char* b) { return strcmp(a, b) == 0; }

/* The host's answer to `request`, NUL-terminated and malloc'd (NULL if it answered none). */
static char* mc_host_call(const char* request, size_t len, size_t* out_len) {
    cliproxy_buffer answer = {0};
    int rc = mc_host->call(mc_host->host_ctx, MC_METHOD, (const uint8_t*)request, len, &answer);
    if (rc != 0 || !answer.ptr) return NULL;
    char* copy = malloc(answer.len + 1);
    if (copy) {
        memcpy(copy, answer.ptr, answer.len);
        copy[answer.len] = 0;
        *out_len = answer.len;
    }
    mc_host->free_buffer(answer.ptr, answer.len);
    return copy;
}

static void mc_execute(const char* req, size_t len, cpx_buf* out) {
    cpx_buf call = {0};
#ifdef MC_REQUEST
    (void)req;
    (void)len;
    cpx_buf_puts(&call, MC_REQUEST);
#else
    size_t payload_len = 0, id_len = 0;
    char* payload = cpx_json_get_string(req, len, "Payload", &payload_len);
    char* callback_id = cpx_json_get_string(req, len, "host_callback_id", &id_len);
    cpx_buf_puts(&call, "{\"model\":\"" MC_TARGET "\",\"stream\":false,"
                        "\"entry_protocol\":\"openai\",\"body\":");
    cpx_buf_json_cstring(&call, payload ? payload : "");
#ifndef MC_NO_ID
    if (callback_id) {
        cpx_buf_puts(&call, ",\"host_callback_id\":");
        cpx_buf_json_cstring(&call, callback_id);
    }
#endif
    cpx_buf_puts(&call, "}");
    free(payload);
    free(callback_id);
#endif
    size_t answer_len = 0;
    char* answer = call.failed ? NULL : mc_host_call(call.data, call.len, &answer_len);
    cpx_buf_free(&call);
    if (!answer) {
        cpx_error(out, "host_call_failed", MC_NAME ": the host answered nothing");
        return;
    }
    cpx_span result;
    if (cpx_json_find(answer, answer_len, "result", &result) != 1) {
        /* An error envelope: answer it as it is. */
        cpx_buf_append(out, answer, answer_len);
        free(answer);
        return;
    }
    size_t b64_len = 0, raw_len = 0;
    char* b64 = cpx_json_get_string(result.ptr, result.len, "body", &b64_len);
    uint8_t* raw = b64 ? cpx_base64_decode(b64, b64_len, &raw_len) : NULL;
    free(b64);
    cpx_buf body = {0};
    if (raw) cpx_buf_append(&body, raw, raw_len);
    free(raw);
    cpx_buf_puts(&body, "|" MC_NAME);
    cpx_ok_begin(out);
    cpx_buf_puts(out, "{\"Payload\":\"");
    cpx_buf_base64(out, (const uint8_t*)body.data, body.len);
    cpx_buf_puts(out, "\",\"Headers\":{\"X-Caller\":[\"" MC_NAME "\"]}}");
    cpx_ok_end(out);
    cpx_buf_free(&body);
    free(answer);
}

static int mc_call(const char* method, const uint8_t* request, size_t len,
                   cliproxy_buffer* response) {
    const char* req = (const char*)request;
    cpx_buf out = {0};
    if (mc_is(method, "plugin.register") || mc_is(method, "plugin.reconfigure")) {
        cpx_ok_begin(&out);
        cpx_buf_puts(&out, "{\"schema_version\":3,\"metadata\":{\"Name\":\"" MC_NAME "\","
                           "\"Version\":\"0.1.0\",\"Author\":\"tests\","
                           "\"GitHubRepository\":\"https://example.invalid/mc\"},"
                           "\"capabilities\":{\"executor\":true,\"model_provider\":true,"
                           "\"executor_input_formats\":[\"openai\"],"
                           "\"executor_output_formats\":[\"openai\"]}}");
        cpx_ok_end(&out);
    } else if (mc_is(method, "plugin.shutdown")) {
        cpx_ok_begin(&out);
        cpx_buf_puts(&out, "{}");
        cpx_ok_end(&out);
    } else if (mc_is(method, "model.static")) {
        cpx_ok_begin(&out);
        cpx_buf_puts(&out, "{\"Provider\":\"" MC_NAME "\",\"Models\":[{\"ID\":\"" MC_MODEL "\"}]}");
        cpx_ok_end(&out);
    } else if (mc_is(method, "model.for_auth")) {
        cpx_ok_begin(&out);
        cpx_buf_puts(&out, "{}");
        cpx_ok_end(&out);
    } else if (mc_is(method, "executor.execute")) {
        if (!mc_host || !mc_host->call) {
            cpx_error(&out, "host_call_failed", MC_NAME ": no host");
        } else {
            mc_execute(req, len, &out);
        }
    } else {
        cpx_unknown_method(&out, method);
    }
    return cpx_respond(&out, response, 0);
}

static void mc_free(void* ptr, size_t len) {
    (void)len;
    free(ptr);
}

CLIPROXY_EXPORT int cliproxy_plugin_init(const cliproxy_host_api* host, cliproxy_plugin_api* plugin) {
    if (!plugin) return 1;
    mc_host = host;
    plugin->abi_version = CLIPROXY_ABI_VERSION;
    plugin->call = mc_call;
    plugin->free_buffer = mc_free;
    plugin->shutdown = NULL;
    return 0;
}
