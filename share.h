/*
 * share.h - units of work shared out among threads, each starting on a contiguous share of
 * its own and stealing from the others when it runs out. Internal to the library.
 *
 * Why not OpenMP's schedules: schedule(static) leaves the threads that finish first waiting
 * for the last, and decoding is bound by memory bandwidth, of which one core alone reads only
 * part: what a waiting core would have read is lost. schedule(dynamic) and (guided) take every
 * unit from one counter that all the threads write, which moves its cache line from core to
 * core at every step and cost more than the waiting. Here each thread takes units from the
 * front of its own share, a cache line no one else touches until the end; only one that has
 * run out reads the others' lines, to take the back half of the fullest other share.
 *
 * A thread takes a quarter of what its share has left at a time, not one unit: each take is
 * a locked instruction, which waits for every load and store before it, and a unit of a
 * prompt's Q4_0 product is about a microsecond of work. (BENCHMARKS.md, "Threads that steal
 * instead of waiting", has the measurements.)
 */
#ifndef SHARE_H
#define SHARE_H

#include <stdatomic.h>
#include <stdint.h>

/* The most shares a call can have (a Share is 64 bytes, and callers keep them on the stack);
 * threads past it take no units. */
enum { SHARES_MAX = 256 };

/* One thread's share: the next unit it will take and the end of the share, in one word, so
 * that taking from the front and stealing from the back are each one compare-and-swap. Empty
 * when next == end. A cache line of its own, so that its owner's steps stay in its cache. */
typedef struct {
    _Alignas(64) _Atomic uint64_t range; /* end << 32 | next */
} Share;

static inline uint64_t share_range(uint32_t next, uint32_t end) {
    return (uint64_t)end << 32 | next;
}

/* Deals units 0 .. units - 1 into count contiguous shares of (nearly) equal size, shares[0]
 * the first. Runs before the threads start: the start of the parallel region publishes it. */
static inline void share_init(Share *shares, int count, int units) {
    for (int t = 0; t < count; t++)
        atomic_init(&shares[t].range, share_range((uint32_t)((int64_t)units * t / count),
                                                  (uint32_t)((int64_t)units * (t + 1) / count)));
}

/* The units first .. *end - 1 from the front of s, a quarter of what it has left (at least
 * one), or -1 when s is empty. */
static inline int share_take_front(Share *s, int *end) {
    uint64_t r = atomic_load_explicit(&s->range, memory_order_relaxed);
    for (;;) {
        uint32_t next = (uint32_t)r, last = (uint32_t)(r >> 32), take = (last - next + 3) / 4;
        if (next == last) return -1;
        if (atomic_compare_exchange_weak_explicit(&s->range, &r, share_range(next + take, last),
                                                  memory_order_relaxed, memory_order_relaxed)) {
            *end = (int)(next + take);
            return (int)next;
        }
    }
}

/* The next units first .. *end - 1 for thread `me` (0 .. count - 1) among count shares:
 * from its own share, or, when that is empty, from the back half of the fullest other share,
 * which becomes its own (so that a third thread may steal from it in turn). -1 when no share
 * has units left (another thief may still hold some it has just stolen, which it will do
 * itself). Each unit is taken exactly once; the relaxed atomics order only the
 * shares, and the work itself is published by the barrier that ends the parallel region. */
static inline int share_take(Share *shares, int count, int me, int *end) {
    for (;;) {
        int first = share_take_front(&shares[me], end);
        if (first >= 0) return first;
        int victim = -1;
        uint32_t most = 0;
        uint64_t seen = 0;
        for (int i = 0; i < count; i++) {
            uint64_t r = atomic_load_explicit(&shares[i].range, memory_order_relaxed);
            uint32_t left = (uint32_t)(r >> 32) - (uint32_t)r;
            if (i != me && left > most) most = left, victim = i, seen = r;
        }
        if (victim < 0) return -1;
        /* the back half, rounded up so that a last unit is taken too; its owner may have
         * moved on since `seen`, and then the compare-and-swap fails and we look again */
        uint32_t next = (uint32_t)seen, last = (uint32_t)(seen >> 32), cut = last - (most + 1) / 2;
        if (atomic_compare_exchange_strong_explicit(&shares[victim].range, &seen,
                                                    share_range(next, cut),
                                                    memory_order_relaxed, memory_order_relaxed))
            atomic_store_explicit(&shares[me].range, share_range(cut, last),
                                  memory_order_relaxed);
    }
}

#endif
