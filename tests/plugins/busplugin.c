/*
 * busplugin: a test plugin for the event bus, plugin-to-plugin calls and service lookups.
 *
 * Methods:
 *   relay.host   {"method", "request", "host_callback_id"?}: calls the host callback
 *                `method` with `request` (with this call's host_callback_id added when it
 *                has one) and answers the host's envelope as it is, error or not.
 *   relay.echo   answers {"plugin": BP_NAME, "request": <the request as it came>}.
 *   event.handle records the request (an event), then answers {} (or an error with
 *                BP_FAIL_EVENTS); sleeps BP_EVENT_SLEEP_MS first.
 *   relay.events answers {"events": [<each event.handle request, in order>]}.
 *   usage.handle answers {"plugin": BP_NAME} (the capability it registers).
 *
 * Knobs (-D...; string knobs are C string literals):
 *   BP_NAME="x"          its name (default "bus")
 *   BP_REG_EXTRA=",..."  appended to the registration object (Subscriptions, Services)
 *   BP_FAIL_EVENTS       event.handle answers an error (after recording)
 *   BP_EVENT_SLEEP_MS=n  event.handle sleeps n ms first
 *   BP_USAGE_CALLS       usage.handle first calls host.log and host.event.publish
 *                        {"topic": "usage"} (what `check` sees it use)
 */
#define _POSIX_C_SOURCE 200809L

#include "plugin_common.h"

#ifndef BP_NAME
#define BP_NAME "bus"
#endif
#ifndef BP_REG_EXTRA
#define BP_REG_EXTRA ""
#endif

static pthread_mutex_t bp_lock = PTHREAD_MUTEX_INITIALIZER;
static cpx_buf bp_events; /* the recorded events, comma-separated */

static int bp_is(const char* a, const char* b) { return strcmp(a, b) == 0; }

/* relay.host: the host's envelope for `method` and `request`, answered as it is. */
static void bp_relay(const char* req, size_t len, cpx_buf* out) {
    size_t method_len = 0, id_len = 0;
    char* method = cpx_json_get_string(req, len, "method", &method_len);
    char* callback_id = cpx_json_get_string(req, len, "host_callback_id", &id_len);
    cpx_span inner;
    cpx_buf call = {0};
    if (cpx_json_find(req, len, "request", &inner) == 1 && inner.len >= 2 && inner.ptr[0] == '{') {
        cpx_buf_puts(&call, "{");
        if (callback_id) {
            cpx_buf_puts(&call, "\"host_callback_id\":");
            cpx_buf_json_cstring(&call, callback_id);
            /* "{}" has nothing after the brace but the closing one. */
            if (cpx_json_ws(inner.ptr + 1, inner.ptr + inner.len)[0] != '}') cpx_buf_puts(&call, ",");
        }
        cpx_buf_append(&call, inner.ptr + 1, inner.len - 1);
    } else {
        cpx_buf_puts(&call, "{}");
    }
    if (!method || call.failed) {
        cpx_error(out, "invalid_request", BP_NAME ": relay.host needs \"method\" and \"request\"");
    } else {
        const cliproxy_host_api* host = atomic_load(&pc_host_api);
        cliproxy_buffer answer = {0};
        int rc = host->call(host->host_ctx, method, (const uint8_t*)call.data, call.len, &answer);
        if (rc != 0 || !answer.ptr) {
            cpx_error(out, "host_call_failed", BP_NAME ": the host answered nothing");
        } else {
            cpx_buf_append(out, answer.ptr, answer.len);
        }
        if (answer.ptr) host->free_buffer(answer.ptr, answer.len);
    }
    cpx_buf_free(&call);
    free(method);
    free(callback_id);
}

static void bp_event(const char* req, size_t len, cpx_buf* out) {
#ifdef BP_EVENT_SLEEP_MS
    struct timespec pause = {BP_EVENT_SLEEP_MS / 1000, (BP_EVENT_SLEEP_MS % 1000) * 1000000L};
    nanosleep(&pause, NULL);
#endif
    pthread_mutex_lock(&bp_lock);
    if (bp_events.len) cpx_buf_puts(&bp_events, ",");
    cpx_buf_append(&bp_events, req, len);
    pthread_mutex_unlock(&bp_lock);
#ifdef BP_FAIL_EVENTS
    cpx_error(out, "plugin_error", BP_NAME ": event.handle fails (BP_FAIL_EVENTS)");
#else
    pc_ok(out, "{}");
#endif
}

static int bp_methods(const char* method, const char* req, size_t len, cpx_buf* out) {
    if (bp_is(method, "relay.host")) {
        const cliproxy_host_api* host = atomic_load(&pc_host_api);
        if (!host || !host->call) {
            cpx_error(out, "host_call_failed", BP_NAME ": no host");
        } else {
            bp_relay(req, len, out);
        }
    } else if (bp_is(method, "relay.echo")) {
        cpx_ok_begin(out);
        cpx_buf_puts(out, "{\"plugin\":\"" BP_NAME "\",\"request\":");
        if (len) {
            cpx_buf_append(out, req, len);
        } else {
            cpx_buf_puts(out, "null");
        }
        cpx_buf_puts(out, "}");
        cpx_ok_end(out);
    } else if (bp_is(method, "event.handle")) {
        bp_event(req, len, out);
    } else if (bp_is(method, "relay.events")) {
        cpx_ok_begin(out);
        cpx_buf_puts(out, "{\"events\":[");
        pthread_mutex_lock(&bp_lock);
        if (bp_events.len) cpx_buf_append(out, bp_events.data, bp_events.len);
        pthread_mutex_unlock(&bp_lock);
        cpx_buf_puts(out, "]}");
        cpx_ok_end(out);
    } else if (bp_is(method, "usage.handle")) {
#ifdef BP_USAGE_CALLS
        static const char log_req[] = "{\"level\":\"info\",\"message\":\"usage\"}";
        static const char pub_req[] = "{\"topic\":\"usage\"}";
        pc_host_call("host.log", log_req, sizeof log_req - 1, NULL, 0);
        pc_host_call("host.event.publish", pub_req, sizeof pub_req - 1, NULL, 0);
#endif
        pc_ok(out, "{\"plugin\":\"" BP_NAME "\"}");
    } else {
        return 0;
    }
    return 1;
}

PC_PLUGIN("{\"schema_version\":1,\"metadata\":{\"Name\":\"" BP_NAME "\","
          "\"Version\":\"0.1.0\",\"Author\":\"tests\","
          "\"GitHubRepository\":\"https://example.invalid/bus\"},"
          "\"capabilities\":{\"usage_plugin\":true}" BP_REG_EXTRA "}",
          bp_methods, NULL)
