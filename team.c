/* team.c - the engine's threads (team.h says why they are not OpenMP's).
 *
 * Each helper thread (me = 1 .. TEAM_MAX - 1, started the first time a call needs it) has a
 * cache line of its own: the caller writes there the number of the call it is to work on,
 * the helper writes back the number of the call it has finished. Besides those lines a
 * helper only reads the call itself (team.fn, arg, n), written before its number, so a call
 * costs the caller a write to each helper's line and a read of each as it finishes. */
#include "team.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <threads.h>
#include <time.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* How long a helper spins after its last call before it sleeps, and the caller spins for
 * its helpers before it lets others have its core between looks: about as long as libgomp's
 * threads spin. Between the calls of a token there are microseconds. OMP_WAIT_POLICY=passive
 * makes it 0, as it makes libgomp's threads sleep at once: on a machine whose cores are busy
 * with other work, a spinning thread can hold the very core the thread it waits for needs
 * (BENCHMARKS.md, "Threads on a shared machine"). */
#define TEAM_SPIN_NS 2000000L
static long long spin_ns = TEAM_SPIN_NS;

/* The processors the program may run on: a team larger than that does not spin at all (as
 * libgomp's threads spin far less then), since a spinning thread would hold a processor that
 * a thread with work to do is waiting for. */
static int procs = TEAM_MAX;

/* Pauses between two looks at the clock, so that the looks cost little beside the spinning. */
#define SPINS_PER_LOOK 256

typedef struct {
    _Alignas(64) _Atomic uint64_t go; /* the call to work on */
    _Atomic uint64_t done;            /* the last call finished */
    _Atomic int sleeping;             /* 1 while it waits on team.wake */
} Helper;

static struct {
    Helper helper[TEAM_MAX];
    void (*fn)(void *, int, int); /* the current call: written before each helper's go */
    void *arg;
    int n;
    uint64_t calls;               /* calls made so far (64 bits: never wraps), under busy */
    int started;                  /* helpers 1 .. started - 1 exist */
    int start_failed;             /* a helper could not be started: no more attempts */
    int forked;                   /* this is the child of a fork() */
    atomic_flag busy;             /* held by the call under way */
    mtx_t lock;                   /* with wake: where helpers sleep */
    cnd_t wake;
    int sleep_ok;                 /* lock and wake were made */
} team = {.busy = ATOMIC_FLAG_INIT, .started = 1};

static once_flag team_once = ONCE_FLAG_INIT;

/* The lock and condition where helpers sleep; without them they only spin. */
static void make_sleep_lock(void) {
    team.sleep_ok = mtx_init(&team.lock, mtx_plain) == thrd_success &&
                    cnd_init(&team.wake) == thrd_success;
}

/* In the child of a fork() only the forking thread exists: the team starts again from none,
 * as if never used (the lock and condition are made anew: a helper may have held the lock). */
static void team_after_fork(void) {
    for (int i = 0; i < TEAM_MAX; i++) {
        atomic_store(&team.helper[i].go, 0);
        atomic_store(&team.helper[i].done, 0);
        atomic_store(&team.helper[i].sleeping, 0);
    }
    team.calls = 0, team.started = 1, team.start_failed = 0, team.forked = 1;
    atomic_flag_clear(&team.busy);
    make_sleep_lock();
}

static void team_init(void) {
    pthread_atfork(NULL, NULL, team_after_fork);
    make_sleep_lock();
    const char *policy = getenv("OMP_WAIT_POLICY"), *passive = "passive";
    int i = 0; /* compared as libgomp does, in any case */
    while (policy && passive[i] && (policy[i] | 0x20) == passive[i]) i++;
    if (policy && !passive[i] && !policy[i]) spin_ns = 0;
#ifdef _OPENMP
    procs = omp_get_num_procs();
#elif defined(_SC_NPROCESSORS_ONLN)
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    procs = online > 0 && online < TEAM_MAX ? (int)online : TEAM_MAX;
#endif
}

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* Waits until helper h is given a call other than `seen`, and returns it: spinning first
 * (unless its last call had more threads than there are processors), then, after spin_ns,
 * asleep. The sleep is safe against a lost wake-up because both
 * sides store, then load, sequentially consistent: the helper sets `sleeping` and then looks
 * at `go`, the caller sets `go` and then looks at `sleeping`, so at least one of them sees
 * the other's store; and a caller that sees `sleeping` signals under the lock the helper
 * holds until cnd_wait releases it. */
static uint64_t wait_for_call(Helper *h, uint64_t seen, int last_n) {
    long long start = now_ns(), spin = last_n > procs ? 0 : spin_ns;
    for (unsigned spins = 1;; spins++) {
        uint64_t go = atomic_load_explicit(&h->go, memory_order_acquire);
        if (go != seen) return go;
        cpu_relax();
        if (spins % SPINS_PER_LOOK == 0 && team.sleep_ok && now_ns() - start >= spin) {
            mtx_lock(&team.lock);
            atomic_store(&h->sleeping, 1);
            while ((go = atomic_load(&h->go)) == seen) cnd_wait(&team.wake, &team.lock);
            atomic_store(&h->sleeping, 0);
            mtx_unlock(&team.lock);
            return go;
        }
    }
}

static int helper_main(void *p) {
    int me = (int)(intptr_t)p;
    Helper *h = &team.helper[me];
    int n = 0; /* the size of its last call */
    for (uint64_t seen = 0;;) {
        seen = wait_for_call(h, seen, n);
        n = team.n;
        team.fn(team.arg, me, n);
        atomic_store_explicit(&h->done, seen, memory_order_release);
    }
    return 0;
}

/* Starts helper me, if it is one still to start, and says whether it runs. */
static int start_helper(int me, int n) {
    thrd_t t;
    if (me < team.started || me >= n ||
        thrd_create(&t, helper_main, (void *)(intptr_t)me) != thrd_success)
        return 0;
    thrd_detach(t);
    return 1;
}

/* Starts helpers team.started .. n - 1. With OpenMP each is started by the OpenMP thread of
 * its number, whose processors it inherits: under OMP_PROC_BIND or OMP_PLACES libgomp has
 * bound that thread to its place, and the caller (me = 0) to the first, which a helper
 * started by the caller would share. Not in the child of a fork, where libgomp's own threads
 * are gone and its regions would wait for them. */
static void start_helpers(int n) {
    int ok[TEAM_MAX] = {0};
#ifdef _OPENMP
    if (!team.forked) {
        #pragma omp parallel num_threads(n)
        ok[omp_get_thread_num()] = start_helper(omp_get_thread_num(), n);
    } else
#endif
        for (int me = 0; me < n; me++) ok[me] = start_helper(me, n);
    /* a helper that could not be started leaves a smaller team (any started after it just
     * waits, never called) */
    while (team.started < n && ok[team.started]) team.started++;
    team.start_failed = team.started < n;
}

typedef struct {
    int count;
    void (*body)(void *, int, int);
    void *arg;
} Loop;

static void loop_part(void *loop, int me, int n) {
    const Loop *l = loop;
    l->body(l->arg, (int)((long long)l->count * me / n), (int)((long long)l->count * (me + 1) / n));
}

void team_for(int n, int count, void (*body)(void *arg, int from, int to), void *arg) {
    Loop l = {count, body, arg};
    team_run(n, loop_part, &l);
}

int team_size(void) {
#ifdef _OPENMP
    int n = omp_get_max_threads();
    return n < 1 ? 1 : n > TEAM_MAX ? TEAM_MAX : n;
#else
    return 1;
#endif
}

void team_run(int n, void (*fn)(void *arg, int me, int n), void *arg) {
    if (n > TEAM_MAX) n = TEAM_MAX;
    if (n <= 1 || atomic_flag_test_and_set_explicit(&team.busy, memory_order_acquire)) {
        fn(arg, 0, 1);
        return;
    }
    call_once(&team_once, team_init);
    if (team.started < n && !team.start_failed) start_helpers(n);
    n = n < team.started ? n : team.started;
    uint64_t call = ++team.calls;
    team.fn = fn, team.arg = arg, team.n = n;
    int asleep = 0;
    for (int i = 1; i < n; i++) {
        atomic_store(&team.helper[i].go, call);
        asleep |= atomic_load(&team.helper[i].sleeping);
    }
    if (asleep) {
        mtx_lock(&team.lock);
        cnd_broadcast(&team.wake);
        mtx_unlock(&team.lock);
    }
    fn(arg, 0, n);
    long long start = 0, spin = n > procs ? 0 : spin_ns;
    for (int i = 1; i < n; i++)
        for (unsigned spins = 1;
             atomic_load_explicit(&team.helper[i].done, memory_order_acquire) != call; spins++) {
            cpu_relax();
            if (spins % SPINS_PER_LOOK == 0) {
                if (!start) start = now_ns();
                if (now_ns() - start >= spin) thrd_yield();
            }
        }
    atomic_flag_clear_explicit(&team.busy, memory_order_release);
}
