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

#include "plugin_common.h"

#ifdef CS_NO_FORMATS
#define CS_FORMATS ""
#else
#define CS_FORMATS ",\"executor_input_formats\":[\"openai\"],\"executor_output_formats\":[\"openai\"]"
#endif

static void cs_emit(const char* stream_id, const char* text) {
#ifdef CS_BAD_BASE64
    cpx_buf req = {0};
    cpx_buf_puts(&req, "{\"stream_id\":");
    cpx_buf_json_cstring(&req, stream_id);
    cpx_buf_puts(&req, ",\"payload\":\"%%not base64%%\"}");
    pc_host_buf("host.stream.emit", &req, NULL, 0);
    cpx_buf_free(&req);
    (void)text;
#else
    pc_stream_emit(stream_id, text, strlen(text), NULL, NULL, 0);
#endif
}

static void cs_stream(void* arg) {
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
    pc_stream_close(stream_id, NULL);
#endif
#ifdef CS_EMIT_AFTER_CLOSE
    cs_emit(target, "late");
#endif
    free(stream_id);
}

static void cs_execute_stream(const char* req, size_t len, cpx_buf* out) {
    char* stream_id = cpx_json_get_string(req, len, "stream_id", NULL);
    if (!stream_id) {
        cpx_error(out, "invalid_request", "checkstream: stream_id is missing");
        return;
    }
    if (!pc_spawn(cs_stream, stream_id)) {
        free(stream_id);
        cpx_error(out, "internal", "checkstream: no thread");
    } else {
        pc_ok(out, "{\"headers\":{},\"chunks\":[]}");
    }
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
    pc_host_buf("host.log", &log, NULL, 0);
    cpx_buf_free(&log);
    free(callback_id);
}

static int cs_methods(const char* method, const char* req, size_t len, cpx_buf* out) {
    if (strcmp(method, "executor.identifier") == 0) {
        pc_ok(out, "{\"identifier\":\"checkstream\"}");
    } else if (strcmp(method, "executor.execute") == 0) {
        cs_log(req, len);
        pc_ok(out, "{\"Payload\":\"YzA=\"}");
    } else if (strcmp(method, "executor.execute_stream") == 0) {
        cs_execute_stream(req, len, out);
    } else if (strcmp(method, "executor.count_tokens") == 0) {
        pc_ok(out, "{\"Payload\":\"e30=\"}");
    } else if (strcmp(method, "executor.http_request") == 0) {
        cs_log(req, len);
        pc_ok(out, "{\"StatusCode\":200,\"Body\":\"\"}");
    } else {
        return 0;
    }
    return 1;
}

PC_PLUGIN("{\"schema_version\":1,\"metadata\":{"
          "\"Name\":\"checkstream\",\"Version\":\"1.0.0\",\"Author\":\"tests\","
          "\"GitHubRepository\":\"https://github.com/cliproxy-host/cliproxy-host\"},"
          "\"capabilities\":{\"executor\":true" CS_FORMATS "}}",
          cs_methods, pc_wait_threads)
