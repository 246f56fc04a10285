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
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
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
enum {
    CW_ERR_RC = 1,
    CW_ERR_NULL_WITH_LEN = 2,
    CW_ERR_TOO_LARGE = 3,
    CW_ERR_UNLOADING = 4,
    CW_ERR_BUSY = 5
};

#define HEADER_SIZE 13
#define READ_AHEAD 65536
#define WAKE_UP_ALLOWANCE_S 200e-6
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
static long g_cpus; /* 0: not looked up yet (cpus() does, in the worker and the host alike) */
static cpu_set_t g_allowed; /* the CPUs the worker may use, as it started */
static int g_have_allowed;
static _Atomic long g_cpu_checked_ms = -1000000;
static _Atomic int g_cpu_spare = 1;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- rings: a call line's frames in shared memory ----------------------------------------
 *
 * A line may carry a ring: a memfd the host maps and passes with the line's socket. Each
 * direction has one slot (a line carries one frame at a time each way: the worker answers
 * a CALL or sends a HOST_CALL, then waits), which the writer fills and publishes by
 * bumping the slot's sequence word; the reader polls that word for a moment (no syscall)
 * and then sleeps on it with futex_wait, and the writer calls futex_wake only when the
 * reader sleeps. A frame too large for the slot is announced in it (RING_ON_SOCKET) and
 * travels on the socket. Either end may close the ring: the CLOSED bit in both sequence
 * words, and both woken. */

#define RING_CAP (64 * 1024) /* one frame, header included, each way */
#define RING_ON_SOCKET 0xffffffffu
#define RING_CLOSED 0x80000000u
#define RING_COUNT 0x7fffffffu
/* A frame to the worker says how the host waits for the answer: polling (cpu -1), or asleep
 * on CPU `cpu`. A host that sleeps is answered fastest from its own CPU: the worker's line
 * thread moves there (its affinity set to that one CPU) and sleeps too, so each frame costs
 * a switch between two threads on one CPU rather than waking a halted CPU (~50 us on a
 * virtual machine, against ~4 us) or waiting for the scheduler on another. A host that
 * polls gets the thread back on every CPU it may use, to answer from another. */
#define HOST_POLLS (-1)

/* Within a spin, the first this-many seconds poll without a syscall; then the spin yields
 * the CPU between polls, in case the other end was woken on this very CPU. */
#define PURE_SPIN_S 5e-6

typedef struct {
    _Atomic uint32_t seq;      /* frames published (RING_COUNT bits), and RING_CLOSED */
    _Atomic uint32_t sleeping; /* the reader sleeps in futex_wait on seq */
    uint32_t len;              /* the frame's bytes in the slot, or RING_ON_SOCKET */
    uint32_t seen;             /* the reader's own: the count it took last */
    int32_t cpu;               /* to the worker: where the host sleeps on the answer (below) */
    uint32_t took_us;          /* to the host: how long the plugin took to answer the call */
    uint8_t pad[40];
} ring_dir_t;

typedef struct {
    ring_dir_t to_worker, to_host;
    uint8_t pad[4096 - 2 * sizeof(ring_dir_t)];
    uint8_t buf_to_worker[RING_CAP];
    uint8_t buf_to_host[RING_CAP];
} ring_t;

static long futex(_Atomic uint32_t* word, int op, uint32_t value, const struct timespec* t) {
    return syscall(SYS_futex, (uint32_t*)word, op, value, t, NULL, 0);
}

static void ring_post(ring_dir_t* d, uint32_t len) {
    d->len = len;
    uint32_t seq = atomic_load(&d->seq);
    while (!atomic_compare_exchange_weak(&d->seq, &seq,
                                         (seq & RING_CLOSED) | ((seq + 1) & RING_COUNT))) {
    }
    if (atomic_load(&d->sleeping)) futex(&d->seq, FUTEX_WAKE, INT_MAX, NULL);
}

static void ring_close(ring_t* ring) {
    atomic_fetch_or(&ring->to_worker.seq, RING_CLOSED);
    atomic_fetch_or(&ring->to_host.seq, RING_CLOSED);
    futex(&ring->to_worker.seq, FUTEX_WAKE, INT_MAX, NULL);
    futex(&ring->to_host.seq, FUTEX_WAKE, INT_MAX, NULL);
}

/* A hint to the CPU that this thread spins on a word (it eases off for its sibling, and
 * for the memory bus); nothing where the architecture has no such instruction. */
static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__) || (defined(__arm__) && defined(__ARM_ARCH) && __ARM_ARCH >= 7)
    __asm__ __volatile__("yield" ::: "memory");
#else
    atomic_signal_fence(memory_order_seq_cst);
#endif
}

/* How long the host sleeps on a ring before it looks at the line's socket: a worker that
 * died, or could not map the ring, closes the socket without a word on the ring. */
#define RING_WATCH_S 0.1

/* Wait for the next frame of d: polling for up to spin_s, then asleep for up to timeout_s
 * (< 0: no limit), looking at watch_fd (unless -1) every RING_WATCH_S. 1 a frame, 0
 * closed, -1 timed out, 2 watch_fd is readable or hung up. */
static int ring_wait(ring_dir_t* d, double spin_s, double timeout_s, int watch_fd) {
    uint32_t seen = d->seen, seq = atomic_load_explicit(&d->seq, memory_order_acquire);
    if ((seq & RING_COUNT) == seen && spin_s > 0) {
        double start = now_s(), end = start + spin_s;
        for (unsigned turn = 1;; turn++) {
            seq = atomic_load_explicit(&d->seq, memory_order_acquire);
            if ((seq & RING_COUNT) != seen || (seq & RING_CLOSED)) break;
            if ((turn & 63) == 0) {
                double t = now_s();
                if (t >= end) break;
                if (t - start > PURE_SPIN_S) sched_yield();
            }
            cpu_relax();
        }
    }
    double deadline = timeout_s < 0 ? -1 : now_s() + timeout_s;
    while ((seq & RING_COUNT) == seen) {
        if (seq & RING_CLOSED) return 0;
        atomic_store(&d->sleeping, 1);
        seq = atomic_load(&d->seq);
        if ((seq & RING_COUNT) != seen || (seq & RING_CLOSED)) break;
        struct timespec wait, *limit = NULL;
        double left = deadline >= 0 ? deadline - now_s() : -1;
        if (deadline >= 0 && left <= 0) {
            atomic_store(&d->sleeping, 0);
            return -1;
        }
        if (watch_fd >= 0 && (left < 0 || left > RING_WATCH_S)) left = RING_WATCH_S;
        if (left >= 0) {
            wait.tv_sec = (time_t)left;
            wait.tv_nsec = (long)((left - (double)wait.tv_sec) * 1e9);
            limit = &wait;
        }
        if (futex(&d->seq, FUTEX_WAIT, seq, limit) != 0 && errno == ETIMEDOUT && watch_fd >= 0) {
            struct pollfd p = {watch_fd, POLLIN, 0};
            if (poll(&p, 1, 0) > 0 && (atomic_load(&d->seq) & RING_COUNT) == seen) {
                atomic_store(&d->sleeping, 0);
                return 2;
            }
        }
        seq = atomic_load_explicit(&d->seq, memory_order_acquire);
    }
    atomic_store(&d->sleeping, 0);
    if ((seq & RING_COUNT) == seen) return 0; /* closed with nothing new */
    d->seen = seq & RING_COUNT;
    return 1;
}

/* Write a frame (header and parts) into a slot's buffer. */
static void ring_fill(uint8_t* at, int kind, uint64_t id, const struct iovec* parts, int count,
                      size_t size) {
    at[0] = (uint8_t)(size >> 24);
    at[1] = (uint8_t)(size >> 16);
    at[2] = (uint8_t)(size >> 8);
    at[3] = (uint8_t)size;
    at[4] = (uint8_t)kind;
    for (int i = 0; i < 8; i++) at[5 + i] = (uint8_t)(id >> (56 - 8 * i));
    at += HEADER_SIZE;
    for (int i = 0; i < count; i++) {
        memcpy(at, parts[i].iov_base, parts[i].iov_len);
        at += parts[i].iov_len;
    }
}

typedef struct {
    int fd;
    ring_t* ring; /* NULL: the frames travel on the socket */
    int cpu;      /* the one CPU this line's thread runs on, or HOST_POLLS: any it may */
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


/* Log to stderr (the host logs it with the plugin's ID) and exit: the host must not wait
 * for an answer that cannot come. */
static void die(const char* what, int err) {
    fprintf(stderr, "worker for plugin %s: %s%s%s\n", g_plugin_id, what, err ? ": " : "",
            err ? strerror(err) : "");
    fflush(stderr);
    _exit(1);
}

static long cpus(void) {
    if (g_cpus <= 0) {
        long online = sysconf(_SC_NPROCESSORS_ONLN);
        g_cpus = online > 0 ? online : 1;
    }
    return g_cpus;
}

/* Read a small /proc file into buf (NUL-terminated); its length, or -1. */
static ssize_t read_proc(const char* path, char* buf, size_t cap) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t got = read(fd, buf, cap - 1);
    close(fd);
    if (got < 0) return -1;
    buf[got] = 0;
    return got;
}

/* Microseconds some task has waited for a CPU since boot (/proc/pressure/cpu's "some"
 * total), or -1 where the kernel keeps no pressure. */
static long long stalled_us(void) {
    char buf[256];
    if (read_proc("/proc/pressure/cpu", buf, sizeof buf) <= 0) return -1;
    const char* total = strstr(buf, "total=");
    return total ? strtoll(total + 6, NULL, 10) : -1;
}

/* The tasks running (or ready to) right now, this thread among them: /proc/loadavg's
 * running count; -1 where it cannot be read. */
static long running_tasks(void) {
    char buf[128];
    if (read_proc("/proc/loadavg", buf, sizeof buf) <= 0) return -1;
    /* "0.50 0.40 0.30 3/250 1234": the fourth field is running/total */
    const char* at = buf;
    for (int field = 0; field < 3 && at; field++) {
        at = strchr(at, ' ');
        if (at) at++;
    }
    return at ? strtol(at, NULL, 10) : -1;
}

/* A CPU counts as spare while tasks waited for one at most this share of the time. */
#define STALLED_MAX 0.1

static pthread_mutex_t g_cpu_lock = PTHREAD_MUTEX_INITIALIZER;
static long long g_stalled_us = -1;
static double g_stalled_at;
static _Atomic int g_cpu_idle = 1;

/* Look at the CPUs again if the last look is over 50 ms old (spare_cpu, idle_cpu). */
static void look_at_cpus(void) {
    long now_ms = (long)(now_s() * 1000);
    if (now_ms - atomic_load(&g_cpu_checked_ms) < 50) return;
    if (pthread_mutex_trylock(&g_cpu_lock) != 0) return; /* another thread is looking */
    double now = now_s();
    long long stalled = stalled_us();
    long running = running_tasks();
    int spare = running < 0 || running <= cpus();
    if (!spare && stalled >= 0 && g_stalled_us >= 0) {
        spare = (double)(stalled - g_stalled_us) / 1e6 <= STALLED_MAX * (now - g_stalled_at);
    }
    g_stalled_us = stalled;
    g_stalled_at = now;
    atomic_store(&g_cpu_idle, running < 0 || running < cpus());
    atomic_store(&g_cpu_spare, spare);
    atomic_store(&g_cpu_checked_ms, now_ms);
    pthread_mutex_unlock(&g_cpu_lock);
}

/* Whether a CPU is spare to poll on (as cpu.py's spare_cpu, which says why): no more
 * tasks running than CPUs, or tasks waited for one less than STALLED_MAX of the time since
 * the last look (the kernel's CPU pressure). On a loaded machine a spinning thread takes
 * the CPU the other end needs to answer: there, sleeping is faster. */
static int spare_cpu(void) {
    look_at_cpus();
    return atomic_load(&g_cpu_spare);
}

/* Whether a CPU is idle, as far as the last look saw: fewer tasks running than CPUs (the
 * one looking among them). A sleeper is woken on an idle CPU where there is one. */
static int idle_cpu(void) {
    look_at_cpus();
    return atomic_load(&g_cpu_idle);
}

/* Poll fd for up to seconds without sleeping. Between polls the CPU is yielded: the other
 * end may have been woken on this very CPU, and a spin that kept it would only delay the
 * answer it waits for. */
static void spin_fd(int fd, double seconds) {
    if (seconds <= 0) return;
    struct pollfd p = {fd, POLLIN, 0};
    double end = now_s() + seconds;
    while (poll(&p, 1, 0) == 0) {
        if (now_s() >= end) return;
        sched_yield();
    }
}

/* Poll a line for up to g_spin_s: a cross-CPU wake-up costs more than a small call, and an
 * answer expected within microseconds is cheaper to watch for. */
static void spin(line_t* line) {
    if (g_spin_s <= 0 || line->end > line->start || !spare_cpu()) return;
    spin_fd(line->fd, g_spin_s);
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


/* Send a frame on a line: in its ring when it has one and the frame fits, else announced
 * there and sent on the socket. 0, or -1 (errno) when the host is gone. */
static int line_send(line_t* line, int kind, uint64_t id, const struct iovec* parts, int count) {
    ring_t* ring = line->ring;
    if (ring) {
        size_t size = 0;
        for (int i = 0; i < count; i++) size += parts[i].iov_len;
        if (HEADER_SIZE + size <= RING_CAP) {
            ring_fill(ring->buf_to_host, kind, id, parts, count, size);
            ring_post(&ring->to_host, (uint32_t)(HEADER_SIZE + size));
            return 0;
        }
        ring_post(&ring->to_host, RING_ON_SOCKET);
    }
    return send_frame(line->fd, kind, id, parts, count);
}

static void line_send_or_die(line_t* line, int kind, uint64_t id, const struct iovec* parts,
                             int count) {
    if (line_send(line, kind, id, parts, count) != 0) die("a call line broke", errno);
}

/* Run the line's thread where the host waits (see HOST_POLLS): on `cpu` alone, or on any
 * CPU the worker may use. A CPU the worker may not use (another cpuset), or a failed
 * syscall, leaves the thread to the scheduler. */
static void follow_host(line_t* line, int cpu) {
    if (cpu != HOST_POLLS && (!g_have_allowed || cpu < 0 || cpu >= CPU_SETSIZE ||
                              !CPU_ISSET(cpu, &g_allowed))) {
        cpu = HOST_POLLS;
    }
    /* Only a line's own thread moves (a line refused is read on the worker's thread). */
    if (cpu == line->cpu || !g_have_allowed || tls_line != line) return;
    cpu_set_t set = g_allowed;
    if (cpu != HOST_POLLS) {
        CPU_ZERO(&set);
        CPU_SET(cpu, &set);
    }
    if (sched_setaffinity(0, sizeof set, &set) == 0) {
        line->cpu = cpu;
    } else if (sched_setaffinity(0, sizeof g_allowed, &g_allowed) == 0) {
        line->cpu = HOST_POLLS;
    }
}

/* The next frame from the host on a line, polled for up to spin_s first; as read_frame. */
static int line_read(line_t* line, double spin_s, double timeout_s, int watch_fd, int* kind,
                     uint64_t* id, uint8_t** payload, size_t* size) {
    ring_t* ring = line->ring;
    if (!ring) {
        if (spin_s > 0) spin(line);
        return read_frame(line, kind, id, payload, size);
    }
    /* Polled only while the host polls too (the callers pass 0 otherwise): the host
     * judged a CPU spare for it, and a judgement of the worker's own could only differ
     * by when it looked. */
    if (ring_wait(&ring->to_worker, spin_s, timeout_s, watch_fd) != 1) return 0;
    follow_host(line, ring->to_worker.cpu);
    uint32_t len = ring->to_worker.len;
    if (len == RING_ON_SOCKET) return read_frame(line, kind, id, payload, size);
    const uint8_t* h = ring->buf_to_worker;
    uint32_t n = ((uint32_t)h[0] << 24) | ((uint32_t)h[1] << 16) | ((uint32_t)h[2] << 8) | h[3];
    if (len < HEADER_SIZE || len > RING_CAP || (size_t)n + HEADER_SIZE != len) {
        die("a broken frame in a call line's shared memory", 0);
    }
    *kind = h[4];
    uint64_t v = 0;
    for (int i = 5; i < 13; i++) v = (v << 8) | h[i];
    *id = v;
    /* Copied out: the slot takes the host's next frame (an answer to a host call) while
     * the plugin may still read this request. */
    uint8_t* p = malloc((size_t)n + 1);
    if (!p) die("out of memory for a frame from the host", 0);
    memcpy(p, h + HEADER_SIZE, n);
    p[n] = 0;
    *payload = p;
    *size = n;
    return 1;
}

/* A line's end: its ring closed (whoever waits on it wakes) and unmapped, its socket closed. */
/* Let go of this process's hold on a line (its mapping, its descriptor), leaving the ring
 * as it is: the other end is not told. */
static void line_unmap(line_t* line) {
    if (line->ring) munmap(line->ring, sizeof(ring_t));
    close(line->fd);
    free(line);
}

static void line_free(line_t* line) {
    if (line->ring) ring_close(line->ring);
    line_unmap(line);
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
    line_send_or_die(line, K_ERROR, id, &part, 1);
    free(out.ptr);
}

static void leave(void) {
    if (atomic_fetch_sub(&g_inflight, 1) == 1 && atomic_load(&g_closing)) {
        pthread_mutex_lock(&g_lock);
        pthread_cond_broadcast(&g_drained);
        pthread_mutex_unlock(&g_lock);
    }
}

static volatile int g_forked; /* in a child the plugin forked (see mark_forked) */

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
    double began = now_s();
    int rc = g_call(method, req, req_len, &resp);
    /* A child the plugin forked during the call, returning from it as its parent does:
     * the answer is the parent's to send, on a line the child only shares. */
    if (g_forked) _exit(0);
    if (line->ring) {
        /* The method's own time, which its wake-ups do not blur: the host decides by it
         * whether the next call of the method is worth polling for. */
        double took_us = (now_s() - began) * 1e6;
        line->ring->to_host.took_us = took_us < 4e9 ? (uint32_t)took_us : UINT32_MAX;
    }
    if (!resp.ptr) {
        if (resp.len) {
            send_error(line, id, CW_ERR_NULL_WITH_LEN, method, rc, NULL, resp.len);
        } else if (rc != 0) {
            send_error(line, id, CW_ERR_RC, method, rc, NULL, 0);
        } else {
            line_send_or_die(line, K_RESULT, id, NULL, 0);
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
        int sent = line_send(line, K_RESULT, id, &part, 1);
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
    /* Poll for the next call only while calls come quickly (see below): an idle line
     * sleeps. A poll lasts the spin time and the wake-up allowance: a caller's own work
     * between two calls on a slow machine outlasts the spin time alone. */
    int quick = 0;
    double answered = -1e300;
    char small[256];
    for (;;) {
        int kind;
        uint64_t id;
        uint8_t* payload;
        size_t size;
        double poll_s = quick ? g_spin_s + WAKE_UP_ALLOWANCE_S : 0;
        int r = line_read(line, poll_s, -1, -1, &kind, &id, &payload, &size);
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
        /* Poll for the next call only while the host polls too (a host that sleeps does
         * on this CPU, which a poll would only keep from it), and calls come quickly: two
         * wake-ups across CPUs allowed (WAKE_UP_ALLOWANCE_S), or one late call would make
         * this end sleep for good. */
        quick = line->cpu == HOST_POLLS && now_s() - answered <= g_spin_s + WAKE_UP_ALLOWANCE_S;
        /* request may be NULL when request_len is 0, as in-process (cffi passes b"" so) */
        run_call(line, id, method, payload + 2 + mlen, req_len);
        answered = now_s();
        if (method != small) free(method);
        free(payload);
    }
    line_free(line);
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
    ctl->ring = NULL;
    ctl->cpu = HOST_POLLS;
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

/* ---- thread lines: host calls from the plugin's own threads ----------------------------
 *
 * A thread that serves no line would call the host on the control socket, whose answers
 * reach it through the control reader: four wake-ups a call, two in each process. Instead,
 * its second host call opens a line of its own (a socket pair and a ring the worker makes,
 * sealed at its size), passes the host's ends over the lines socket and announces them on
 * the control socket (THREAD_LINE); the host serves the line on a thread of its own that
 * answers each host call where it reads it. The line lasts as long as the thread (a key's
 * destructor closes it). Its first host call goes on the control socket: opening a line
 * costs a few of those, which a thread that calls the host once would pay in full. At
 * most THREAD_LINES_MAX threads have one; the others, and any thread whose line could
 * not be made or was refused, use the control socket. */

#define THREAD_LINES_MAX 16
#define K_THREAD_LINE 10
#define RING_SEALS (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)

static _Atomic int g_lines_fd = -1; /* the lines socket, open for the worker's life */
static pthread_key_t g_thread_key;
static _Atomic int g_thread_lines;
static pthread_mutex_t g_lines_lock = PTHREAD_MUTEX_INITIALIZER;
static _Thread_local int tls_no_thread_line;
static _Thread_local int tls_called_host; /* this thread called the host before */

static void thread_line_end(void* arg) {
    line_t* line = arg;
    if (g_forked) {
        /* A child's thread that the fork copied with its parent's line: the line stays
         * the parent's, open; only the child's mapping and descriptor go. */
        line_unmap(line);
        return;
    }
    line_free(line); /* the ring closed: the host's thread serving it ends */
    atomic_fetch_sub(&g_thread_lines, 1);
}

/* Let the plugin's threads open thread lines, passed over `fd` (the lines socket, which
 * the worker keeps open as long as it runs). 0, or an errno. */
int cw_thread_lines(int fd) {
    if (atomic_load(&g_lines_fd) >= 0) return 0;
    int err = pthread_key_create(&g_thread_key, thread_line_end);
    if (err) return err;
    atomic_store(&g_lines_fd, fd);
    return 0;
}

/* Pass the host its ends of a new line (socket `theirs`, ring memfd `ring_fd`), then
 * announce it: 0, or -1. */
static int pass_thread_line(int theirs, int ring_fd) {
    char tag = 'T';
    struct iovec iov = {&tag, 1};
    union {
        struct cmsghdr header;
        char space[CMSG_SPACE(2 * sizeof(int))];
    } control;
    memset(&control, 0, sizeof control);
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.space,
                         .msg_controllen = sizeof control.space};
    struct cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(2 * sizeof(int));
    int fds[2] = {theirs, ring_fd};
    memcpy(CMSG_DATA(c), fds, sizeof fds);
    /* Under one lock, so that the announcements come in the order of the fds. */
    pthread_mutex_lock(&g_lines_lock);
    ssize_t sent;
    do {
        sent = sendmsg(atomic_load(&g_lines_fd), &msg, MSG_NOSIGNAL);
    } while (sent < 0 && errno == EINTR);
    int rc = sent == 1 ? control_send(K_THREAD_LINE, 0, NULL, 0) : -1;
    pthread_mutex_unlock(&g_lines_lock);
    return rc;
}

/* This thread's line, opened on its second host call; NULL: it has none (the control
 * socket carries its host calls). */
static line_t* thread_line(void) {
    if (tls_no_thread_line || atomic_load(&g_lines_fd) < 0) return NULL;
    line_t* line = pthread_getspecific(g_thread_key);
    if (line) return line;
    if (!tls_called_host) {
        tls_called_host = 1;
        return NULL;
    }
    if (atomic_fetch_add(&g_thread_lines, 1) >= THREAD_LINES_MAX) {
        atomic_fetch_sub(&g_thread_lines, 1);
        return NULL; /* tried again on the next call: a thread may have ended by then */
    }
    tls_no_thread_line = 1; /* until the line is made: a failure is not retried */
    int pair[2] = {-1, -1};
    int ring_fd = memfd_create("cliproxy-thread-line", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    void* ring = MAP_FAILED;
    if (ring_fd >= 0 && ftruncate(ring_fd, sizeof(ring_t)) == 0 &&
        fcntl(ring_fd, F_ADD_SEALS, RING_SEALS) == 0) {
        ring = mmap(NULL, sizeof(ring_t), PROT_READ | PROT_WRITE, MAP_SHARED, ring_fd, 0);
    }
    line = ring == MAP_FAILED ? NULL : malloc(sizeof *line);
    if (line && socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) == 0 &&
        pass_thread_line(pair[1], ring_fd) == 0) {
        close(pair[1]);
        close(ring_fd);
        line->fd = pair[0];
        line->ring = ring;
        line->cpu = HOST_POLLS;
        line->start = line->end = 0;
        if (pthread_setspecific(g_thread_key, line) == 0) {
            tls_no_thread_line = 0;
            return line;
        }
        thread_line_end(line);
        return NULL;
    }
    if (pair[0] >= 0) close(pair[0]);
    if (pair[1] >= 0) close(pair[1]);
    if (ring_fd >= 0) close(ring_fd);
    if (ring != MAP_FAILED) munmap(ring, sizeof(ring_t));
    free(line);
    atomic_fetch_sub(&g_thread_lines, 1);
    return NULL;
}

/* A host call on `line` (this thread's call line, or its thread line): 0 answered, 1 the
 * thread line was closed before the host took the call (it may go on the control socket). */
static int line_host_call(line_t* line, int own, const char* method, const uint8_t* request,
                          size_t request_len, cw_buffer* response) {
    uint64_t id = atomic_fetch_add(&g_host_ids, 1);
    size_t mlen = strlen(method);
    uint8_t head[2] = {(uint8_t)(mlen >> 8), (uint8_t)mlen};
    struct iovec parts[3] = {{head, 2}, {(void*)method, mlen}, {(void*)request, request_len}};
    int count = request_len ? 3 : 2;
    /* A host that sleeps on this CPU answers only once this thread sleeps: no poll then.
     * On a thread line the host's thread polls while a CPU is spare, and so does this. */
    double poll_s = own ? (spare_cpu() ? g_spin_s : 0) : (line->cpu == HOST_POLLS ? g_spin_s : 0);
    int kind = 0, r = 0;
    uint64_t answered = 0;
    uint8_t* payload = NULL;
    size_t size = 0;
    if (line_send(line, K_HOST_CALL, id, parts, count) == 0) {
        /* A thread line also watches its socket: a host that could not map the ring only
         * hangs up. */
        r = line_read(line, poll_s, -1, own ? line->fd : -1, &kind, &answered, &payload, &size);
    } else if (!own) {
        die("a call line broke", errno);
    }
    if (r == 1 && kind == K_HOST_RESULT && answered == id) {
        /* malloc'd and NUL-terminated, as the trampoline's strndup answers: free_buffer frees */
        response->ptr = payload;
        response->len = size;
        return 0;
    }
    if (own && r <= 0) {
        ring_dir_t* out = &line->ring->to_host;
        if (out->seen != (atomic_load(&out->seq) & RING_COUNT)) return 1; /* never taken */
    }
    /* The host gave up on the call (it closes a line only then), or broke the protocol:
     * either way nobody waits for this call's answer any more. */
    fprintf(stderr, "worker for plugin %s: no answer to %s on its %s line (%s)\n", g_plugin_id,
            method, own ? "thread" : "call", r <= 0 ? "closed" : "another frame");
    fflush(stderr);
    _exit(1);
}

/* ---- a child the plugin forked ---------------------------------------------------------
 *
 * A plugin that forks without exec leaves its child the worker's call lines, thread lines,
 * control socket and rings: a host call from the child would put its frames among the
 * parent's, or wait for an answer that only the parent's threads can read. The child is
 * answered an error at once, in C (the worker's Python may be held by a thread the child
 * does not have). */

static void mark_forked(void) { g_forked = 1; }

/* `text` as the inside of a JSON string, at most `max` of its bytes (non-ASCII as '?'). */
static size_t json_inside(char* out, const char* text, size_t max) {
    size_t n = 0;
    for (size_t i = 0; text[i] && i < max; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c == '"' || c == '\\') {
            out[n++] = '\\';
            out[n++] = (char)c;
        } else if (c < 0x20) {
            n += (size_t)sprintf(out + n, "\\u%04x", c);
        } else {
            out[n++] = c < 0x80 ? (char)c : '?';
        }
    }
    out[n] = 0;
    return n;
}

#define FORKED_NAME_MAX 128

static int forked_host_call(const char* method, cw_buffer* response) {
    char id[6 * FORKED_NAME_MAX + 1], name[6 * FORKED_NAME_MAX + 1];
    json_inside(id, g_plugin_id, FORKED_NAME_MAX);
    json_inside(name, method, FORKED_NAME_MAX);
    const char* format =
        "{\"ok\":false,\"error\":{\"code\":\"host_call_failed\",\"message\":\"plugin %s: "
        "host call %s from a process the plugin forked: the host answers only the worker it "
        "started, whose lines a forked child shares; call the host from the worker itself, "
        "and exec a program in the child\"}}";
    int len = snprintf(NULL, 0, format, id, name);
    char* envelope = len > 0 ? malloc((size_t)len + 1) : NULL;
    if (!envelope) return 1;
    snprintf(envelope, (size_t)len + 1, format, id, name);
    response->ptr = envelope;
    response->len = (size_t)len;
    return 0;
}

/* The plugin's host->call. On a thread serving a line, the call travels on that line,
 * whose host end is the caller waiting for the call's answer; on another thread, on that
 * thread's own line (see thread_line) or the control socket; and for whatever
 * NativePlugin's trampoline refuses, the Python trampoline answers. */
int cw_host_call(void* ctx, const char* method, const uint8_t* request, size_t request_len,
                 cw_buffer* response) {
    if (g_forked) {
        if (!response || !ctx || ctx != g_ctx || !method) return 1;
        return forked_host_call(method, response);
    }
    line_t* line = tls_line;
    if (!response || !ctx || ctx != g_ctx || !method || (!request && request_len) ||
        (!line && g_ctl_fd < 0) || strlen(method) > 0xffff) {
        return g_fallback(ctx, method, request, request_len, response);
    }
    if (line) return line_host_call(line, 0, method, request, request_len, response);
    line_t* own = thread_line();
    if (own) {
        if (line_host_call(own, 1, method, request, request_len, response) == 0) return 0;
        /* Refused (or the host could not take it): this thread goes on the control socket. */
        pthread_setspecific(g_thread_key, NULL);
        thread_line_end(own);
        tls_no_thread_line = 1;
    }
    int rc = cw_control_call(method, request, request_len, response);
    return rc == 0 ? 0 : g_fallback(ctx, method, request, request_len, response);
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
    g_have_allowed = sched_getaffinity(0, sizeof g_allowed, &g_allowed) == 0;
    snprintf(g_plugin_id, sizeof g_plugin_id, "%s", plugin_id);
    static int watching_forks;
    g_forked = 0;
    /* (only ENOMEM fails it: the worker would then not be starting either) */
    if (!watching_forks && pthread_atfork(NULL, NULL, mark_forked) == 0) watching_forks = 1;
    return 0;
}

/* How long a line the worker has no thread for waits for its first call, to refuse it. */
#define REFUSE_WAIT_S 2.0

/* No thread for a line: answer its first call BUSY (the host then closes it), then close it. */
static void refuse_line(line_t* line, int err) {
    struct timeval wait = {(time_t)REFUSE_WAIT_S, 0};
    setsockopt(line->fd, SOL_SOCKET, SO_RCVTIMEO, &wait, sizeof wait);
    int kind;
    uint64_t id;
    uint8_t* payload;
    size_t size;
    if (line_read(line, 0, REFUSE_WAIT_S, -1, &kind, &id, &payload, &size) == 1) {
        size_t mlen = size >= 2 ? ((size_t)payload[0] << 8) | payload[1] : 0;
        char method[256];
        snprintf(method, sizeof method, "%.*s", (int)(mlen + 2 <= size ? mlen : 0),
                 (const char*)payload + 2);
        if (kind == K_CALL) send_error(line, id, CW_ERR_BUSY, method, err, NULL, 0);
        free(payload);
    }
    line_free(line);
}

/* Serve a call line on a new thread, which owns fd from then on (and ring_fd, the line's
 * ring as a memfd, or -1). 0, or an errno: the line could not be served, and was refused
 * (its first call answered BUSY) or, without memory for it, closed. */
int cw_serve_line(int fd, int ring_fd) {
    ring_t* ring = NULL;
    if (ring_fd >= 0) {
        void* mapped = mmap(NULL, sizeof(ring_t), PROT_READ | PROT_WRITE, MAP_SHARED, ring_fd, 0);
        int err = errno;
        close(ring_fd);
        if (mapped == MAP_FAILED) {
            close(fd); /* the host sees the line hang up before its call was taken */
            return err;
        }
        ring = mapped;
    }
    line_t* line = malloc(sizeof *line);
    if (!line) {
        if (ring) munmap(ring, sizeof(ring_t));
        close(fd);
        return ENOMEM;
    }
    line->fd = fd;
    line->ring = ring;
    line->cpu = HOST_POLLS;
    line->start = line->end = 0;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_t thread;
    int err = pthread_create(&thread, &attr, serve_line, line);
    pthread_attr_destroy(&attr);
    if (err) refuse_line(line, err);
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

/* ---- the host's end of a call line ------------------------------------------------------
 *
 * The host process loads this library too (host_core.py) and makes each exchange on a
 * call line here, with the GIL released once: send one frame (a CALL, or a HOST_RESULT),
 * then wait for the worker's next frame and copy it into buf. With a ring, both travel in
 * shared memory (the socket only for frames too large for a slot); without one, on the
 * socket, polled for up to spin_s (yielding the CPU between polls) before sleeping.
 * Only one frame can be on its way: the worker sends one and waits for the host. */

enum { CX_OK = 0, CX_SEND_TIMEOUT = 1, CX_SEND_FAILED = 2, CX_RECV_TIMEOUT = 3,
       CX_RECV_FAILED = 4, CX_EOF = 5, CX_PROTOCOL = 6 };

size_t cw_ring_size(void) { return sizeof(ring_t); }

/* Map the ring of a memfd of cw_ring_size() bytes (the fd stays the caller's); NULL on error. */
void* cw_ring_open(int fd) {
    void* mapped = mmap(NULL, sizeof(ring_t), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    return mapped == MAP_FAILED ? NULL : mapped;
}

/* Close a ring for both ends (whoever waits on it wakes, and sees it closed). */
void cw_ring_abort(void* ring) { ring_close(ring); }

void cw_ring_unmap(void* ring) { munmap(ring, sizeof(ring_t)); }

/* Read a frame's first bytes from the socket into buf: all of it when it fits in cap, else
 * at least its header (the caller reads the rest). A CX_* code. */
static int recv_frame_start(int fd, char* buf, size_t cap, long* got, int* err) {
    size_t have = 0, want = HEADER_SIZE;
    while (have < want) {
        ssize_t n = recv(fd, buf + have, cap - have, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            *err = errno;
            *got = (long)have;
            return errno == EAGAIN || errno == EWOULDBLOCK ? CX_RECV_TIMEOUT : CX_RECV_FAILED;
        }
        if (n == 0) {
            *got = (long)have;
            return CX_EOF;
        }
        have += (size_t)n;
        if (want == HEADER_SIZE && have >= HEADER_SIZE) {
            const uint8_t* h = (const uint8_t*)buf;
            size_t size = ((size_t)h[0] << 24) | ((size_t)h[1] << 16) | ((size_t)h[2] << 8) | h[3];
            want = HEADER_SIZE + size;
            if (want > cap) want = cap; /* the caller reads the rest */
        }
    }
    *got = (long)have;
    return CX_OK;
}

/* A host thread asleep on a ring is woken where the kernel finds an idle CPU, and waking
 * an idle CPU is what costs most on a virtual machine (~50 us). So while a CPU is idle,
 * the host's thread stays on its CPU for the wait (its affinity set to that CPU, and put
 * back after; ~5.5 us of syscalls), where the worker's thread answers it (follow_host).
 * Where no CPU is idle (a loaded machine, or as many calls in flight as CPUs, each CPU
 * taking turns between a caller and its line's thread) the kernel wakes the caller where
 * it slept: held there, it would only miss a turn on another CPU, and the syscalls are
 * saved. */
typedef struct {
    int held; /* the CPU the thread is held on, or -1 */
    cpu_set_t before;
} host_stay_t;

/* How many host threads are held on each CPU: a caller whose CPU already holds another's
 * call moves to a CPU that holds none, so that concurrent calls each have a CPU for the
 * caller and the worker's thread that take turns on it, rather than two pairs on one CPU
 * while another idles. */
#define HELD_CPUS 1024
static _Atomic int g_held[HELD_CPUS];

/* The CPU the host sleeps on (HOST_POLLS if unknown), held there while a CPU is idle. */
static int host_stay(host_stay_t* stay) {
    stay->held = -1;
    int cpu = sched_getcpu();
    if (cpu < 0 || cpu >= HELD_CPUS) return HOST_POLLS;
    if (!idle_cpu() || sched_getaffinity(0, sizeof stay->before, &stay->before) != 0) return cpu;
    int target = cpu;
    if (atomic_load(&g_held[cpu]) > 0) {
        for (int other = 0; other < HELD_CPUS && other < CPU_SETSIZE; other++) {
            if (CPU_ISSET(other, &stay->before) && atomic_load(&g_held[other]) == 0) {
                target = other;
                break;
            }
        }
    }
    cpu_set_t here;
    CPU_ZERO(&here);
    CPU_SET(target, &here);
    if (sched_setaffinity(0, sizeof here, &here) != 0) return cpu;
    atomic_fetch_add(&g_held[target], 1);
    stay->held = target;
    return target;
}

static void host_go(host_stay_t* stay) {
    if (stay->held < 0) return;
    atomic_fetch_sub(&g_held[stay->held], 1);
    sched_setaffinity(0, sizeof stay->before, &stay->before);
    stay->held = -1;
}

/* Send a frame of kind/id whose payload is head then body; then the next frame's first
 * bytes into buf (see recv_frame_start). timeout_s (< 0: none) bounds the wait on a ring;
 * on the socket, its SO_RCVTIMEO does. *got: the bytes in buf. A CX_* code; errno in *err.
 * *took: when the next frame answers a call on a ring, the seconds the plugin took for it
 * (the worker's measure); else -1 or meaningless. */
static int exchange(ring_t* ring, int fd, int kind, uint64_t id, const char* head,
                    size_t head_len, const char* body, size_t body_len, double spin_s,
                    double timeout_s, char* buf, size_t cap, long* got, int* err, double* took);

/* The host's threads waiting in an exchange right now. */
static _Atomic long g_host_waiting;

/* ---- callers and the interpreter lock ---------------------------------------------------
 *
 * A caller whose answer came returns into Python, which takes the interpreter lock (the
 * GIL). If another caller is running its Python between two exchanges at that moment, the
 * lock is held: the returning caller sleeps on it, its CPU goes idle (the worker's thread
 * there waits for its next call), and when the other lets the lock go (entering its next
 * exchange) the sleeper is woken on that idle CPU, which on a virtual machine costs ~50 us
 * more; with two callers on two CPUs about one call in ten met another's Python so, and
 * each time a CPU stood idle for ~70 us (perf sched, bench/HISTORY.md). So a returning
 * caller that sees another between two exchanges (it left its last one less than hold_s
 * ago) polls until that one enters its next exchange, for up to hold_s, and returns then:
 * the lock is free, and nobody sleeps on it. Only while the callers between or in
 * exchanges are no more than the CPUs (with more, a CPU polled on is one another caller's
 * call could run on), and not for a while after a hold that ran out. A thread that left
 * its last exchange longer ago is doing something else, and is not waited for. Each
 * caller thread has a slot (CALLERS_MAX of them, freed when the thread ends); a thread
 * without one neither waits nor is waited for. */
#define CALLERS_MAX 64
static _Atomic uint64_t g_left_ns[CALLERS_MAX]; /* when the slot's caller left its last
                                                 * exchange; 0 while it is in one */
static _Atomic int g_slot_taken[CALLERS_MAX];
static _Atomic int g_slots_seen; /* the slots below this were taken at some time */
static pthread_key_t g_caller_key;
static pthread_once_t g_caller_once = PTHREAD_ONCE_INIT;
static int g_caller_key_ok;
static _Thread_local int tls_caller_slot = -1; /* -1 not looked up, CALLERS_MAX none */
/* After a hold that ran out, none until then (ns): on a loaded machine the one waited for
 * waits for a CPU itself, and a CPU polled on is one another process could run on. */
#define HOLD_OFF_NS 20000000u
static _Atomic uint64_t g_hold_off_until;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void caller_end(void* arg) {
    int slot = (int)(intptr_t)arg - 1;
    atomic_store(&g_left_ns[slot], 0);
    atomic_store(&g_slot_taken[slot], 0);
}

static void caller_key_make(void) {
    g_caller_key_ok = pthread_key_create(&g_caller_key, caller_end) == 0;
}

/* This thread's slot, taken on its first exchange; CALLERS_MAX: none. */
static int caller_slot(void) {
    if (tls_caller_slot >= 0) return tls_caller_slot;
    tls_caller_slot = CALLERS_MAX;
    pthread_once(&g_caller_once, caller_key_make);
    if (!g_caller_key_ok) return CALLERS_MAX;
    for (int slot = 0; slot < CALLERS_MAX; slot++) {
        int free_slot = 0;
        if (!atomic_compare_exchange_strong(&g_slot_taken[slot], &free_slot, 1)) continue;
        if (pthread_setspecific(g_caller_key, (void*)(intptr_t)(slot + 1)) != 0) {
            atomic_store(&g_slot_taken[slot], 0);
            return CALLERS_MAX;
        }
        int seen = atomic_load(&g_slots_seen);
        while (seen <= slot && !atomic_compare_exchange_weak(&g_slots_seen, &seen, slot + 1)) {
        }
        tls_caller_slot = slot;
        return slot;
    }
    return CALLERS_MAX;
}

/* Before the caller in slot `me` returns into Python: while another caller is between two
 * exchanges (likely holding the interpreter lock), poll until it enters its next one, for
 * up to hold_s (see above). */
static void wait_for_python(int me, double hold_s) {
    uint64_t hold = (uint64_t)(hold_s * 1e9), now = now_ns();
    int seen = atomic_load(&g_slots_seen), active = 1, between = 0;
    for (int other = 0; other < seen; other++) {
        if (other == me || !atomic_load(&g_slot_taken[other])) continue;
        uint64_t left = atomic_load(&g_left_ns[other]);
        if (left == 0) {
            active++;
        } else if (now >= left && now - left <= hold) {
            active++;
            between++;
        }
    }
    if (!between || active > cpus() || now < atomic_load(&g_hold_off_until)) return;
    uint64_t start = now;
    for (int other = 0; other < seen; other++) {
        if (other == me) continue;
        for (unsigned turn = 1;; turn++) {
            uint64_t left = atomic_load_explicit(&g_left_ns[other], memory_order_acquire);
            if (left == 0) break;
            now = now_ns();
            if (now < left || now - left > hold) break;
            if (now - start > hold) {
                /* The other did not get there in time: it waits for a CPU (a loaded
                 * machine), or does something else. No holding for a while. */
                atomic_store(&g_hold_off_until, now + HOLD_OFF_NS);
                return;
            }
            /* The one waited for may be waiting for this very CPU. */
            if ((turn & 63) == 0 && (double)(now - start) / 1e9 > PURE_SPIN_S) sched_yield();
            cpu_relax();
        }
    }
}

int cw_exchange(void* ring, int fd, int kind, uint64_t id, const char* head, size_t head_len,
                const char* body, size_t body_len, double spin_s, double timeout_s, char* buf,
                size_t cap, long* got, int* err, double* took, double hold_s) {
    /* Each call in flight keeps a CPU busy in the worker, and a caller that polls takes
     * another: with more callers waiting than that leaves CPUs for, they sleep, and the
     * worker's threads have the CPUs. Answered, the caller waits up to hold_s (0: not at
     * all) for another caller's Python between two exchanges (wait_for_python). */
    int me = caller_slot();
    if (me < CALLERS_MAX) atomic_store(&g_left_ns[me], 0);
    long waiting = atomic_fetch_add(&g_host_waiting, 1) + 1;
    if (2 * waiting > cpus()) spin_s = 0;
    int code = exchange(ring, fd, kind, id, head, head_len, body, body_len, spin_s, timeout_s,
                        buf, cap, got, err, took);
    atomic_fetch_sub(&g_host_waiting, 1);
    if (code == CX_OK && hold_s > 0 && me < CALLERS_MAX) wait_for_python(me, hold_s);
    if (me < CALLERS_MAX) atomic_store_explicit(&g_left_ns[me], now_ns(), memory_order_release);
    return code;
}

/* Post a frame to the worker: into the ring when it fits, else announced there and sent on
 * the socket. CX_OK, or a CX_SEND_* code with errno in *err. */
static int post_frame(ring_t* ring, int fd, int kind, uint64_t id, const struct iovec* parts,
                      int count, size_t size, int* err) {
    if (HEADER_SIZE + size <= RING_CAP) {
        ring_fill(ring->buf_to_worker, kind, id, parts, count, size);
        ring_post(&ring->to_worker, (uint32_t)(HEADER_SIZE + size));
        return CX_OK;
    }
    ring_post(&ring->to_worker, RING_ON_SOCKET);
    if (send_frame(fd, kind, id, parts, count) != 0) {
        *err = errno;
        return errno == EAGAIN || errno == EWOULDBLOCK ? CX_SEND_TIMEOUT : CX_SEND_FAILED;
    }
    return CX_OK;
}

/* The worker's frame just published in the ring, copied into buf (or its start, when it
 * travels on the socket). A CX_* code. */
static int take_frame(ring_t* ring, int fd, char* buf, size_t cap, long* got, int* err) {
    uint32_t len = ring->to_host.len;
    if (len == RING_ON_SOCKET) return recv_frame_start(fd, buf, cap, got, err);
    const uint8_t* h = ring->buf_to_host;
    uint32_t n = ((uint32_t)h[0] << 24) | ((uint32_t)h[1] << 16) | ((uint32_t)h[2] << 8) | h[3];
    if (len < HEADER_SIZE || len > RING_CAP || len > cap || (size_t)n + HEADER_SIZE != len) {
        return CX_PROTOCOL;
    }
    memcpy(buf, h, len);
    *got = (long)len;
    return CX_OK;
}

static int exchange(ring_t* ring, int fd, int kind, uint64_t id, const char* head,
                    size_t head_len, const char* body, size_t body_len, double spin_s,
                    double timeout_s, char* buf, size_t cap, long* got, int* err, double* took) {
    *got = 0;
    *err = 0;
    *took = -1;
    struct iovec parts[2] = {{(void*)head, head_len}, {(void*)body, body_len}};
    int count = 2;
    if (!body_len) count = 1;
    size_t size = head_len + body_len;
    if (!ring) {
        if (send_frame(fd, kind, id, parts, count) != 0) {
            *err = errno;
            return errno == EAGAIN || errno == EWOULDBLOCK ? CX_SEND_TIMEOUT : CX_SEND_FAILED;
        }
        spin_fd(fd, spin_s);
        return recv_frame_start(fd, buf, cap, got, err);
    }
    if (atomic_load(&ring->to_worker.seq) & RING_CLOSED) return CX_EOF;
    host_stay_t stay = {.held = -1};
    ring->to_worker.cpu = spin_s > 0 ? HOST_POLLS : host_stay(&stay);
    int posted = post_frame(ring, fd, kind, id, parts, count, size, err);
    if (posted != CX_OK) {
        host_go(&stay);
        return posted;
    }
    int waited = ring_wait(&ring->to_host, spin_s, timeout_s, fd);
    host_go(&stay);
    if (waited < 0) return CX_RECV_TIMEOUT;
    if (waited != 1) {
        /* Closed, or the socket hung up: whether the worker ever took the frame decides
         * whether the call may go to another worker. */
        uint32_t posted_count = atomic_load(&ring->to_worker.seq) & RING_COUNT;
        if (ring->to_worker.seen != posted_count) {
            *err = EPIPE;
            return CX_SEND_FAILED;
        }
        return waited == 0 ? CX_EOF : recv_frame_start(fd, buf, cap, got, err);
    }
    *took = ring->to_host.took_us / 1e6;
    return take_frame(ring, fd, buf, cap, got, err);
}

/* The host's end of a thread line (see cw_thread_lines): answer the plugin thread's last
 * host call (a frame of kind/id whose payload is head; kind < 0 for none, at the start),
 * then wait for its next HOST_CALL, polling for up to spin_s, then asleep for as long as
 * it takes: the worker closes the ring when the thread ends, and the host when the
 * worker dies. Not counted among the callers waiting for a worker's CPUs, and never
 * held on a CPU: the plugin's thread runs wherever the plugin put it. A CX_* code. */
int cw_thread_line_serve(void* ring_ptr, int fd, int kind, uint64_t id, const char* head,
                         size_t head_len, double spin_s, char* buf, size_t cap, long* got,
                         int* err) {
    ring_t* ring = ring_ptr;
    *got = 0;
    *err = 0;
    if (kind >= 0) {
        if (atomic_load(&ring->to_worker.seq) & RING_CLOSED) return CX_EOF;
        struct iovec part = {(void*)head, head_len};
        int posted = post_frame(ring, fd, kind, id, &part, head_len ? 1 : 0, head_len, err);
        if (posted != CX_OK) return posted;
    }
    if (ring_wait(&ring->to_host, spin_s, -1, -1) != 1) return CX_EOF;
    return take_frame(ring, fd, buf, cap, got, err);
}
