/*
 * streamplugin: an executor that streams asynchronously through host.stream.emit and
 * host.stream.close, from threads it starts itself, for the host's stream tests.
 *
 *   cc -shared -fPIC -pthread -I include -I <cliproxy_example.h dir> streamplugin.c -o X.so
 *
 * executor.execute_stream reads these request fields (all optional):
 *   mode         "async" (default): answer no chunks, then emit from `threads` threads;
 *                "sync": answer `count` chunks in the answer itself;
 *                "inline": emit `count` chunks from the calling thread before answering
 *   count        chunks per thread (default 3)
 *   threads      emitting threads (default 1)
 *   size         payload bytes per chunk (default: the text "t<thread>-<i>")
 *   interval_us  pause between emits
 *   close        0: never call host.stream.close (default 1)
 *   close_twice  1: call host.stream.close twice
 *   close_each   1: every thread closes the stream when it is done (closes race emits)
 *   close_error  the error host.stream.close carries
 *   emit_error   an error sent with the last emit of thread 0
 *   after_close  1: emit once more after closing (its answer is counted as a failure)
 *   delay_ms     pause before the first emit
 * A thread stops at its first refused emit. Emits, failures and running threads are
 * counted; `stats` answers the counts and the last refusal's envelope.
 *
 * host_call {"method", "request": {...}}: calls the host from the calling thread and
 * answers {"envelope": <the host's answer, as a string>}.
 *
 * executor.http_request: logs "scoped" through host.log echoing the request's
 * host_callback_id, then answers the request as it came (a method the host scopes).
 */
#define _POSIX_C_SOURCE 200809L

#include "plugin_common.h"

static atomic_llong g_emits_ok, g_emits_failed, g_closes, g_streams;
static pthread_mutex_t g_last_lock = PTHREAD_MUTEX_INITIALIZER;
static char g_last_failure[512];

typedef struct {
    char               stream_id[32];
    unsigned long long count, size, interval_us, delay_ms, thread;
    int                close, close_twice, close_each, after_close;
    char*              close_error; /* owned by the last thread to finish (see sp_done) */
    char*              emit_error;
    atomic_int*        remaining;   /* shared by the stream's threads */
} sp_job;

static void sp_failed(const char* failure) {
    atomic_fetch_add(&g_emits_failed, 1);
    pthread_mutex_lock(&g_last_lock);
    snprintf(g_last_failure, sizeof g_last_failure, "%s", failure);
    pthread_mutex_unlock(&g_last_lock);
}

static int sp_emit(const sp_job* job, unsigned long long i, const char* error) {
    cpx_buf payload = {0};
    if (job->size) {
        for (unsigned long long k = 0; k < job->size; k++) cpx_buf_append(&payload, "x", 1);
    } else {
        cpx_buf_printf(&payload, "t%llu-%llu", job->thread, i);
    }
    char failure[512] = "out of memory building the payload";
    int ok = !payload.failed && pc_stream_emit(job->stream_id, payload.data, payload.len, error,
                                               failure, sizeof failure);
    if (ok) {
        atomic_fetch_add(&g_emits_ok, 1);
    } else {
        sp_failed(failure);
    }
    cpx_buf_free(&payload);
    return ok;
}

static void sp_close(const sp_job* job) {
    if (pc_stream_close(job->stream_id, job->close_error)) atomic_fetch_add(&g_closes, 1);
}

/* Emits the job's chunks; the stream's last thread to finish closes it. */
static void sp_run(sp_job* job) {
    if (job->delay_ms) pc_sleep_us(job->delay_ms * 1000);
    for (unsigned long long i = 0; i < job->count; i++) {
        const char* error = job->thread == 0 && i + 1 == job->count ? job->emit_error : NULL;
        if (!sp_emit(job, i, error)) break;
        if (job->interval_us) pc_sleep_us(job->interval_us);
    }
    if (job->close_each) sp_close(job);
    if (atomic_fetch_sub(job->remaining, 1) == 1) {
        if (job->close) sp_close(job);
        if (job->close_twice) sp_close(job);
        if (job->after_close) sp_emit(job, job->count, NULL);
        free(job->remaining);
        free(job->close_error);
        free(job->emit_error);
    }
}

static void sp_thread(void* arg) {
    sp_job* job = (sp_job*)arg;
    sp_run(job);
    free(job);
}

static void sp_execute_stream(const char* req, size_t len, cpx_buf* out) {
    char* stream_id = cpx_json_get_string(req, len, "stream_id", NULL);
    char* mode = cpx_json_get_string(req, len, "mode", NULL);
    char* callback_id = cpx_json_get_string(req, len, "host_callback_id", NULL);
    sp_job base = {0};
    snprintf(base.stream_id, sizeof base.stream_id, "%s", stream_id ? stream_id : "");
    base.count = cpx_json_get_uint(req, len, "count", 3);
    base.size = cpx_json_get_uint(req, len, "size", 0);
    base.interval_us = cpx_json_get_uint(req, len, "interval_us", 0);
    base.delay_ms = cpx_json_get_uint(req, len, "delay_ms", 0);
    base.close = (int)cpx_json_get_uint(req, len, "close", 1);
    base.close_twice = (int)cpx_json_get_uint(req, len, "close_twice", 0);
    base.close_each = (int)cpx_json_get_uint(req, len, "close_each", 0);
    base.after_close = (int)cpx_json_get_uint(req, len, "after_close", 0);
    base.close_error = cpx_json_get_string(req, len, "close_error", NULL);
    base.emit_error = cpx_json_get_string(req, len, "emit_error", NULL);
    unsigned long long threads = cpx_json_get_uint(req, len, "threads", 1);
    atomic_fetch_add(&g_streams, 1);

    if (mode && strcmp(mode, "sync") == 0) {
        cpx_ok_begin(out);
        cpx_buf_puts(out, "{\"headers\":{\"X-Mode\":[\"sync\"]},\"chunks\":[");
        for (unsigned long long i = 0; i < base.count; i++) {
            char chunk[48];
            int n = snprintf(chunk, sizeof chunk, "t0-%llu", i);
            cpx_buf_puts(out, i ? ",{\"Payload\":\"" : "{\"Payload\":\"");
            cpx_buf_base64(out, (const uint8_t*)chunk, (size_t)n);
            cpx_buf_puts(out, "\"}");
        }
        cpx_buf_puts(out, "]}");
        cpx_ok_end(out);
        free(base.close_error);
        free(base.emit_error);
    } else if (mode && strcmp(mode, "inline") == 0) {
        base.remaining = (atomic_int*)malloc(sizeof *base.remaining);
        atomic_init(base.remaining, 1);
        sp_run(&base);
        cpx_ok_begin(out);
        cpx_buf_printf(out, "{\"headers\":{\"X-Mode\":[\"inline\"],\"X-Stream-Id\":[\"%s\"]}}",
                       base.stream_id);
        cpx_ok_end(out);
    } else {
        atomic_int* remaining = (atomic_int*)malloc(sizeof *remaining);
        atomic_init(remaining, (int)threads);
        int started = 0;
        for (unsigned long long t = 0; t < threads; t++) {
            sp_job* job = (sp_job*)malloc(sizeof *job);
            *job = base;
            job->thread = t;
            job->remaining = remaining;
            if (!pc_spawn(sp_thread, job)) {
                job->count = 0;
                sp_run(job); /* counts this thread as finished */
                free(job);
            } else {
                started++;
            }
        }
        cpx_ok_begin(out);
        cpx_buf_printf(out,
                       "{\"headers\":{\"X-Mode\":[\"async\"],\"X-Threads\":[\"%d\"],"
                       "\"X-Stream-Id\":[\"%s\"],\"X-Callback-Id\":[\"%s\"]}}",
                       started, base.stream_id, callback_id ? callback_id : "");
        cpx_ok_end(out);
    }
    free(stream_id);
    free(mode);
    free(callback_id);
}

static void sp_stats(cpx_buf* out) {
    cpx_ok_begin(out);
    cpx_buf_printf(out,
                   "{\"emits_ok\":%lld,\"emits_failed\":%lld,\"closes\":%lld,"
                   "\"running\":%lld,\"streams\":%lld,\"last_failure\":",
                   (long long)atomic_load(&g_emits_ok), (long long)atomic_load(&g_emits_failed),
                   (long long)atomic_load(&g_closes), (long long)atomic_load(&pc_running),
                   (long long)atomic_load(&g_streams));
    pthread_mutex_lock(&g_last_lock);
    cpx_buf_json_cstring(out, g_last_failure);
    pthread_mutex_unlock(&g_last_lock);
    cpx_buf_puts(out, "}");
    cpx_ok_end(out);
}

/* Calls the host with the raw text of the request's "request" value. */
static void sp_host_call(const char* req, size_t len, cpx_buf* out) {
    char* method = cpx_json_get_string(req, len, "method", NULL);
    cpx_span inner;
    const cliproxy_host_api* host = atomic_load(&pc_host_api);
    if (!method || cpx_json_find(req, len, "request", &inner) != 1 || !host) {
        cpx_error(out, "invalid_request", "streamplugin host_call: method and request needed");
        free(method);
        return;
    }
    cliproxy_buffer resp = {0};
    int rc = host->call(host->host_ctx, method, (const uint8_t*)inner.ptr, inner.len, &resp);
    cpx_ok_begin(out);
    cpx_buf_printf(out, "{\"rc\":%d,\"envelope\":", rc);
    cpx_buf_json_string(out, resp.ptr ? (const char*)resp.ptr : "", resp.len);
    cpx_buf_puts(out, "}");
    cpx_ok_end(out);
    host->free_buffer(resp.ptr, resp.len);
    free(method);
}

static void sp_scoped_echo(const char* req, size_t len, cpx_buf* out) {
    char* callback_id = cpx_json_get_string(req, len, "host_callback_id", NULL);
    cpx_buf log = {0};
    cpx_buf_puts(&log, "{\"level\":\"info\",\"message\":\"scoped\",\"host_callback_id\":");
    cpx_buf_json_cstring(&log, callback_id ? callback_id : "");
    cpx_buf_puts(&log, "}");
    pc_host_buf("host.log", &log, NULL, 0);
    cpx_buf_free(&log);
    free(callback_id);
    pc_echo(out, req, len);
}

static int sp_methods(const char* method, const char* req, size_t len, cpx_buf* out) {
    if (strcmp(method, "executor.execute_stream") == 0) {
        sp_execute_stream(req, len, out);
    } else if (strcmp(method, "executor.execute") == 0) {
        pc_ok(out, "{\"Payload\":\"dDAtMA==\"}");
    } else if (strcmp(method, "executor.http_request") == 0) {
        sp_scoped_echo(req, len, out);
    } else if (strcmp(method, "stats") == 0) {
        sp_stats(out);
    } else if (strcmp(method, "host_call") == 0) {
        sp_host_call(req, len, out);
    } else if (strcmp(method, "echo") == 0) {
        pc_echo(out, req, len);
    } else {
        return 0;
    }
    return 1;
}

PC_PLUGIN("{\"schema_version\":1,"
          "\"metadata\":{\"Name\":\"streamplugin\",\"Version\":\"1.0.0\",\"Author\":\"tests\","
          "\"GitHubRepository\":\"https://github.com/cliproxy-host/cliproxy-host\",\"Logo\":\"\"},"
          "\"capabilities\":{\"executor\":true,"
          "\"executor_input_formats\":[\"openai\"],"
          "\"executor_output_formats\":[\"openai\"]}}",
          sp_methods, pc_wait_threads)
