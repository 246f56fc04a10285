/*
 * testplugin: a plugin for the host's test suite, built with compile-time knobs
 * so that each way a plugin can fail can be produced on purpose:
 *
 *   cc -shared -fPIC -pthread -Wall -Wextra -I include -I examples/c \
 *      tests/plugins/testplugin.c -o X.so [knobs]
 *
 * Knobs (-D...). String knobs take a C string literal: -DTP_NAME="x" as one argv
 * element (in a shell: -DTP_NAME='"x"'). Flag knobs act when defined, whatever value.
 *   TP_NO_INIT              export not_the_init instead of cliproxy_plugin_init
 *   TP_INIT_RC=N            init fills everything, then returns N (default 0)
 *   TP_ABI_VERSION=N        plugin->abi_version (default 1)
 *   TP_NULL_CALL            leave plugin->call NULL
 *   TP_NULL_FREE            leave plugin->free_buffer NULL
 *   TP_WITH_SHUTDOWN        set plugin->shutdown (default NULL)
 *   TP_MARKER="path"        append a line per lifecycle event: init, register,
 *                           reconfigure, plugin.shutdown, shutdown
 *   TP_REGISTRATION_FILE="path"  register/reconfigure answer
 *                           {"ok":true,"result":<file contents verbatim>}
 *   TP_REGISTER_SLEEP_MS=N  sleep before answering plugin.register
 *   TP_MANAGEMENT_FILE="path"  management.register answers
 *                           {"ok":true,"result":<file contents verbatim>};
 *                           management.handle answers 200 with X-Plugin: <TP_NAME>
 *   TP_NAME="x"             the name used in answers (default "testplugin")
 *   TP_GO_MARKER            embed the marker Go's build info starts with, so the host
 *                           takes the library for a Go-built one
 *   TP_LEAK_FD              init opens /dev/null and never closes it
 *
 * Methods: see tp_call at the bottom. The misbehaving ones (segfault, abort,
 * exit, hang, alloc, threads_calling_host, fork_then_segfault, fd_limit, host_fork,
 * host_thread_fork, fork_and_return) exist for
 * the isolated-mode tests:
 * loaded in-process they take the test run down with them.
 *
 * Every response lives in a tracked allocation (see "Tracked responses") so the
 * tests can ask `stats` whether the host released each buffer exactly once and
 * with the right length.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cliproxy_plugin.h"
#include "cliproxy_example.h"

#ifndef TP_NAME
#define TP_NAME "testplugin"
#endif
#ifndef TP_ABI_VERSION
#define TP_ABI_VERSION 1
#endif
#ifndef TP_INIT_RC
#define TP_INIT_RC 0
#endif

#if defined(__GNUC__) || defined(__clang__)
#define TP_MAYBE_UNUSED __attribute__((unused))
#else
#define TP_MAYBE_UNUSED
#endif

static const cliproxy_host_api* _Atomic g_host;

static atomic_ullong g_register_calls, g_reconfigure_calls, g_usage_calls;

/* The last config_yaml (still base64), replaced by register/reconfigure. */
static pthread_mutex_t g_config_lock = PTHREAD_MUTEX_INITIALIZER;
static char* g_config_b64;

#ifdef TP_GO_MARKER
__attribute__((used)) static const char tp_go_buildinfo[] = "\xff Go buildinf:";
#endif

/* ---- lifecycle marker ------------------------------------------------ */

static void tp_mark(const char* what) {
#ifdef TP_MARKER
    /* One write() on an O_APPEND fd per line, so lines from concurrent calls
     * never interleave. */
    char line[64];
    size_t n = strlen(what);
    if (n > sizeof line - 1) n = sizeof line - 1;
    memcpy(line, what, n);
    line[n++] = '\n';
    int fd = open(TP_MARKER, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) return;
    ssize_t written = write(fd, line, n);
    (void)written;
    close(fd);
#else
    (void)what;
#endif
}

/* ---- tracked responses ----------------------------------------------- */

/* Each response has a hidden 16-byte header in front of the pointer handed out.
 * free_buffer also looks the pointer up in a set of live allocations before
 * touching the header: a double free must be counted, not crash the test run
 * by reading memory that was already returned to the system. */
#define TP_MAGIC 0x43505850474e554cULL  /* "CPXPGNUL" */
#define TP_POISON 0xdeadbeefdeadbeefULL

typedef struct {
    uint64_t magic;
    uint64_t len;
} tp_header;

_Static_assert(sizeof(tp_header) == 16, "the hidden header is 16 bytes");

typedef struct tp_node {
    void*           ptr;
    struct tp_node* next;
} tp_node;

/* Striped so that concurrent calls rarely contend for the same lock. */
#define TP_BUCKETS 64
static struct {
    pthread_mutex_t lock;
    tp_node*        head;
} g_live[TP_BUCKETS];
static pthread_once_t g_live_once = PTHREAD_ONCE_INIT;

static atomic_ullong g_allocs, g_frees, g_bad_frees;

static void tp_live_init(void) {
    for (size_t i = 0; i < TP_BUCKETS; i++) pthread_mutex_init(&g_live[i].lock, NULL);
}

static size_t tp_bucket(const void* p) {
    uintptr_t v = (uintptr_t)p >> 4;
    return (size_t)((v ^ (v >> 7) ^ (v >> 13)) % TP_BUCKETS);
}

static void* tp_alloc(size_t n) {
    pthread_once(&g_live_once, tp_live_init);
    if (n > SIZE_MAX - sizeof(tp_header)) return NULL;
    tp_header* h = (tp_header*)malloc(sizeof *h + n);
    tp_node* node = (tp_node*)malloc(sizeof *node);
    if (!h || !node) {
        free(h);
        free(node);
        return NULL;
    }
    h->magic = TP_MAGIC;
    h->len = n;
    node->ptr = h + 1;
    size_t b = tp_bucket(node->ptr);
    pthread_mutex_lock(&g_live[b].lock);
    node->next = g_live[b].head;
    g_live[b].head = node;
    pthread_mutex_unlock(&g_live[b].lock);
    atomic_fetch_add(&g_allocs, 1);
    return node->ptr;
}

static TP_MAYBE_UNUSED void tp_free_buffer(void* ptr, size_t len) {
    if (!ptr) return; /* like free(NULL) */
    pthread_once(&g_live_once, tp_live_init);
    size_t b = tp_bucket(ptr);
    pthread_mutex_lock(&g_live[b].lock);
    tp_node** link = &g_live[b].head;
    while (*link && (*link)->ptr != ptr) link = &(*link)->next;
    tp_node* node = *link;
    tp_header* h = (tp_header*)ptr - 1;
    if (!node || h->magic != TP_MAGIC || h->len != len) {
        /* unknown pointer, double free or wrong length: count it and leave any
         * live allocation alone so that a correct free can still follow */
        pthread_mutex_unlock(&g_live[b].lock);
        atomic_fetch_add(&g_bad_frees, 1);
        return;
    }
    *link = node->next;
    h->magic = TP_POISON;
    pthread_mutex_unlock(&g_live[b].lock);
    free(node);
    free(h);
    atomic_fetch_add(&g_frees, 1);
}

/* Copies data into a tracked allocation and makes it the response. */
static int tp_respond_bytes(const void* data, size_t n, cliproxy_buffer* response, int rc) {
    void* p = tp_alloc(n);
    if (!p) return 1;
    if (n) memcpy(p, data, n);
    response->ptr = p;
    response->len = n;
    return rc;
}

static int tp_respond(cpx_buf* b, cliproxy_buffer* response, int rc) {
    if (b->failed) {
        cpx_buf_free(b);
        return 1;
    }
    rc = tp_respond_bytes(b->data, b->len, response, rc);
    cpx_buf_free(b);
    return rc;
}

/* ---- small utilities ------------------------------------------------- */

static void tp_sleep_ms(unsigned long long ms) {
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static uint64_t tp_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void tp_set_config(char* b64) {
    pthread_mutex_lock(&g_config_lock);
    char* old = g_config_b64;
    g_config_b64 = b64;
    pthread_mutex_unlock(&g_config_lock);
    free(old);
}

/* ---- lifecycle ------------------------------------------------------- */

/* Answer {"ok":true,"result":<contents of path>} (the file holds the result JSON). */
static TP_MAYBE_UNUSED void tp_answer_file(const char* path, cpx_buf* out) {
    FILE* f = fopen(path, "rb");
    if (!f) {
        cpx_error(out, "plugin_error", "cannot open the answer file");
        return;
    }
    cpx_ok_begin(out);
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) cpx_buf_append(out, chunk, n);
    int failed = ferror(f);
    fclose(f);
    if (failed) {
        cpx_error(out, "plugin_error", "cannot read the answer file");
        return;
    }
    cpx_ok_end(out);
}

static void tp_registration(cpx_buf* out) {
#ifdef TP_REGISTRATION_FILE
    tp_answer_file(TP_REGISTRATION_FILE, out);
#else
    cpx_ok_begin(out);
    cpx_buf_puts(out, "{\"schema_version\":1,\"metadata\":{\"Name\":");
    cpx_buf_json_cstring(out, TP_NAME);
    cpx_buf_puts(out, ",\"Version\":\"0.1.0\",\"Author\":\"tests\","
                      "\"GitHubRepository\":\"https://example.invalid/testplugin\","
                      "\"Logo\":\"\",\"ConfigFields\":[]},"
                      "\"capabilities\":{\"executor\":true,\"request_normalizer\":true,"
                      "\"usage_plugin\":true}}");
    cpx_ok_end(out);
#endif
}

static void tp_register(const char* req, size_t len, int reconfigure, cpx_buf* out) {
    tp_mark(reconfigure ? "reconfigure" : "register");
    atomic_fetch_add(reconfigure ? &g_reconfigure_calls : &g_register_calls, 1);
    char* b64 = cpx_json_get_string(req, len, "config_yaml", NULL);
    tp_set_config(b64); /* NULL (absent) reads back as "" */
#ifdef TP_REGISTER_SLEEP_MS
    if (!reconfigure) tp_sleep_ms((unsigned long long)(TP_REGISTER_SLEEP_MS));
#endif
    tp_registration(out);
}

static void tp_last_config(cpx_buf* out) {
    cpx_ok_begin(out);
    cpx_buf_puts(out, "{\"config_yaml\":");
    pthread_mutex_lock(&g_config_lock);
    cpx_buf_json_cstring(out, g_config_b64 ? g_config_b64 : "");
    pthread_mutex_unlock(&g_config_lock);
    cpx_buf_printf(out, ",\"register_calls\":%llu,\"reconfigure_calls\":%llu}",
                   (unsigned long long)atomic_load(&g_register_calls),
                   (unsigned long long)atomic_load(&g_reconfigure_calls));
    cpx_ok_end(out);
}

/* ---- calling the host ------------------------------------------------ */

typedef struct {
    const cliproxy_host_api* host;
    const char*              method;
    const char*              request;
    size_t                   request_len;
    unsigned long long       times;
    int                      fork;   /* make the last host call from a forked child */
    unsigned long long       after;  /* fork: host calls from this thread after the child's */
    int                      rc;
    cliproxy_buffer          answer;
    char*                    child_answer; /* the child's answer (malloc'd), fork only */
    size_t                   child_len;
} tp_host_job;

static void tp_host_release(const cliproxy_host_api* host, cliproxy_buffer* answer);

/* The job's host call, once; its rc, and the answer in *answer. */
static int tp_host_call(const tp_host_job* job, cliproxy_buffer* answer) {
    return job->host->call(job->host->host_ctx, job->method, (const uint8_t*)job->request,
                           job->request_len, answer);
}

static int tp_write_all(int fd, const void* data, size_t len) {
    const char* at = data;
    while (len) {
        ssize_t n = write(fd, at, len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        at += n;
        len -= (size_t)n;
    }
    return 0;
}

#define TP_CHILD_ANSWER_MAX (1u << 20)
#define TP_CHILD_WAIT_MS 10000

/* fork(), and the host call from the child (fork without exec): the child passes its rc
 * and answer back over a pipe. A child that does not answer within TP_CHILD_WAIT_MS is
 * killed and the job's rc is -4 (-1: no pipe, -2: no fork, -3: the pipe was cut short). */
static void tp_host_from_child(tp_host_job* job) {
    int fds[2];
    if (pipe(fds) != 0) {
        job->rc = -1;
        return;
    }
    pid_t child = fork();
    if (child == 0) {
        close(fds[0]);
        cliproxy_buffer answer = {0};
        int rc = tp_host_call(job, &answer);
        uint32_t len = rc == 0 && answer.ptr ? (uint32_t)answer.len : 0;
        if (tp_write_all(fds[1], &rc, sizeof rc) == 0 && tp_write_all(fds[1], &len, sizeof len) == 0)
            tp_write_all(fds[1], answer.ptr, len);
        close(fds[1]);
        /* Ends as a thread does (its thread-specific data destroyed), the last one: the
         * process exits 0. */
        pthread_exit(NULL);
    }
    close(fds[1]);
    if (child < 0) {
        close(fds[0]);
        job->rc = -2;
        return;
    }
    char* got = malloc(8 + TP_CHILD_ANSWER_MAX);
    size_t have = 0;
    int rc = got ? -3 : -1;
    uint64_t start = tp_now_ns();
    while (got && have < 8 + TP_CHILD_ANSWER_MAX) {
        uint64_t waited = (tp_now_ns() - start) / 1000000;
        struct pollfd p = {fds[0], POLLIN, 0};
        int ready = poll(&p, 1, waited >= TP_CHILD_WAIT_MS ? 0 : (int)(TP_CHILD_WAIT_MS - waited));
        if (ready < 0 && errno == EINTR) continue;
        if (ready <= 0) {
            rc = -4;
            break;
        }
        ssize_t n = read(fds[0], got + have, 8 + TP_CHILD_ANSWER_MAX - have);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        have += (size_t)n;
    }
    close(fds[0]);
    if (rc == -4) kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    uint32_t len = 0;
    if (rc != -4 && got && have >= 8) {
        memcpy(&len, got + 4, sizeof len);
        if (have == 8 + (size_t)len) {
            memcpy(&rc, got, sizeof rc);
            memmove(got, got + 8, len);
        }
    }
    job->rc = rc;
    job->child_answer = got;
    job->child_len = rc == 0 ? len : 0;
}

/* The host call `times` times in a row (at least once) from this thread; the last answer.
 * With fork, `times` calls in a row (none at 0), then one from a forked child. */
static void tp_host_run(tp_host_job* job) {
    job->answer.ptr = NULL;
    job->answer.len = 0;
    for (unsigned long long i = 0; job->fork ? i < job->times : i == 0 || i < job->times; i++) {
        tp_host_release(job->host, &job->answer);
        job->rc = tp_host_call(job, &job->answer);
        if (job->rc != 0) break;
    }
    if (job->fork && job->rc == 0) {
        tp_host_release(job->host, &job->answer);
        tp_host_from_child(job);
        for (unsigned long long i = 0; i < job->after; i++) {
            cliproxy_buffer answer = {0};
            int rc = tp_host_call(job, &answer);
            tp_host_release(job->host, &answer);
            if (rc != 0) {
                job->rc = rc;
                break;
            }
        }
    }
}

static void* tp_host_thread(void* arg) {
    tp_host_run((tp_host_job*)arg);
    return NULL;
}

static void tp_host_release(const cliproxy_host_api* host, cliproxy_buffer* answer) {
    if (answer->ptr && host->free_buffer) host->free_buffer(answer->ptr, answer->len);
    answer->ptr = NULL;
    answer->len = 0;
}

/* `host` and `host_thread`: answers the host's bytes verbatim. {"times": N} makes the
 * host call N times in a row from the one thread, answering the last. `host_fork` and
 * `host_thread_fork` make N (default 0) host calls, then fork and answer what the host
 * answered the child's one host call (the child then ends with pthread_exit); {"after": M}
 * makes M more host calls from the forking thread once the child is gone. */
static int tp_host(const char* req, size_t len, int in_thread, int fork_child,
                   cliproxy_buffer* response) {
    cpx_buf out = {0};
    tp_host_job job = {0};
    job.host = atomic_load(&g_host);
    char* method = cpx_json_get_string(req, len, "method", NULL);
    cpx_span value;
    if (cpx_json_find(req, len, "request", &value) == 1) {
        job.request = value.ptr;
        job.request_len = value.len;
    }
    job.method = method;
    job.times = cpx_json_get_uint(req, len, "times", fork_child ? 0 : 1);
    job.fork = fork_child;
    job.after = cpx_json_get_uint(req, len, "after", 0);
    pthread_t thread;

    if (!job.host || !job.host->call) {
        cpx_error(&out, "plugin_error", "no host API (init not called?)");
    } else if (!method) {
        cpx_error(&out, "invalid_request", "host: \"method\" must be a string");
    } else if (in_thread && pthread_create(&thread, NULL, tp_host_thread, &job) != 0) {
        cpx_error(&out, "plugin_error", "pthread_create failed");
    } else {
        if (in_thread) pthread_join(thread, NULL);
        else tp_host_run(&job);
        free(method);
        if (job.fork) {
            int rc = job.rc;
            if (rc == 0 && job.child_len) {
                rc = tp_respond_bytes(job.child_answer, job.child_len, response, 0);
            } else if (rc != 0) {
                char msg[64];
                snprintf(msg, sizeof msg, "host call from the child returned %d", rc);
                cpx_error(&out, "host_rc", msg);
                rc = tp_respond(&out, response, 0);
            }
            free(job.child_answer);
            return rc;
        }
        if (job.rc != 0) {
            tp_host_release(job.host, &job.answer);
            char msg[48];
            snprintf(msg, sizeof msg, "host call returned %d", job.rc);
            cpx_error(&out, "host_rc", msg);
            return tp_respond(&out, response, 0);
        }
        int rc = 0;
        if (job.answer.ptr && job.answer.len)
            rc = tp_respond_bytes(job.answer.ptr, job.answer.len, response, 0);
        else if (job.answer.len)
            rc = 1; /* the host claimed bytes without a pointer */
        tp_host_release(job.host, &job.answer);
        return rc;
    }
    free(method);
    return tp_respond(&out, response, 0);
}

static void tp_host_bad_ctx(cpx_buf* out) {
    const cliproxy_host_api* host = atomic_load(&g_host);
    if (!host || !host->call) {
        cpx_error(out, "plugin_error", "no host API (init not called?)");
        return;
    }
    static const char req[] = "{\"level\":\"debug\",\"message\":\"testplugin bad ctx probe\"}";
    const uint8_t* r = (const uint8_t*)req;
    size_t n = sizeof req - 1;
    cliproxy_buffer a1 = {0}, a2 = {0}, a3 = {0};
    int rc1 = host->call(NULL, "host.log", r, n, &a1);
    int rc2 = host->call(host->host_ctx, NULL, r, n, &a2);
    int rc3 = host->call((void*)(uintptr_t)0x7fffffff, "host.log", r, n, &a3);
    tp_host_release(host, &a1);
    tp_host_release(host, &a2);
    tp_host_release(host, &a3);
    cpx_ok_begin(out);
    cpx_buf_printf(out, "{\"null_ctx\":%d,\"null_method\":%d,\"bogus_ctx\":%d}", rc1, rc2, rc3);
    cpx_ok_end(out);
}

/* ---- other methods --------------------------------------------------- */

static void tp_normalize(const char* req, size_t len, cpx_buf* out) {
    cpx_span v;
    uint8_t* body = NULL;
    size_t body_len = 0;
    int found = cpx_json_find(req, len, "Body", &v);
    if (found < 0) {
        cpx_error(out, "invalid_request", "request.normalize: the request is not a JSON object");
        return;
    }
    if (found && !cpx_span_is(v, "null")) {
        size_t b64_len = 0;
        char* b64 = cpx_span_string(v, &b64_len);
        body = b64 ? cpx_base64_decode(b64, b64_len, &body_len) : NULL;
        free(b64);
        if (!body) {
            cpx_error(out, "invalid_request", "request.normalize: Body is not base64");
            return;
        }
    }
    cpx_buf joined = {0};
    cpx_buf_append(&joined, body, body_len);
    cpx_buf_puts(&joined, "|" TP_NAME);
    free(body);
    cpx_ok_begin(out);
    cpx_buf_puts(out, "{\"Body\":\"");
    cpx_buf_base64(out, (const uint8_t*)joined.data, joined.len);
    cpx_buf_puts(out, "\"}}");
    if (joined.failed) out->failed = 1;
    cpx_buf_free(&joined);
}

static int tp_big(const char* req, size_t len, cliproxy_buffer* response) {
    static const char head[] = "{\"ok\":true,\"result\":{\"data\":\"";
    static const char tail[] = "\"}}";
    unsigned long long n = cpx_json_get_uint(req, len, "bytes", 0);
    size_t hl = sizeof head - 1, tl = sizeof tail - 1;
    if (n > SIZE_MAX - hl - tl - sizeof(tp_header)) return 1;
    /* built in place: N may be large enough that a growing buffer would double it */
    char* p = (char*)tp_alloc(hl + (size_t)n + tl);
    if (!p) return 1;
    memcpy(p, head, hl);
    memset(p + hl, 'a', (size_t)n);
    memcpy(p + hl + n, tail, tl);
    response->ptr = p;
    response->len = hl + (size_t)n + tl;
    return 0;
}

/* ---- misbehaviour, for the isolated-mode tests ----------------------- */

/* Both volatile: the compiler may neither prove the pointer NULL nor drop the
 * store through it (GCC removes a plain store through NULL), so the write faults. */
static void tp_segfault(void) {
    volatile int* volatile p = NULL;
    *p = 42;
}

/* A stuck native call that burns CPU: the flag is volatile, so the loop cannot
 * be removed or proven infinite. Nothing ever clears it. */
static volatile int g_hang = 1;

static void tp_hang(void) {
    while (g_hang) {
    }
}

/* {"mb":N}: allocate and touch N MiB, then release them; out_of_memory when
 * malloc fails (e.g. under the worker's memory limit). */
static void tp_alloc_mb(const char* req, size_t len, cpx_buf* out) {
    unsigned long long mb = cpx_json_get_uint(req, len, "mb", 0);
    if (mb > SIZE_MAX / (1024u * 1024u)) {
        cpx_error(out, "out_of_memory", "alloc: too many MiB for this platform");
        return;
    }
    size_t n = (size_t)mb * 1024u * 1024u;
    char* p = (char*)malloc(n ? n : 1);
    if (!p) {
        cpx_error(out, "out_of_memory", "alloc: malloc failed");
        return;
    }
    memset(p, 0x5a, n);
    /* read one byte back through a volatile so the memset is not elided */
    volatile char* touched = p;
    char last = n ? touched[n - 1] : 0x5a;
    free(p);
    cpx_buf_printf(out, "{\"ok\":true,\"result\":{\"allocated_mb\":%llu,\"ok\":%s}}", mb,
                   last == 0x5a ? "true" : "false");
}

/* Calls host.log every millisecond for about two seconds from a thread the
 * plugin owns, whatever happens to the plugin meanwhile (unload included). */
static void* tp_chatty_thread(void* arg) {
    char req[96];
    int n = snprintf(req, sizeof req,
                     "{\"level\":\"debug\",\"message\":\"testplugin thread %lu\"}",
                     (unsigned long)(uintptr_t)arg);
    if (n < 0 || (size_t)n >= sizeof req) return NULL;
    uint64_t until = tp_now_ns() + 2000000000ULL;
    while (tp_now_ns() < until) {
        const cliproxy_host_api* host = atomic_load(&g_host);
        if (!host || !host->call) break;
        cliproxy_buffer answer = {0};
        host->call(host->host_ctx, "host.log", (const uint8_t*)req, (size_t)n, &answer);
        tp_host_release(host, &answer);
        tp_sleep_ms(1);
    }
    return NULL;
}

/* {"threads": N} (4 when not given, at most 64): that many such threads. */
static void tp_threads_calling_host(const char* req, size_t len, cpx_buf* out) {
    pthread_attr_t attr;
    int started = 0;
    unsigned long long count = req && len ? cpx_json_get_uint(req, len, "threads", 4) : 4;
    if (count > 64) count = 64;
    if (pthread_attr_init(&attr) == 0) {
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        for (uintptr_t i = 0; i < count; i++) {
            pthread_t thread;
            if (pthread_create(&thread, &attr, tp_chatty_thread, (void*)i) == 0) started++;
        }
        pthread_attr_destroy(&attr);
    }
    cpx_buf_printf(out, "{\"ok\":true,\"result\":{\"started\":%d}}", started);
}

/* {"message":"..."}: one line on stderr, which an isolated host forwards to its log. */
static void tp_stderr(const char* req, size_t len, cpx_buf* out) {
    char* message = cpx_json_get_string(req, len, "message", NULL);
    fprintf(stderr, "%s\n", message ? message : "(no message)");
    fflush(stderr);
    free(message);
    cpx_buf_puts(out, "{\"ok\":true,\"result\":{}}");
}

/* ---- ABI ------------------------------------------------------------- */

#define IS(name) (strcmp(method, name) == 0)

static TP_MAYBE_UNUSED int tp_call(const char* method, const uint8_t* request,
                                   size_t request_len, cliproxy_buffer* response) {
    if (!response) return 1;
    response->ptr = NULL;
    response->len = 0;
    if (!method) method = "";
    const char* req = (const char*)request;
    size_t len = request ? request_len : 0;
    cpx_buf out = {0};

    if (IS("plugin.register") || IS("plugin.reconfigure")) {
        tp_register(req, len, IS("plugin.reconfigure"), &out);
    } else if (IS("plugin.shutdown")) {
        tp_mark("plugin.shutdown");
        cpx_buf_puts(&out, "{\"ok\":true,\"result\":{}}");
#ifdef TP_MANAGEMENT_FILE
    } else if (IS("management.register")) {
        tp_answer_file(TP_MANAGEMENT_FILE, &out);
    } else if (IS("management.handle")) {
        cpx_buf_puts(&out, "{\"ok\":true,\"result\":{\"StatusCode\":200,\"Headers\":"
                           "{\"X-Plugin\":[");
        cpx_buf_json_cstring(&out, TP_NAME);
        cpx_buf_puts(&out, "]},\"Body\":\"\"}}");
#endif
    } else if (IS("last_config")) {
        tp_last_config(&out);
    } else if (IS("echo")) {
        cpx_ok_begin(&out);
        if (len) cpx_buf_append(&out, req, len);
        else cpx_buf_puts(&out, "{}");
        cpx_ok_end(&out);
    } else if (IS("executor.identifier")) {
        cpx_ok_begin(&out);
        cpx_buf_puts(&out, "{\"identifier\":");
        cpx_buf_json_cstring(&out, TP_NAME);
        cpx_buf_puts(&out, "}");
        cpx_ok_end(&out);
    } else if (IS("executor.execute")) {
        cpx_span payload;
        int found = cpx_json_find(req, len, "Payload", &payload);
        cpx_ok_begin(&out);
        cpx_buf_puts(&out, "{\"Payload\":");
        if (found == 1) cpx_buf_append(&out, payload.ptr, payload.len);
        else cpx_buf_puts(&out, "\"\"");
        cpx_buf_puts(&out, ",\"Headers\":{\"X-Plugin\":[");
        cpx_buf_json_cstring(&out, TP_NAME);
        cpx_buf_puts(&out, "]}}");
        cpx_ok_end(&out);
    } else if (IS("request.normalize")) {
        tp_normalize(req, len, &out);
    } else if (IS("usage.handle")) {
        atomic_fetch_add(&g_usage_calls, 1);
        cpx_buf_puts(&out, "{\"ok\":true,\"result\":{}}");
    } else if (IS("usage_count")) {
        cpx_buf_printf(&out, "{\"ok\":true,\"result\":{\"count\":%llu}}",
                       (unsigned long long)atomic_load(&g_usage_calls));
    } else if (IS("rc_with_envelope")) {
        cpx_buf_puts(&out, "{\"ok\":false,\"error\":{\"code\":\"quota_exceeded\","
                           "\"message\":\"try later\",\"retryable\":true,\"http_status\":429}}");
        return tp_respond(&out, response, 3);
    } else if (IS("rc_without_envelope")) {
        cpx_buf_puts(&out, "boom: not an envelope");
        return tp_respond(&out, response, 4);
    } else if (IS("rc_no_response")) {
        return 5;
    } else if (IS("not_json")) {
        cpx_buf_puts(&out, "this is not json");
    } else if (IS("not_utf8")) {
        cpx_buf_puts(&out, "{\"ok\":true,\"result\":\"\xFF\xFE\"}");
    } else if (IS("null_with_len")) {
        response->len = 7; /* deliberately inconsistent */
        return 0;
    } else if (IS("empty")) {
        return 0;
    } else if (IS("decline")) {
        cpx_error(&out, "not_handled", TP_NAME " does not handle this request");
    } else if (IS("fail")) {
        cpx_error(&out, "plugin_error", "failed on purpose");
    } else if (IS("sleep")) {
        unsigned long long ms = cpx_json_get_uint(req, len, "ms", 0);
        tp_sleep_ms(ms);
        cpx_buf_printf(&out, "{\"ok\":true,\"result\":{\"slept_ms\":%llu}}", ms);
    } else if (IS("spin")) {
        unsigned long long us = cpx_json_get_uint(req, len, "us", 0);
        uint64_t until = tp_now_ns() + (uint64_t)us * 1000ULL;
        while (tp_now_ns() < until) {
        }
        cpx_buf_printf(&out, "{\"ok\":true,\"result\":{\"spun_us\":%llu}}", us);
    } else if (IS("big")) {
        return tp_big(req, len, response);
    } else if (IS("fd_limit")) {
        /* lower the process's open-file limit so that only `free` more descriptors fit
         * (above the lowest free one): the next ones it receives are dropped */
        unsigned long long free_fds = cpx_json_get_uint(req, len, "free", 0);
        int lowest = dup(0);
        if (lowest < 0) {
            cpx_error(&out, "plugin_error", "dup failed");
        } else {
            close(lowest);
            struct rlimit lim;
            getrlimit(RLIMIT_NOFILE, &lim);
            lim.rlim_cur = (rlim_t)lowest + (rlim_t)free_fds;
            if (setrlimit(RLIMIT_NOFILE, &lim) != 0) {
                cpx_error(&out, "plugin_error", "setrlimit failed");
            } else {
                cpx_buf_printf(&out, "{\"ok\":true,\"result\":{\"limit\":%llu}}",
                               (unsigned long long)lim.rlim_cur);
            }
        }
    } else if (IS("host")) {
        return tp_host(req, len, 0, 0, response);
    } else if (IS("host_thread")) {
        return tp_host(req, len, 1, 0, response);
    } else if (IS("host_fork")) {
        return tp_host(req, len, 0, 1, response);
    } else if (IS("host_thread_fork")) {
        return tp_host(req, len, 1, 1, response);
    } else if (IS("host_bad_ctx")) {
        tp_host_bad_ctx(&out);
    } else if (IS("stats")) {
        /* read before this answer's own allocation, so that with nothing in
         * flight allocs == frees */
        unsigned long long a = atomic_load(&g_allocs), f = atomic_load(&g_frees),
                           bad = atomic_load(&g_bad_frees);
        cpx_buf_printf(&out, "{\"ok\":true,\"result\":{\"allocs\":%llu,\"frees\":%llu,"
                             "\"bad_frees\":%llu}}", a, f, bad);
    } else if (IS("pid")) {
        cpx_buf_printf(&out, "{\"ok\":true,\"result\":{\"pid\":%ld}}", (long)getpid());
    } else if (IS("segfault")) {
        tp_segfault();
        cpx_error(&out, "plugin_error", "segfault: still alive after writing through NULL");
    } else if (IS("fork_then_segfault")) {
        /* A child that keeps every descriptor of its parent open (fork, no exec), so
         * the parent's sockets stay open after it dies: its death must be seen anyway. */
        pid_t child = fork();
        if (child == 0) {
            struct timespec ts = {4, 0};
            nanosleep(&ts, NULL);
            _exit(0);
        }
        tp_segfault();
        cpx_error(&out, "plugin_error", "fork_then_segfault: still alive");
    } else if (IS("fork_and_return")) {
        /* fork(), and both processes return from the call: the child's return must not
         * answer it. The parent waits (up to 5 s) for the child to exit. */
        pid_t child = fork();
        if (child == 0) {
            cpx_buf_printf(&out, "{\"ok\":true,\"result\":{\"pid\":%ld}}", (long)getpid());
            return tp_respond(&out, response, 0);
        }
        int exited = 0;
        for (int i = 0; child > 0 && i < 500 && !exited; i++) {
            exited = waitpid(child, NULL, WNOHANG) == child;
            if (!exited) {
                struct timespec ts = {0, 10 * 1000 * 1000};
                nanosleep(&ts, NULL);
            }
        }
        if (child > 0 && !exited) {
            kill(child, SIGKILL);
            waitpid(child, NULL, 0);
        }
        cpx_buf_printf(&out, "{\"ok\":true,\"result\":{\"pid\":%ld,\"child_exited\":%s}}",
                       (long)getpid(), exited ? "true" : "false");
    } else if (IS("abort")) {
        abort();
    } else if (IS("exit")) {
        _exit(3);
    } else if (IS("hang")) {
        tp_hang();
        cpx_error(&out, "plugin_error", "hang: the loop ended");
    } else if (IS("alloc")) {
        tp_alloc_mb(req, len, &out);
    } else if (IS("threads_calling_host")) {
        tp_threads_calling_host(req, len, &out);
    } else if (IS("stderr")) {
        tp_stderr(req, len, &out);
    } else {
        cpx_unknown_method(&out, method);
    }
    return tp_respond(&out, response, 0);
}

static TP_MAYBE_UNUSED void tp_shutdown(void) {
    tp_mark("shutdown");
    tp_set_config(NULL);
}

static int tp_init(const cliproxy_host_api* host, cliproxy_plugin_api* plugin) {
    tp_mark("init");
#ifdef TP_LEAK_FD
    (void)open("/dev/null", O_RDONLY);
#endif
    atomic_store(&g_host, host);
    if (!plugin) return 1;
    plugin->abi_version = TP_ABI_VERSION;
#ifndef TP_NULL_CALL
    plugin->call = tp_call;
#endif
#ifndef TP_NULL_FREE
    plugin->free_buffer = tp_free_buffer;
#endif
#ifdef TP_WITH_SHUTDOWN
    plugin->shutdown = tp_shutdown;
#endif
    return TP_INIT_RC;
}

#ifdef TP_NO_INIT
CLIPROXY_EXPORT int not_the_init(const cliproxy_host_api* host, cliproxy_plugin_api* plugin);
CLIPROXY_EXPORT int not_the_init(const cliproxy_host_api* host, cliproxy_plugin_api* plugin) {
    return tp_init(host, plugin);
}
#else
CLIPROXY_EXPORT int cliproxy_plugin_init(const cliproxy_host_api* host,
                                         cliproxy_plugin_api* plugin) {
    return tp_init(host, plugin);
}
#endif

#if defined(__GNUC__) || defined(__clang__)
/* Without TP_WITH_SHUTDOWN nothing else frees the stored config before dlclose. */
__attribute__((destructor)) static void tp_unload(void) { tp_set_config(NULL); }
#endif
