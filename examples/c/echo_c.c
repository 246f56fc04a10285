/*
 * echo-c: a model executor that speaks OpenAI chat completions, for the README's quick
 * start. It offers the model "echo-1" (model.static) and answers any request with a
 * chat completion that says what it got; streamed, the same text comes as
 * chat.completion.chunk events, one word each. No upstream: it is the smallest executor
 * an unmodified OpenAI client can talk to.
 *
 *   plugins:
 *     configs:
 *       echo-c:
 *         enabled: true
 */
#include <stdio.h>

#include "cliproxy_plugin.h"
#include "cliproxy_example.h"

static const char* const WORDS[] = {"echo-c ", "got ", "your ", "request"};
enum { N_WORDS = sizeof WORDS / sizeof WORDS[0] };

static void put_head(cpx_buf* b, const char* object, const char* model, size_t model_len) {
    cpx_buf_printf(b, "{\"id\":\"chatcmpl-echo-c\",\"object\":\"%s\",\"created\":0,\"model\":",
                   object);
    cpx_buf_json_string(b, model, model_len);
}

static void execute(const char* req, size_t len, int stream, cpx_buf* out) {
    size_t model_len = 0;
    char* model = cpx_json_get_string(req, len, "Model", &model_len);
    const char* m = model ? model : "";
    cpx_ok_begin(out);
    if (!stream) {
        cpx_buf body = {0};
        put_head(&body, "chat.completion", m, model_len);
        cpx_buf_puts(&body, ",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
                            "\"content\":\"");
        for (int i = 0; i < N_WORDS; i++) cpx_buf_puts(&body, WORDS[i]);
        cpx_buf_puts(&body, "\"},\"finish_reason\":\"stop\"}]}");
        cpx_buf_puts(out, "{\"Payload\":\"");
        cpx_buf_base64(out, (const uint8_t*)body.data, body.len);
        cpx_buf_puts(out, "\"}");
        if (body.failed) out->failed = 1;
        cpx_buf_free(&body);
    } else {
        /* A small answer: every chunk in the answer itself (no host.stream.emit needed). */
        cpx_buf_puts(out, "{\"headers\":{},\"chunks\":[");
        for (int i = 0; i <= N_WORDS; i++) {
            cpx_buf chunk = {0};
            put_head(&chunk, "chat.completion.chunk", m, model_len);
            if (i < N_WORDS) {
                cpx_buf_printf(&chunk, ",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"%s\"},"
                                       "\"finish_reason\":null}]}", WORDS[i]);
            } else {
                cpx_buf_puts(&chunk, ",\"choices\":[{\"index\":0,\"delta\":{},"
                                     "\"finish_reason\":\"stop\"}]}");
            }
            cpx_buf_puts(out, i ? ",{\"Payload\":\"" : "{\"Payload\":\"");
            cpx_buf_base64(out, (const uint8_t*)chunk.data, chunk.len);
            cpx_buf_puts(out, "\"}");
            if (chunk.failed) out->failed = 1;
            cpx_buf_free(&chunk);
        }
        cpx_buf_puts(out, "]}");
    }
    cpx_ok_end(out);
    free(model);
}

static int echo_call(const char* method, const uint8_t* request, size_t request_len,
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
                     "{\"ok\":true,\"result\":{\"schema_version\":1,"
                     "\"metadata\":{\"Name\":\"echo-c\",\"Version\":\"1.0.0\","
                     "\"Author\":\"cliproxy-host\","
                     "\"GitHubRepository\":\"https://github.com/cliproxy-host/cliproxy-host\","
                     "\"Logo\":\"\"},"
                     "\"capabilities\":{\"executor\":true,\"model_provider\":true,"
                     "\"executor_input_formats\":[\"openai\"],"
                     "\"executor_output_formats\":[\"openai\"]}}}");
    } else if (strcmp(method, "plugin.shutdown") == 0) {
        cpx_buf_puts(&out, "{\"ok\":true,\"result\":{}}");
    } else if (strcmp(method, "model.static") == 0) {
        cpx_buf_puts(&out, "{\"ok\":true,\"result\":{\"provider\":\"echo-c\","
                           "\"models\":[{\"id\":\"echo-1\"}]}}");
    } else if (strcmp(method, "executor.execute") == 0) {
        execute(req, len, 0, &out);
    } else if (strcmp(method, "executor.execute_stream") == 0) {
        execute(req, len, 1, &out);
    } else {
        cpx_unknown_method(&out, method);
    }
    return cpx_respond(&out, response, 0);
}

static void echo_free_buffer(void* ptr, size_t len) {
    (void)len;
    free(ptr);
}

CLIPROXY_EXPORT int cliproxy_plugin_init(const cliproxy_host_api* host,
                                         cliproxy_plugin_api* plugin) {
    (void)host;
    if (!plugin) return 1;
    plugin->abi_version = CLIPROXY_ABI_VERSION;
    plugin->call = echo_call;
    plugin->free_buffer = echo_free_buffer;
    plugin->shutdown = NULL; /* optional: echo-c holds nothing to release */
    return 0;
}
