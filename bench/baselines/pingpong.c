/* The machine's ceiling for calls into another process (figure 3, 3e): no Python, no JSON.
 *
 *   pingpong THREADS US CALLS
 *
 * forks a worker process with THREADS threads; THREADS caller threads here each make
 * their share of CALLS calls over a slot of shared memory (a sequence number each way,
 * futex wake-ups), and each call burns US microseconds in the worker, as bench_plugin.c's
 * `spin` does. Callers and worker threads poll for their answer while every pair can have
 * a CPU of its own (2 * THREADS <= CPUs), and sleep otherwise: the isolated host's rule.
 * Sleeping, caller i and worker thread i share the i-th CPU the program may use (their
 * affinity), as the host's callers and the worker's line threads do.
 * Prints the wall time of the calls in nanoseconds (after 200 untimed calls per thread).
 */
#define _GNU_SOURCE
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_THREADS 64
#define WARMUP 200
#define POLL_LIMIT_NS 1000000000LL /* a poll gives up (and sleeps) after 1 s */

typedef struct {
    _Atomic uint32_t request; /* the caller's call count; UINT32_MAX: stop */
    _Atomic uint32_t answer;  /* the worker's answered count */
    _Atomic uint32_t asleep;  /* threads asleep on either word: a post wakes them */
    char pad[52];             /* one slot per cache line */
} slot_t;

static slot_t* g_slots;
static long g_burn_ns, g_calls[MAX_THREADS];
static int g_poll;
static pthread_barrier_t g_start;

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
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

/* Wait until *word is no longer `seen`: polled first where g_poll says, then asleep. */
static uint32_t wait_change(slot_t* slot, _Atomic uint32_t* word, uint32_t seen) {
    uint32_t now = atomic_load(word);
    if (g_poll) {
        long long end = now_ns() + POLL_LIMIT_NS;
        for (unsigned turn = 1; now == seen; turn++) {
            cpu_relax();
            now = atomic_load(word);
            if ((turn & 1023) == 0 && now_ns() > end) break;
        }
    }
    while (now == seen) {
        atomic_fetch_add(&slot->asleep, 1);
        syscall(SYS_futex, word, FUTEX_WAIT, seen, NULL, NULL, 0);
        atomic_fetch_sub(&slot->asleep, 1);
        now = atomic_load(word);
    }
    return now;
}

static void post(slot_t* slot, _Atomic uint32_t* word, uint32_t value) {
    atomic_store(word, value);
    if (atomic_load(&slot->asleep)) syscall(SYS_futex, word, FUTEX_WAKE, 1, NULL, NULL, 0);
}

/* Sleeping pairs share a CPU: the index-th of those the program may use. */
static void share_cpu(long index) {
    cpu_set_t allowed, one;
    if (g_poll || sched_getaffinity(0, sizeof allowed, &allowed) != 0) return;
    long count = CPU_COUNT(&allowed), wanted = index % (count ? count : 1);
    for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
        if (CPU_ISSET(cpu, &allowed) && wanted-- == 0) {
            CPU_ZERO(&one);
            CPU_SET(cpu, &one);
            sched_setaffinity(0, sizeof one, &one);
            return;
        }
    }
}

static void* serve(void* arg) {
    slot_t* slot = arg;
    share_cpu(slot - g_slots);
    uint32_t seen = 0;
    for (;;) {
        seen = wait_change(slot, &slot->request, seen);
        if (seen == UINT32_MAX) return NULL;
        long long until = now_ns() + g_burn_ns;
        while (now_ns() < until) {
        }
        post(slot, &slot->answer, seen);
    }
}

static void* call(void* arg) {
    long index = (long)arg;
    slot_t* slot = &g_slots[index];
    share_cpu(index);
    uint32_t count = 0;
    for (int i = 0; i < WARMUP; i++) {
        post(slot, &slot->request, ++count);
        while (wait_change(slot, &slot->answer, count - 1) != count) {
        }
    }
    pthread_barrier_wait(&g_start);
    for (long i = 0; i < g_calls[index]; i++) {
        post(slot, &slot->request, ++count);
        while (wait_change(slot, &slot->answer, count - 1) != count) {
        }
    }
    return NULL;
}

int main(int argc, char** argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s THREADS US CALLS\n", argv[0]);
        return 2;
    }
    int threads = atoi(argv[1]);
    long us = atol(argv[2]), calls = atol(argv[3]);
    if (threads < 1 || threads > MAX_THREADS || us < 0 || calls < 1) {
        fprintf(stderr, "%s: THREADS 1-%d, US >= 0, CALLS >= 1\n", argv[0], MAX_THREADS);
        return 2;
    }
    g_burn_ns = us * 1000;
    g_poll = 2L * threads <= sysconf(_SC_NPROCESSORS_ONLN);
    g_slots = mmap(NULL, sizeof(slot_t) * MAX_THREADS, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (g_slots == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    pid_t worker = fork();
    if (worker < 0) {
        perror("fork");
        return 1;
    }
    if (worker == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlives the caller */
        pthread_t served[MAX_THREADS];
        for (long i = 0; i < threads; i++) pthread_create(&served[i], NULL, serve, &g_slots[i]);
        for (int i = 0; i < threads; i++) pthread_join(served[i], NULL);
        _exit(0);
    }
    pthread_barrier_init(&g_start, NULL, (unsigned)threads + 1);
    pthread_t callers[MAX_THREADS];
    for (long i = 0; i < threads; i++) {
        g_calls[i] = calls / threads + (i < calls % threads ? 1 : 0);
        pthread_create(&callers[i], NULL, call, (void*)i);
    }
    pthread_barrier_wait(&g_start);
    long long start = now_ns();
    for (int i = 0; i < threads; i++) pthread_join(callers[i], NULL);
    long long elapsed = now_ns() - start;
    for (int i = 0; i < threads; i++) post(&g_slots[i], &g_slots[i].request, UINT32_MAX);
    waitpid(worker, NULL, 0);
    printf("%lld\n", elapsed);
    return 0;
}
