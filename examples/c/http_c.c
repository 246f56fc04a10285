/*
 * http-c: an executor that forwards the payload upstream through the host.
 *
 *   plugins:
 *     configs:
 *       http-c:
 *         enabled: true
 *         base_url: "https://upstream.example/v1/chat/completions"
 *
 * The plugin never opens a socket: it asks the host (host.http.do), so the
 * host's proxy, timeouts, allow-list and request log apply. It also shows
 * host.log, re-entrant host calls and a shutdown function.
 */
#include <pthread.h>
#include <stdatomic.h>

#include "cliproxy_plugin.h"
#include "cliproxy_example.h"

/* base_url is replaced by reconfigure while executes run: guard it with a
 * mutex and let readers take a private copy. */
static pthread_mutex_t g_config_lock = PTHREAD_MUTEX_INITIALIZER;
static char* g_base_url;

static const cliproxy_host_api* _Atomic g_host;

static char* copy_string(const char* s) {
    size_t n = strlen(s) + 1;
    char* p = (char*)malloc(n);
    if (p) memcpy(p, s, n);
    return p;
}

static char* base_url_copy(void) {
    pthread_mutex_lock(&g_config_lock);
    char* url = g_base_url ? copy_string(g_base_url) : NULL;
    pthread_mutex_unlock(&g_config_lock);
    return url;
}

static void set_base_url(char* url) {
    pthread_mutex_lock(&g_config_lock);
    char* old = g_base_url;
    g_base_url = url;
    pthread_mutex_unlock(&g_config_lock);
    free(old);
}

/* ---- lifecycle ------------------------------------------------------- */

static void plugin_register(const char* req, size_t len, cpx_buf* out) {
    size_t b64_len = 0, yaml_len = 0;
    char* b64 = cpx_json_get_string(req, len, "config_yaml", &b64_len);
    uint8_t* yaml = b64 ? cpx_base64_decode(b64, b64_len, &yaml_len) : NULL;
    free(b64);
    if (b64 && !yaml) {
        cpx_error(out, "invalid_config", "http-c: config_yaml is not valid base64");
        return;
    }
    char* url = cpx_yaml_scalar((const char*)yaml, yaml_len, "base_url");
    free(yaml);
    if (url && !*url) { /* base_url: "" means unset */
        free(url);
        url = NULL;
    }
    /* Registering without base_url is fine: the plugin loads and tells the
     * user what to set when it is first used. */
    set_base_url(url);

    cpx_ok_begin(out);
    cpx_buf_puts(out,
                 "{\"schema_version\":1,"
                 "\"metadata\":{\"Name\":\"http-c\",\"Version\":\"1.0.0\","
                 "\"Author\":\"cliproxy-host\","
                 "\"GitHubRepository\":\"https://github.com/cliproxy-host/cliproxy-host\","
                 "\"Logo\":\"\","
                 "\"ConfigFields\":[{\"Name\":\"base_url\",\"Type\":\"string\","
                 "\"Description\":\"Upstream URL that executor requests are POSTed to "
                 "(through the host's HTTP client)\"}]},"
                 "\"capabilities\":{\"executor\":true,\"executor_model_scope\":\"both\","
                 "\"executor_input_formats\":[\"chat-completions\"],"
                 "\"executor_output_formats\":[\"chat-completions\"]}}");
    cpx_ok_end(out);
}

/* ---- executor -------------------------------------------------------- */

/* Calls the host; 0 on success with the host's envelope in *answer (release it
 * with host->free_buffer), otherwise host->call's non-zero rc. */
static int host_call(const char* method, const cpx_buf* request, cliproxy_buffer* answer) {
    const cliproxy_host_api* host = atomic_load(&g_host);
    answer->ptr = NULL;
    answer->len = 0;
    if (!host || !host->call) return 1;
    return host->call(host->host_ctx, method, (const uint8_t*)request->data, request->len, answer);
}

static void host_release(cliproxy_buffer* answer) {
    const cliproxy_host_api* host = atomic_load(&g_host);
    if (answer->ptr && host && host->free_buffer) host->free_buffer(answer->ptr, answer->len);
    answer->ptr = NULL;
    answer->len = 0;
}

/* Turns the host.http.do envelope into this call's response. */
static void forward_answer(const char* env, size_t env_len, cpx_buf* out) {
    cpx_span ok, result, status, body;
    if (cpx_json_find(env, env_len, "ok", &ok) != 1) {
        cpx_error(out, "host_call_failed", "http-c: host.http.do answered no envelope");
        return;
    }
    if (!cpx_span_is(ok, "true")) {
        /* The host's own error (blocked URL, timeout, ...) is the most useful
         * answer there is: pass it on untouched. */
        cpx_buf_append(out, env, env_len);
        return;
    }
    if (cpx_json_find(env, env_len, "result", &result) != 1 ||
        cpx_json_find(result.ptr, result.len, "StatusCode", &status) != 1) {
        cpx_error(out, "host_call_failed", "http-c: host.http.do answered no StatusCode");
        return;
    }
    unsigned long long code = 0;
    if (!cpx_span_uint(status, &code)) {
        cpx_error(out, "host_call_failed", "http-c: host.http.do answered a bad StatusCode");
        return;
    }
    int has_body = cpx_json_find(result.ptr, result.len, "Body", &body) == 1 &&
                   cpx_span_is_string(body);
    cpx_ok_begin(out);
    cpx_buf_puts(out, "{\"Payload\":");
    /* Body is already base64 in a JSON string: copy it without decoding. */
    if (has_body) cpx_buf_append(out, body.ptr, body.len);
    else cpx_buf_puts(out, "\"\"");
    cpx_buf_printf(out, ",\"Headers\":{\"X-Upstream-Status\":[\"%llu\"]}}", code);
    cpx_ok_end(out);
}

static void executor_execute(const char* req, size_t len, cpx_buf* out) {
    cpx_span probe;
    if (cpx_json_find(req, len, "Payload", &probe) < 0) {
        cpx_error(out, "invalid_request", "http-c: the request is not a JSON object");
        return;
    }
    char* url = base_url_copy();
    if (!url) {
        cpx_error(out, "invalid_config", "http-c: set plugins.configs.http-c.base_url");
        return;
    }
    size_t model_len = 0, payload_len = 0;
    char* model = cpx_json_get_string(req, len, "Model", &model_len);
    char* payload = cpx_json_get_string(req, len, "Payload", &payload_len);

    cpx_buf log = {0};
    cpx_buf_puts(&log, "{\"level\":\"info\",\"message\":\"http-c executing\","
                       "\"fields\":{\"model\":");
    cpx_buf_json_string(&log, model ? model : "", model ? model_len : 0);
    cpx_buf_puts(&log, "}}");

    cpx_buf http = {0};
    cpx_buf_puts(&http, "{\"method\":\"POST\",\"url\":");
    cpx_buf_json_cstring(&http, url);
    cpx_buf_puts(&http, ",\"headers\":{\"Content-Type\":[\"application/json\"],"
                        "\"X-Plugin\":[\"http-c\"]},\"body\":");
    /* The payload stays base64 end to end: the host decodes it once, upstream. */
    cpx_buf_json_string(&http, payload ? payload : "", payload ? payload_len : 0);
    cpx_buf_puts(&http, "}");
    free(model);
    free(payload);
    free(url);

    if (log.failed || http.failed) {
        out->failed = 1;
    } else {
        cliproxy_buffer answer;
        /* Logging is best effort: its outcome does not change the request. */
        host_call("host.log", &log, &answer);
        host_release(&answer);

        int rc = host_call("host.http.do", &http, &answer);
        if (rc != 0) {
            char msg[64];
            snprintf(msg, sizeof msg, "http-c: host.http.do returned %d", rc);
            cpx_error(out, "host_call_failed", msg);
        } else {
            forward_answer((const char*)answer.ptr, answer.ptr ? answer.len : 0, out);
        }
        host_release(&answer);
    }
    cpx_buf_free(&log);
    cpx_buf_free(&http);
}

/* ---- ABI ------------------------------------------------------------- */

static int http_call(const char* method, const uint8_t* request, size_t request_len,
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
        cpx_buf_puts(&out, "{\"ok\":true,\"result\":{\"identifier\":\"http-c\"}}");
    } else if (strcmp(method, "executor.execute") == 0) {
        executor_execute(req, len, &out);
    } else {
        cpx_unknown_method(&out, method);
    }
    return cpx_respond(&out, response, 0);
}

static void http_free_buffer(void* ptr, size_t len) {
    (void)len;
    free(ptr);
}

static void http_shutdown(void) {
    set_base_url(NULL);
    /* the host API is only valid until the library is closed */
    atomic_store(&g_host, NULL);
}

CLIPROXY_EXPORT int cliproxy_plugin_init(const cliproxy_host_api* host,
                                         cliproxy_plugin_api* plugin) {
    if (!host || !plugin) return 1;
    atomic_store(&g_host, host);
    plugin->abi_version = CLIPROXY_ABI_VERSION;
    plugin->call = http_call;
    plugin->free_buffer = http_free_buffer;
    plugin->shutdown = http_shutdown;
    return 0;
}
