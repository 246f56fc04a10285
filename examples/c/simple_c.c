/*
 * simple-c: the smallest useful plugin. An executor, a request translator and
 * a management page, all driven by one config value:
 *
 *   plugins:
 *     configs:
 *       simple-c:
 *         enabled: true
 *         mode: fast        # safe (default) or fast
 *
 * It never calls the host and sets no shutdown function: both are optional.
 */
#include <stdatomic.h>

#include "cliproxy_plugin.h"
#include "cliproxy_example.h"

enum { MODE_SAFE, MODE_FAST };
static const char* const MODE_NAMES[] = {"safe", "fast"};

/* Written by register/reconfigure while other threads execute: an atomic int
 * is all the shared state this plugin needs. */
static atomic_int g_mode = MODE_SAFE;

/* Kept as the ABI asks (it stays valid until shutdown); simple-c has no use for it. */
static const cliproxy_host_api* _Atomic g_host;

static const char* mode_name(void) { return MODE_NAMES[atomic_load(&g_mode) == MODE_FAST]; }

/* ---- lifecycle ------------------------------------------------------- */

static void plugin_register(const char* req, size_t len, cpx_buf* out) {
    size_t b64_len = 0, yaml_len = 0;
    char* b64 = cpx_json_get_string(req, len, "config_yaml", &b64_len);
    uint8_t* yaml = b64 ? cpx_base64_decode(b64, b64_len, &yaml_len) : NULL;
    free(b64);
    if (b64 && !yaml) {
        cpx_error(out, "invalid_config", "simple-c: config_yaml is not valid base64");
        return;
    }
    char* mode = cpx_yaml_scalar((const char*)yaml, yaml_len, "mode");
    /* Anything but "fast" (absent, misspelt) falls back to the safe default
     * rather than refusing to load. */
    atomic_store(&g_mode, mode && strcmp(mode, "fast") == 0 ? MODE_FAST : MODE_SAFE);
    free(mode);
    free(yaml);

    cpx_ok_begin(out);
    cpx_buf_puts(out,
                 "{\"schema_version\":1,"
                 "\"metadata\":{\"Name\":\"simple-c\",\"Version\":\"1.0.0\","
                 "\"Author\":\"cliproxy-host\","
                 "\"GitHubRepository\":\"https://github.com/cliproxy-host/cliproxy-host\","
                 "\"Logo\":\"\","
                 "\"ConfigFields\":[{\"Name\":\"mode\",\"Type\":\"enum\","
                 "\"EnumValues\":[\"safe\",\"fast\"],"
                 "\"Description\":\"safe passes translated bodies through unchanged; "
                 "fast minifies them\"}]},"
                 "\"capabilities\":{\"executor\":true,\"executor_model_scope\":\"both\","
                 "\"executor_input_formats\":[\"chat-completions\"],"
                 "\"executor_output_formats\":[\"chat-completions\"],"
                 "\"request_translator\":true,\"management_api\":true}}");
    cpx_ok_end(out);
}

/* ---- executor -------------------------------------------------------- */

/* Decodes the base64 field `key`; a missing or null field is an empty payload. */
static int decode_field(const char* req, size_t len, const char* key, uint8_t** data,
                        size_t* n, cpx_buf* out) {
    cpx_span v;
    *data = NULL;
    *n = 0;
    int found = cpx_json_find(req, len, key, &v);
    if (found < 0) {
        cpx_error(out, "invalid_request", "simple-c: the request is not a JSON object");
        return 0;
    }
    if (found == 0 || cpx_span_is(v, "null")) return 1;
    size_t b64_len = 0;
    char* b64 = cpx_span_string(v, &b64_len);
    *data = b64 ? cpx_base64_decode(b64, b64_len, n) : NULL;
    free(b64);
    if (!*data) {
        cpx_buf msg = {0};
        cpx_buf_printf(&msg, "simple-c: %s is not a base64 string", key);
        cpx_error(out, "invalid_request", msg.failed ? "simple-c: bad base64 field" : msg.data);
        cpx_buf_free(&msg);
        return 0;
    }
    return 1;
}

static void executor_execute(const char* req, size_t len, cpx_buf* out) {
    uint8_t* payload;
    size_t payload_len;
    if (!decode_field(req, len, "Payload", &payload, &payload_len, out)) return;
    free(payload);
    size_t model_len = 0;
    char* model = cpx_json_get_string(req, len, "Model", &model_len);

    cpx_buf inner = {0};
    cpx_buf_printf(&inner, "{\"plugin\":\"simple-c\",\"mode\":\"%s\",\"model\":", mode_name());
    cpx_buf_json_string(&inner, model ? model : "", model ? model_len : 0);
    cpx_buf_printf(&inner, ",\"payload_bytes\":%zu}", payload_len);
    free(model);
    if (inner.failed) {
        out->failed = 1;
        return;
    }
    cpx_ok_begin(out);
    cpx_buf_puts(out, "{\"Payload\":\"");
    cpx_buf_base64(out, (const uint8_t*)inner.data, inner.len);
    cpx_buf_puts(out, "\",\"Headers\":{\"X-Plugin\":[\"simple-c\"]}}");
    cpx_ok_end(out);
    cpx_buf_free(&inner);
}

static void executor_execute_stream(cpx_buf* out) {
    cpx_ok_begin(out);
    cpx_buf_puts(out, "{\"headers\":{\"X-Plugin\":[\"simple-c\"]},\"chunks\":[");
    for (int i = 1; i <= 2; i++) {
        char chunk[32];
        int n = snprintf(chunk, sizeof chunk, "chunk %d (%s)", i, mode_name());
        cpx_buf_puts(out, i > 1 ? ",{\"Payload\":\"" : "{\"Payload\":\"");
        cpx_buf_base64(out, (const uint8_t*)chunk, (size_t)n);
        cpx_buf_puts(out, "\"}");
    }
    cpx_buf_puts(out, "]}");
    cpx_ok_end(out);
}

static void executor_count_tokens(const char* req, size_t len, cpx_buf* out) {
    uint8_t* payload;
    size_t payload_len;
    if (!decode_field(req, len, "Payload", &payload, &payload_len, out)) return;
    free(payload);
    /* A rough stand-in for a tokenizer: about four bytes per token. */
    char inner[64];
    int n = snprintf(inner, sizeof inner, "{\"tokens\":%zu}", (payload_len + 3) / 4);
    cpx_ok_begin(out);
    cpx_buf_puts(out, "{\"Payload\":\"");
    cpx_buf_base64(out, (const uint8_t*)inner, (size_t)n);
    cpx_buf_puts(out, "\"}");
    cpx_ok_end(out);
}

/* ---- request translator ---------------------------------------------- */

/* Drops ASCII whitespace outside JSON strings, in place; returns the new length.
 * Works on any bytes: text that is not JSON is only stripped of whitespace. */
static size_t minify_json(uint8_t* s, size_t n) {
    size_t o = 0;
    int in_string = 0, escaped = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = s[i];
        if (in_string) {
            if (escaped) escaped = 0;
            else if (c == '\\') escaped = 1;
            else if (c == '"') in_string = 0;
        } else if (c == '"') {
            in_string = 1;
        } else if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
            continue;
        }
        s[o++] = c;
    }
    return o;
}

static void request_translate(const char* req, size_t len, cpx_buf* out) {
    if (atomic_load(&g_mode) != MODE_FAST) {
        /* safe: hand the body back exactly as it came, without decoding it */
        cpx_span body;
        int found = cpx_json_find(req, len, "Body", &body);
        if (found < 0) {
            cpx_error(out, "invalid_request", "simple-c: the request is not a JSON object");
            return;
        }
        cpx_ok_begin(out);
        cpx_buf_puts(out, "{\"Body\":");
        if (found && cpx_span_is_string(body)) cpx_buf_append(out, body.ptr, body.len);
        else cpx_buf_puts(out, "\"\"");
        cpx_buf_puts(out, "}");
        cpx_ok_end(out);
        return;
    }
    uint8_t* body;
    size_t body_len;
    if (!decode_field(req, len, "Body", &body, &body_len, out)) return;
    body_len = body ? minify_json(body, body_len) : 0;
    cpx_ok_begin(out);
    cpx_buf_puts(out, "{\"Body\":\"");
    cpx_buf_base64(out, body, body_len);
    cpx_buf_puts(out, "\"}");
    cpx_ok_end(out);
    free(body);
}

/* ---- management API -------------------------------------------------- */

static void management_register(cpx_buf* out) {
    cpx_ok_begin(out);
    cpx_buf_puts(out,
                 "{\"Routes\":[{\"Method\":\"GET\",\"Path\":\"/simple-c/status\","
                 "\"Menu\":\"Simple C\",\"Description\":\"Shows the simple-c mode\"}],"
                 "\"Resources\":[{\"Path\":\"/index.html\",\"Menu\":\"Simple C\","
                 "\"Description\":\"simple-c status page\"}]}");
    cpx_ok_end(out);
}

static void management_handle(const char* req, size_t len, cpx_buf* out) {
    size_t path_len = 0;
    char* path = cpx_json_get_string(req, len, "Path", &path_len);
    static const char page_suffix[] = "index.html";
    size_t sl = sizeof page_suffix - 1;
    int page = path && path_len >= sl && memcmp(path + path_len - sl, page_suffix, sl) == 0;

    cpx_buf body = {0};
    const char* type;
    if (page) {
        type = "text/html; charset=utf-8";
        cpx_buf_printf(&body,
                       "<!doctype html>\n<html><head><meta charset=\"utf-8\">"
                       "<title>simple-c</title></head>\n<body><h1>simple-c</h1>"
                       "<p>mode: <strong>%s</strong></p></body></html>\n",
                       mode_name());
    } else {
        type = "application/json";
        cpx_buf_printf(&body, "{\"plugin\":\"simple-c\",\"mode\":\"%s\",\"path\":", mode_name());
        cpx_buf_json_string(&body, path ? path : "", path ? path_len : 0);
        cpx_buf_puts(&body, "}");
    }
    free(path);
    if (body.failed) {
        out->failed = 1;
        return;
    }
    cpx_ok_begin(out);
    cpx_buf_printf(out, "{\"StatusCode\":200,\"Headers\":{\"Content-Type\":[\"%s\"]},\"Body\":\"",
                   type);
    cpx_buf_base64(out, (const uint8_t*)body.data, body.len);
    cpx_buf_puts(out, "\"}");
    cpx_ok_end(out);
    cpx_buf_free(&body);
}

/* ---- ABI ------------------------------------------------------------- */

static int simple_call(const char* method, const uint8_t* request, size_t request_len,
                       cliproxy_buffer* response) {
    if (!response) return 1;
    response->ptr = NULL;
    response->len = 0;
    if (!method) method = "";
    const char* req = (const char*)request;
    size_t len = request ? request_len : 0;
    cpx_buf out = {0};

    if (strcmp(method, "plugin.register") == 0 || strcmp(method, "plugin.reconfigure") == 0) {
        plugin_register(req, len, &out);
    } else if (strcmp(method, "plugin.shutdown") == 0) {
        cpx_buf_puts(&out, "{\"ok\":true,\"result\":{}}");
    } else if (strcmp(method, "executor.identifier") == 0) {
        cpx_buf_puts(&out, "{\"ok\":true,\"result\":{\"identifier\":\"simple-c\"}}");
    } else if (strcmp(method, "executor.execute") == 0) {
        executor_execute(req, len, &out);
    } else if (strcmp(method, "executor.execute_stream") == 0) {
        executor_execute_stream(&out);
    } else if (strcmp(method, "executor.count_tokens") == 0) {
        executor_count_tokens(req, len, &out);
    } else if (strcmp(method, "request.translate") == 0) {
        request_translate(req, len, &out);
    } else if (strcmp(method, "management.register") == 0) {
        management_register(&out);
    } else if (strcmp(method, "management.handle") == 0) {
        management_handle(req, len, &out);
    } else {
        cpx_unknown_method(&out, method);
    }
    return cpx_respond(&out, response, 0);
}

static void simple_free_buffer(void* ptr, size_t len) {
    (void)len;
    free(ptr);
}

CLIPROXY_EXPORT int cliproxy_plugin_init(const cliproxy_host_api* host,
                                         cliproxy_plugin_api* plugin) {
    if (!plugin) return 1;
    atomic_store(&g_host, host);
    atomic_store(&g_mode, MODE_SAFE);
    plugin->abi_version = CLIPROXY_ABI_VERSION;
    plugin->call = simple_call;
    plugin->free_buffer = simple_free_buffer;
    plugin->shutdown = NULL; /* optional: simple-c holds nothing to release */
    return 0;
}
