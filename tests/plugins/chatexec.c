/*
 * chatexec: a model executor for the /v1 model endpoint tests. It serves the models
 * "chat-c-1" and "chat-c-2" (model.static) in the formats openai, openai-response and
 * claude, answering in the request's Format:
 *
 *   executor.execute         one answer in that protocol's shape; its text is
 *                            "hello from chatexec (<model>, <n> bytes)"
 *   executor.execute_stream  no chunks in the answer, then a thread of its own emits
 *                            the protocol's stream events through host.stream.emit and
 *                            closes the stream. The client body's "max_tokens" sets the
 *                            number of text deltas (default 3); "emit_error": true ends
 *                            the stream with an error instead.
 *   stats                    {"emits_ok", "emits_failed", "running", "streams"}
 *
 * A thread stops at its first refused emit (the host closed the stream).
 */
#define _POSIX_C_SOURCE 200809L

#include "plugin_common.h"

static atomic_llong g_emits_ok, g_emits_failed, g_streams;

enum { F_OPENAI, F_RESPONSES, F_CLAUDE };

typedef struct {
    char               stream_id[32];
    char               model[128];
    int                format;
    int                emit_error;
    unsigned long long count;
} ce_job;

static int ce_format(const char* req, size_t len) {
    char* f = cpx_json_get_string(req, len, "Format", NULL);
    int out = F_OPENAI;
    if (f && strcmp(f, "openai-response") == 0) out = F_RESPONSES;
    if (f && strcmp(f, "claude") == 0) out = F_CLAUDE;
    free(f);
    return out;
}

static int ce_emit(const ce_job* job, const cpx_buf* payload, const char* error) {
    int ok = !payload->failed &&
             pc_stream_emit(job->stream_id, payload->data, payload->len, error, NULL, 0);
    atomic_fetch_add(ok ? &g_emits_ok : &g_emits_failed, 1);
    return ok;
}

/* The i-th event of the stream (i == count + 1 is the last one) in the job's protocol. */
static void ce_event(const ce_job* job, unsigned long long i, cpx_buf* p) {
    int last = i > job->count;
    if (job->format == F_OPENAI) {
        cpx_buf_puts(p, "{\"id\":\"chatcmpl-chatexec\",\"object\":\"chat.completion.chunk\","
                        "\"created\":1700000000,\"model\":");
        cpx_buf_json_cstring(p, job->model);
        if (last) {
            cpx_buf_puts(p, ",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}");
        } else {
            cpx_buf_printf(p, ",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"tok%llu \"},"
                              "\"finish_reason\":null}]}", i);
        }
    } else if (job->format == F_RESPONSES) {
        if (last) {
            cpx_buf_puts(p, "{\"type\":\"response.completed\",\"response\":{\"id\":\"resp-chatexec\","
                            "\"object\":\"response\",\"status\":\"completed\",\"model\":");
            cpx_buf_json_cstring(p, job->model);
            cpx_buf_puts(p, "}}");
        } else {
            cpx_buf_printf(p, "{\"type\":\"response.output_text.delta\",\"output_index\":0,"
                              "\"content_index\":0,\"delta\":\"tok%llu \"}", i);
        }
    } else {
        if (last) {
            cpx_buf_puts(p, "{\"type\":\"message_stop\"}");
        } else {
            cpx_buf_printf(p, "{\"type\":\"content_block_delta\",\"index\":0,"
                              "\"delta\":{\"type\":\"text_delta\",\"text\":\"tok%llu \"}}", i);
        }
    }
}

static void ce_thread(void* arg) {
    ce_job* job = (ce_job*)arg;
    for (unsigned long long i = 1; i <= job->count + 1; i++) {
        cpx_buf p = {0};
        ce_event(job, i, &p);
        int error_now = job->emit_error && i > job->count;
        int ok = ce_emit(job, &p, error_now ? "chatexec: the upstream failed (emit_error)" : NULL);
        cpx_buf_free(&p);
        if (!ok || error_now) break;
    }
    pc_stream_close(job->stream_id, NULL);
    free(job);
}

/* The client's body (Payload, base64) decoded; NULL when absent or not base64. */
static char* ce_payload(const char* req, size_t len, size_t* n) {
    size_t b64_len = 0;
    char* b64 = cpx_json_get_string(req, len, "Payload", &b64_len);
    *n = 0;
    char* body = b64 ? (char*)cpx_base64_decode(b64, b64_len, n) : NULL;
    free(b64);
    return body;
}

static void ce_execute(const char* req, size_t len, cpx_buf* out) {
    size_t body_len = 0;
    char* body = ce_payload(req, len, &body_len);
    free(body);
    char* model = cpx_json_get_string(req, len, "Model", NULL);
    int format = ce_format(req, len);
    cpx_buf text = {0};
    cpx_buf_printf(&text, "hello from chatexec (%s, %zu bytes)", model ? model : "", body_len);
    cpx_buf inner = {0};
    if (format == F_OPENAI) {
        cpx_buf_puts(&inner, "{\"id\":\"chatcmpl-chatexec\",\"object\":\"chat.completion\","
                             "\"created\":1700000000,\"model\":");
        cpx_buf_json_cstring(&inner, model ? model : "");
        cpx_buf_puts(&inner, ",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
                             "\"content\":");
        cpx_buf_json_string(&inner, text.data, text.len);
        cpx_buf_puts(&inner, "},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":1,"
                             "\"completion_tokens\":1,\"total_tokens\":2}}");
    } else if (format == F_RESPONSES) {
        cpx_buf_puts(&inner, "{\"id\":\"resp-chatexec\",\"object\":\"response\","
                             "\"status\":\"completed\",\"model\":");
        cpx_buf_json_cstring(&inner, model ? model : "");
        cpx_buf_puts(&inner, ",\"output\":[{\"type\":\"message\",\"role\":\"assistant\","
                             "\"content\":[{\"type\":\"output_text\",\"text\":");
        cpx_buf_json_string(&inner, text.data, text.len);
        cpx_buf_puts(&inner, "}]}]}");
    } else {
        cpx_buf_puts(&inner, "{\"id\":\"msg-chatexec\",\"type\":\"message\",\"role\":\"assistant\","
                             "\"model\":");
        cpx_buf_json_cstring(&inner, model ? model : "");
        cpx_buf_puts(&inner, ",\"content\":[{\"type\":\"text\",\"text\":");
        cpx_buf_json_string(&inner, text.data, text.len);
        cpx_buf_puts(&inner, "}],\"stop_reason\":\"end_turn\"}");
    }
    free(model);
    cpx_buf_free(&text);
    if (inner.failed) {
        out->failed = 1;
        return;
    }
    cpx_ok_begin(out);
    cpx_buf_puts(out, "{\"Payload\":\"");
    cpx_buf_base64(out, (const uint8_t*)inner.data, inner.len);
    cpx_buf_puts(out, "\",\"Headers\":{\"X-Plugin\":[\"chatexec\"]}}");
    cpx_ok_end(out);
    cpx_buf_free(&inner);
}

static void ce_execute_stream(const char* req, size_t len, cpx_buf* out) {
    ce_job* job = (ce_job*)calloc(1, sizeof *job);
    if (!job) {
        out->failed = 1;
        return;
    }
    char* stream_id = cpx_json_get_string(req, len, "stream_id", NULL);
    char* model = cpx_json_get_string(req, len, "Model", NULL);
    snprintf(job->stream_id, sizeof job->stream_id, "%s", stream_id ? stream_id : "");
    snprintf(job->model, sizeof job->model, "%s", model ? model : "");
    free(stream_id);
    free(model);
    job->format = ce_format(req, len);
    size_t body_len = 0;
    char* body = ce_payload(req, len, &body_len);
    job->count = body ? cpx_json_get_uint(body, body_len, "max_tokens", 3) : 3;
    job->emit_error = body && strstr(body, "\"emit_error\":true") != NULL;
    free(body);
    atomic_fetch_add(&g_streams, 1);
    if (!pc_spawn(ce_thread, job)) {
        free(job);
        cpx_error(out, "internal", "chatexec: cannot start a thread");
        return;
    }
    pc_ok(out, "{\"headers\":{\"X-Plugin\":[\"chatexec\"]}}");
}

static int ce_methods(const char* method, const char* req, size_t len, cpx_buf* out) {
    if (strcmp(method, "model.static") == 0) {
        pc_ok(out, "{\"provider\":\"chatexec\",\"models\":["
                   "{\"id\":\"chat-c-1\",\"owned_by\":\"chatexec\"},{\"id\":\"chat-c-2\"}]}");
    } else if (strcmp(method, "executor.execute") == 0) {
        ce_execute(req, len, out);
    } else if (strcmp(method, "executor.execute_stream") == 0) {
        ce_execute_stream(req, len, out);
    } else if (strcmp(method, "stats") == 0) {
        cpx_ok_begin(out);
        cpx_buf_printf(out, "{\"emits_ok\":%lld,\"emits_failed\":%lld,\"running\":%lld,\"streams\":%lld}",
                       (long long)atomic_load(&g_emits_ok), (long long)atomic_load(&g_emits_failed),
                       (long long)atomic_load(&pc_running), (long long)atomic_load(&g_streams));
        cpx_ok_end(out);
    } else {
        return 0;
    }
    return 1;
}

PC_PLUGIN("{\"schema_version\":1,"
          "\"metadata\":{\"Name\":\"chatexec\",\"Version\":\"1.0.0\",\"Author\":\"tests\","
          "\"GitHubRepository\":\"https://github.com/cliproxy-host/cliproxy-host\",\"Logo\":\"\"},"
          "\"capabilities\":{\"executor\":true,\"model_provider\":true,"
          "\"executor_input_formats\":[\"openai\",\"openai-response\",\"claude\"],"
          "\"executor_output_formats\":[\"openai\",\"openai-response\",\"claude\"]}}",
          ce_methods, pc_wait_threads)

