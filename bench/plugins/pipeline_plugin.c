/*
 * pipeline_plugin: a pass-through stage for the pipeline benchmark (figure 7).
 *
 *   -DBP_INTERCEPTOR   a request interceptor: request.intercept_before/after answer {}
 *                      (an empty answer leaves the request as it was)
 *   otherwise          an executor (openai in and out): executor.execute answers
 *                      {"Payload": <the request's Payload, copied as it came>}
 *
 * Responses are malloc'd; free_buffer is free().
 */
#define _POSIX_C_SOURCE 200809L

#include <stdlib.h>
#include <string.h>

#include "cliproxy_plugin.h"
#include "cliproxy_example.h"

#ifdef BP_INTERCEPTOR
#define BP_CAPS "{\"request_interceptor\":true}"
#else
#define BP_CAPS                                                                  \
    "{\"executor\":true,\"executor_input_formats\":[\"openai\"],"                \
    "\"executor_output_formats\":[\"openai\"]}"
#endif

static int bp_call(const char* method, const uint8_t* request, size_t len,
                   cliproxy_buffer* response) {
    const char* req = (const char*)request;
    cpx_buf out = {0};
    if (strcmp(method, "plugin.register") == 0 || strcmp(method, "plugin.reconfigure") == 0) {
        cpx_ok_begin(&out);
        cpx_buf_puts(&out, "{\"schema_version\":3,\"metadata\":{\"Name\":\"bench-pipeline\","
                           "\"Version\":\"1.0.0\",\"Author\":\"bench\","
                           "\"GitHubRepository\":\"https://example.invalid/bench\"},"
                           "\"capabilities\":" BP_CAPS "}");
        cpx_ok_end(&out);
    } else if (strcmp(method, "plugin.shutdown") == 0 ||
               strcmp(method, "request.intercept_before") == 0 ||
               strcmp(method, "request.intercept_after") == 0) {
        cpx_buf_puts(&out, "{\"ok\":true,\"result\":{}}");
    } else if (strcmp(method, "executor.execute") == 0) {
        cpx_span payload = {0};
        cpx_ok_begin(&out);
        cpx_buf_puts(&out, "{\"Payload\":");
        if (cpx_json_find(req, len, "Payload", &payload) == 1) {
            cpx_buf_append(&out, payload.ptr, payload.len);
        } else {
            cpx_buf_puts(&out, "\"\"");
        }
        cpx_buf_puts(&out, "}");
        cpx_ok_end(&out);
    } else {
        cpx_unknown_method(&out, method);
    }
    return cpx_respond(&out, response, 0);
}

static void bp_free(void* ptr, size_t len) {
    (void)len;
    free(ptr);
}

CLIPROXY_EXPORT int cliproxy_plugin_init(const cliproxy_host_api* host,
                                         cliproxy_plugin_api* plugin) {
    (void)host;
    if (!plugin) return 1;
    plugin->abi_version = CLIPROXY_ABI_VERSION;
    plugin->call = bp_call;
    plugin->free_buffer = bp_free;
    plugin->shutdown = NULL;
    return 0;
}
