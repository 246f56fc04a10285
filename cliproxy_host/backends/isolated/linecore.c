/*
 * linecore.c - the native core of an isolated worker: serves call lines without Python.
 *
 * The worker process (worker.py) loads the plugin with NativePlugin, then hands this core
 * the plugin's call and free_buffer and every call line the host passes. Each line is
 * served by a thread of its own, in C: it reads a CALL frame, calls the plugin, and
 * writes the RESULT frame, and the plugin's host calls from that thread travel on the
 * line (HOST_CALL / HOST_RESULT) in C too. No GIL is taken on that path; Python is
 * called back only for what is rare and must match NativePlugin to the letter (the
 * ERROR payloads of failed calls) and for host calls from threads that serve no line.
 * Frames are those of wire.py: a 13-byte header (u32 length, u8 kind, u64 request id,
 * big-endian) and the payload.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    void* ptr;
    size_t len;
} cw_buffer;

typedef int (*cw_call_fn)(const char*, const uint8_t*, size_t, cw_buffer*);
typedef void (*cw_free_fn)(void*, size_t);
typedef int (*cw_host_fn)(void*, const char*, const uint8_t*, size_t, cw_buffer*);
/* Builds the ERROR payload of a failed call (see the CW_ERR_* kinds) into *out, malloc'd. */
typedef int (*cw_error_fn)(int kind, const char* method, int rc, const uint8_t* data,
                           size_t len, cw_buffer* out);

enum { K_CALL = 2, K_RESULT = 3, K_ERROR = 4, K_HOST_CALL = 5, K_HOST_RESULT = 6 };
enum { CW_ERR_RC = 1, CW_ERR_NULL_WITH_LEN = 2, CW_ERR_TOO_LARGE = 3, CW_ERR_UNLOADING = 4 };

#define HEADER_SIZE 13
#define READ_AHEAD 65536
/* Host call ids on lines: far above the ids the Python side numbers from 1. */
#define LINE_HOST_IDS (UINT64_C(1) << 48)

static cw_call_fn g_call;
static cw_free_fn g_free;
static void* g_ctx;
static cw_host_fn g_fallback;
static cw_error_fn g_error;
static uint64_t g_max_response;
static double g_spin_s;
static char g_plugin_id[256];
static _Atomic uint64_t g_host_ids = LINE_HOST_IDS;
static _Atomic unsigned g_serial;

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_drained = PTHREAD_COND_INITIALIZER;
static _Atomic int g_inflight;
static _Atomic int g_closing;
static long g_cpus = 1;
static _Atomic long g_cpu_checked_ms = -1000000;
static _Atomic int g_cpu_spare = 1;

typedef struct {
    int fd;
    size_t start, end; /* unread bytes of buf */
    uint8_t buf[READ_AHEAD];
} line_t;

static _Thread_local line_t* tls_line;

/* The control socket, once the core reads it: its writes are serialized by g_ctl_lock,
 * and the host's answers to the plugin's host calls on it wake their waiters. */
typedef void (*cw_shutdown_fn)(double);
typedef struct waiter {
    uint64_t id;
    int done;
    uint8_t* payload;
    size_t size;
    pthread_cond_t cond;
    struct waiter* next;
} waiter_t;
static int g_ctl_fd = -1;
static pthread_mutex_t g_ctl_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t g_wait_lock = PTHREAD_MUTEX_INITIALIZER;
static waiter_t* g_waiters;
static _Atomic uint64_t g_ctl_ids = 1;
static cw_shutdown_fn g_on_shutdown;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Log to stderr (the host logs it with the plugin's ID) and exit: the host must not wait
 * for an answer that cannot come. */
static void die(const char* what, int err) {
    fprintf(stderr, "worker for plugin %s: %s%s%s\n", g_plugin_id, what, err ? ": " : "",
            err ? strerror(err) : "");
    fflush(stderr);
    _exit(1);
}

/* Whether no task waits for a CPU right now (the running count of /proc/loadavg is at
 * most the CPU count), looked up at most every 50 ms. On a loaded machine a spinning
 * thread takes the CPU the other end needs to answer: there, sleeping is faster. */
static int spare_cpu(void) {
    long now_ms = (long)(now_s() * 1000);
    if (now_ms - atomic_load(&g_cpu_checked_ms) < 50) return atomic_load(&g_cpu_spare);
    atomic_store(&g_cpu_checked_ms, now_ms);
    int fd = open("/proc/loadavg", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 1;
    char buf[128];
    ssize_t got = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (got <= 0) return 1;
    buf[got] = 0;
    /* "0.50 0.40 0.30 3/250 1234": the fourth field is running/total */
    const char* at = buf;
    for (int field = 0; field < 3 && at; field++) {
        at = strchr(at, ' ');
        if (at) at++;
    }
    int spare = !at || strtol(at, NULL, 10) <= g_cpus;
    atomic_store(&g_cpu_spare, spare);
    return spare;
}

/* Poll without sleeping for up to g_spin_s: a cross-CPU wake-up costs more than a small
 * call, and an answer expected within microseconds is cheaper to watch for. */
static void spin(line_t* line) {
    if (g_spin_s <= 0 || line->end > line->start || !spare_cpu()) return;
    struct pollfd p = {line->fd, POLLIN, 0};
    double end = now_s() + g_spin_s;
    while (poll(&p, 1, 0) == 0) {
        if (now_s() >= end) return;
    }
}

/* Fill the read-ahead buffer; 0 at EOF, -1 (errno) on error. */
static ssize_t fill(line_t* line) {
    for (;;) {
        ssize_t got = recv(line->fd, line->buf, READ_AHEAD, 0);
        if (got >= 0 || errno != EINTR) {
            line->start = 0;
            line->end = got > 0 ? (size_t)got : 0;
            return got;
        }
    }
}

/* Read exactly n bytes into dst; 1 done, 0 EOF (cut short too), -1 error. */
static int read_exact(line_t* line, uint8_t* dst, size_t n) {
    while (n) {
        if (line->end == line->start) {
            if (n >= READ_AHEAD) { /* large payloads go straight to their buffer */
                ssize_t got = recv(line->fd, dst, n, 0);
                if (got < 0 && errno == EINTR) continue;
                if (got <= 0) return got == 0 ? 0 : -1;
                dst += got;
                n -= (size_t)got;
                continue;
            }
            ssize_t got = fill(line);
            if (got <= 0) return got == 0 ? 0 : -1;
        }
        size_t take = line->end - line->start;
        if (take > n) take = n;
        memcpy(dst, line->buf + line->start, take);
        line->start += take;
        dst += take;
        n -= take;
    }
    return 1;
}

/* The next frame; its payload malloc'd (one byte more, NUL). 1, 0 at EOF, -1 error. */
static int read_frame(line_t* line, int* kind, uint64_t* id, uint8_t** payload, size_t* size) {
    uint8_t h[HEADER_SIZE];
    int r = read_exact(line, h, HEADER_SIZE);
    if (r <= 0) return r;
    uint32_t n = ((uint32_t)h[0] << 24) | ((uint32_t)h[1] << 16) | ((uint32_t)h[2] << 8) | h[3];
    *kind = h[4];
    uint64_t v = 0;
    for (int i = 5; i < 13; i++) v = (v << 8) | h[i];
    *id = v;
    uint8_t* p = malloc((size_t)n + 1);
    if (!p) die("out of memory for a frame from the host", 0);
    r = read_exact(line, p, n);
    if (r <= 0) {
        free(p);
        return r;
    }
    p[n] = 0;
    *payload = p;
    *size = n;
    return 1;
}

/* Write one frame: the header and up to three parts, with as few syscalls as the kernel
 * allows. 0, or -1 when the host is gone. */
static int send_frame(int fd, int kind, uint64_t id, const struct iovec* parts, int count) {
    size_t size = 0;
    for (int i = 0; i < count; i++) size += parts[i].iov_len;
    uint8_t h[HEADER_SIZE] = {(uint8_t)(size >> 24), (uint8_t)(size >> 16), (uint8_t)(size >> 8),
                              (uint8_t)size, (uint8_t)kind};
    for (int i = 0; i < 8; i++) h[5 + i] = (uint8_t)(id >> (56 - 8 * i));
    struct iovec iov[4] = {{h, HEADER_SIZE}};
    for (int i = 0; i < count; i++) iov[i + 1] = parts[i];
    struct iovec* at = iov;
    int left = count + 1;
    while (left) {
        struct msghdr msg = {.msg_iov = at, .msg_iovlen = (size_t)left};
        ssize_t sent = sendmsg(fd, &msg, MSG_NOSIGNAL);
        if (sent < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        while (left && (size_t)sent >= at->iov_len) {
            sent -= (ssize_t)at->iov_len;
            at++;
            left--;
        }
        if (left) {
            at->iov_base = (uint8_t*)at->iov_base + sent;
            at->iov_len -= (size_t)sent;
        }
    }
    return 0;
}

static void send_or_die(int fd, int kind, uint64_t id, const struct iovec* parts, int count) {
    if (send_frame(fd, kind, id, parts, count) != 0) die("a call line broke", errno);
}

static const char FALLBACK_ERROR[] =
    "{\"type\":\"PluginCallFailed\",\"code\":\"plugin_call_failed\",\"message\":"
    "\"the worker could not describe a failed call\",\"retryable\":null,\"http_status\":null}";

/* Answer the call with the ERROR frame Python builds, exactly as NativePlugin words it. */
static void send_error(line_t* line, uint64_t id, int kind, const char* method, int rc,
                       const uint8_t* data, size_t len) {
    cw_buffer out = {0, 0};
    struct iovec part;
    if (g_error(kind, method, rc, data, len, &out) == 0 && out.ptr) {
        part = (struct iovec){out.ptr, out.len};
    } else {
        part = (struct iovec){(void*)FALLBACK_ERROR, sizeof FALLBACK_ERROR - 1};
    }
    send_or_die(line->fd, K_ERROR, id, &part, 1);
    free(out.ptr);
}

static void leave(void) {
    if (atomic_fetch_sub(&g_inflight, 1) == 1 && atomic_load(&g_closing)) {
        pthread_mutex_lock(&g_lock);
        pthread_cond_broadcast(&g_drained);
        pthread_mutex_unlock(&g_lock);
    }
}

static void run_call(line_t* line, uint64_t id, const char* method, const uint8_t* req,
                     size_t req_len) {
    /* In flight first, then the check: cw_drain sets closing before it counts. */
    atomic_fetch_add(&g_inflight, 1);
    if (atomic_load(&g_closing)) {
        leave();
        send_error(line, id, CW_ERR_UNLOADING, method, 0, NULL, 0);
        return;
    }
    cw_buffer resp = {0, 0};
    int rc = g_call(method, req, req_len, &resp);
    if (!resp.ptr) {
        if (resp.len) {
            send_error(line, id, CW_ERR_NULL_WITH_LEN, method, rc, NULL, resp.len);
        } else if (rc != 0) {
            send_error(line, id, CW_ERR_RC, method, rc, NULL, 0);
        } else {
            send_or_die(line->fd, K_RESULT, id, NULL, 0);
        }
    } else if (rc != 0) {
        send_error(line, id, CW_ERR_RC, method, rc, resp.ptr, resp.len);
        g_free(resp.ptr, resp.len);
    } else if (resp.len > g_max_response) {
        /* Refused here, before it crosses: the host must never have to take it in. */
        g_free(resp.ptr, resp.len);
        send_error(line, id, CW_ERR_TOO_LARGE, method, 0, NULL, resp.len);
    } else {
        struct iovec part = {resp.ptr, resp.len};
        int sent = send_frame(line->fd, K_RESULT, id, &part, 1);
        int err = errno;
        g_free(resp.ptr, resp.len);
        if (sent != 0) die("a call line broke", err);
    }
    leave();
}

static void* serve_line(void* arg) {
    line_t* line = arg;
    tls_line = line;
    char name[16];
    snprintf(name, sizeof name, "cw-line-%u", atomic_fetch_add(&g_serial, 1) + 1);
    pthread_setname_np(pthread_self(), name);
    /* Poll for the next call only while calls come within the spin time of the last
     * answer: an idle line sleeps. */
    int quick = 0;
    double answered = -1e300;
    char small[256];
    for (;;) {
        if (quick) spin(line);
        int kind;
        uint64_t id;
        uint8_t* payload;
        size_t size;
        int r = read_frame(line, &kind, &id, &payload, &size);
        if (r == 0) break; /* closed by the host: idle for too long */
        if (r < 0) die("a call line broke", errno);
        if (kind != K_CALL) die("a frame other than CALL on a call line", 0);
        if (size < 2) die("a call frame without a method", 0);
        size_t mlen = ((size_t)payload[0] << 8) | payload[1];
        if (size < 2 + mlen) die("a call frame shorter than its method name", 0);
        char* method = mlen < sizeof small ? small : malloc(mlen + 1);
        if (!method) die("out of memory for a method name", 0);
        memcpy(method, payload + 2, mlen);
        method[mlen] = 0;
        size_t req_len = size - 2 - mlen;
        quick = now_s() - answered <= g_spin_s;
        /* request may be NULL when request_len is 0, as in-process (cffi passes b"" so) */
        run_call(line, id, method, payload + 2 + mlen, req_len);
        answered = now_s();
        if (method != small) free(method);
        free(payload);
    }
    close(line->fd);
    free(line);
    return NULL;
}

static int control_send(int kind, uint64_t id, const struct iovec* parts, int count) {
    pthread_mutex_lock(&g_ctl_lock);
    int rc = send_frame(g_ctl_fd, kind, id, parts, count);
    pthread_mutex_unlock(&g_ctl_lock);
    return rc;
}

/* Send a frame on the control socket (READY, a load ERROR): 0, or -1 when the host is gone. */
int cw_control_send(int kind, uint64_t id, const uint8_t* payload, size_t len) {
    struct iovec part = {(void*)payload, len};
    return control_send(kind, id, &part, len ? 1 : 0);
}

/* A host call on the control socket, from a thread that serves no line: wait for the host's
 * answer (no timeout: the host answers every host call, or dies and the worker with it).
 * 0 with the answer in *response (malloc'd), or 1 when the host is gone. */
int cw_control_call(const char* method, const uint8_t* request, size_t request_len,
                    cw_buffer* response) {
    size_t mlen = strlen(method);
    if (mlen > 0xffff) mlen = 0xffff;
    waiter_t w = {.id = atomic_fetch_add(&g_ctl_ids, 1)};
    pthread_cond_init(&w.cond, NULL);
    pthread_mutex_lock(&g_wait_lock);
    w.next = g_waiters;
    g_waiters = &w;
    pthread_mutex_unlock(&g_wait_lock);
    uint8_t head[2] = {(uint8_t)(mlen >> 8), (uint8_t)mlen};
    struct iovec parts[3] = {{head, 2}, {(void*)method, mlen}, {(void*)request, request_len}};
    int sent = control_send(K_HOST_CALL, w.id, parts, request_len ? 3 : 2);
    pthread_mutex_lock(&g_wait_lock);
    if (sent == 0) {
        while (!w.done) pthread_cond_wait(&w.cond, &g_wait_lock);
    } else {
        for (waiter_t** at = &g_waiters; *at; at = &(*at)->next) {
            if (*at == &w) {
                *at = w.next;
                break;
            }
        }
    }
    pthread_mutex_unlock(&g_wait_lock);
    pthread_cond_destroy(&w.cond);
    response->ptr = sent == 0 ? w.payload : NULL;
    response->len = sent == 0 ? w.size : 0;
    return sent == 0 ? 0 : 1;
}

static void answered(uint64_t id, uint8_t* payload, size_t size) {
    pthread_mutex_lock(&g_wait_lock);
    for (waiter_t** at = &g_waiters; *at; at = &(*at)->next) {
        waiter_t* w = *at;
        if (w->id == id) {
            *at = w->next;
            w->payload = payload;
            w->size = size;
            w->done = 1;
            pthread_cond_signal(&w->cond);
            pthread_mutex_unlock(&g_wait_lock);
            return;
        }
    }
    pthread_mutex_unlock(&g_wait_lock);
    free(payload); /* nobody waits for it any more */
}

static double g_drain;

static void* run_shutdown(void* arg) {
    (void)arg;
    g_on_shutdown(g_drain);
    return NULL;
}

/* The control socket's reader: pings, the host's answers, shutdown. It never runs plugin
 * code, so a long call never delays a ping; at EOF (the host closed it or died) the
 * worker exits, nobody being left to answer to. */
static void* control_reader(void* arg) {
    line_t* ctl = arg;
    pthread_setname_np(pthread_self(), "cw-control");
    for (;;) {
        int kind;
        uint64_t id;
        uint8_t* payload;
        size_t size;
        int r = read_frame(ctl, &kind, &id, &payload, &size);
        if (r < 0) {
            fprintf(stderr, "worker for plugin %s: connection to the host broken: %s\n",
                    g_plugin_id, strerror(errno));
            fflush(stderr);
        }
        if (r <= 0) _exit(0);
        if (kind == 7 /* PING */) {
            free(payload);
            control_send(8 /* PONG */, id, NULL, 0);
        } else if (kind == K_HOST_RESULT) {
            answered(id, payload, size);
        } else if (kind == 9 /* SHUTDOWN */) {
            g_drain = strtod((const char*)payload, NULL);
            free(payload);
            /* On a thread of its own: pings and host answers go on while calls drain. */
            pthread_t thread;
            pthread_attr_t attr;
            pthread_attr_init(&attr);
            pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
            if (pthread_create(&thread, &attr, run_shutdown, NULL) != 0) g_on_shutdown(g_drain);
            pthread_attr_destroy(&attr);
        } else {
            fprintf(stderr, "worker for plugin %s: connection to the host broken: "
                    "unexpected frame kind %d from the host\n", g_plugin_id, kind);
            fflush(stderr);
            _exit(0);
        }
    }
    return NULL;
}

/* Read the control socket on a thread of the core from now on; 0 or an errno. */
int cw_control_start(int fd, const char* plugin_id, cw_shutdown_fn on_shutdown) {
    snprintf(g_plugin_id, sizeof g_plugin_id, "%s", plugin_id);
    g_on_shutdown = on_shutdown;
    line_t* ctl = malloc(sizeof *ctl);
    if (!ctl) return ENOMEM;
    ctl->fd = fd;
    ctl->start = ctl->end = 0;
    g_ctl_fd = fd;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_t thread;
    int err = pthread_create(&thread, &attr, control_reader, ctl);
    pthread_attr_destroy(&attr);
    if (err) {
        free(ctl);
        g_ctl_fd = -1;
    }
    return err;
}

/* The plugin's host->call. On a thread serving a line, the call travels on that line,
 * whose host end is the caller waiting for the call's answer; anywhere else (and for
 * whatever NativePlugin's trampoline refuses), the Python trampoline answers. */
int cw_host_call(void* ctx, const char* method, const uint8_t* request, size_t request_len,
                 cw_buffer* response) {
    line_t* line = tls_line;
    if (!response || !ctx || ctx != g_ctx || !method || (!request && request_len) ||
        (!line && g_ctl_fd < 0)) {
        return g_fallback(ctx, method, request, request_len, response);
    }
    if (!line) {
        int rc = cw_control_call(method, request, request_len, response);
        return rc == 0 ? 0 : g_fallback(ctx, method, request, request_len, response);
    }
    uint64_t id = atomic_fetch_add(&g_host_ids, 1);
    size_t mlen = strlen(method);
    if (mlen > 0xffff) return g_fallback(ctx, method, request, request_len, response);
    uint8_t head[2] = {(uint8_t)(mlen >> 8), (uint8_t)mlen};
    struct iovec parts[3] = {{head, 2}, {(void*)method, mlen}, {(void*)request, request_len}};
    send_or_die(line->fd, K_HOST_CALL, id, parts, request_len ? 3 : 2);
    spin(line);
    int kind;
    uint64_t answered;
    uint8_t* payload;
    size_t size;
    int r = read_frame(line, &kind, &answered, &payload, &size);
    if (r <= 0 || kind != K_HOST_RESULT || answered != id) {
        /* The host gave up on the call (it closes a line only then), or broke the
         * protocol: either way nobody waits for this call's answer any more. */
        fprintf(stderr, "worker for plugin %s: no answer to %s on its call line (%s)\n",
                g_plugin_id, method, r <= 0 ? "closed" : "another frame");
        fflush(stderr);
        _exit(1);
    }
    /* malloc'd and NUL-terminated, as the trampoline's strndup answers: free_buffer frees */
    response->ptr = payload;
    response->len = size;
    return 0;
}

void cw_host_free(void* ptr, size_t len) {
    (void)len;
    free(ptr);
}

int cw_setup(cw_call_fn call, cw_free_fn free_buffer, void* ctx, cw_host_fn fallback,
             cw_error_fn error, uint64_t max_response, int spin_us, const char* plugin_id) {
    g_call = call;
    g_free = free_buffer;
    g_ctx = ctx;
    g_fallback = fallback;
    g_error = error;
    g_max_response = max_response;
    g_spin_s = spin_us / 1e6;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    g_cpus = cpus > 0 ? cpus : 1;
    snprintf(g_plugin_id, sizeof g_plugin_id, "%s", plugin_id);
    return 0;
}

/* Serve a call line on a new thread, which owns fd from then on; or an errno, and fd is
 * still the caller's. */
int cw_serve_line(int fd) {
    line_t* line = malloc(sizeof *line);
    if (!line) return ENOMEM;
    line->fd = fd;
    line->start = line->end = 0;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_t thread;
    int err = pthread_create(&thread, &attr, serve_line, line);
    pthread_attr_destroy(&attr);
    if (err) free(line);
    return err;
}

/* Refuse new calls (they are answered as unloading) and wait up to `seconds` for those in
 * flight: 1 when none is left. */
int cw_drain(double seconds) {
    atomic_store(&g_closing, 1);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    double whole = seconds > 0 ? seconds : 0;
    until.tv_sec += (time_t)whole;
    until.tv_nsec += (long)((whole - (double)(time_t)whole) * 1e9);
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&g_lock);
    while (atomic_load(&g_inflight) > 0) {
        if (pthread_cond_timedwait(&g_drained, &g_lock, &until) == ETIMEDOUT) break;
    }
    int drained = atomic_load(&g_inflight) == 0;
    pthread_mutex_unlock(&g_lock);
    return drained;
}
