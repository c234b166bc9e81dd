/*
 * team.h - the threads that decode a token: a team kept waiting between calls, so that
 * handing a product to every thread costs about what one cache line's trip between two cores
 * costs. Internal to the library.
 *
 * Why not an OpenMP parallel region: decoding a 110M Q8_0 token is about 61 parallel regions
 * of 25-60 us each, and entering and leaving one in libgomp costs about 3 us here (an empty
 * region, two threads) where the team's hand-over costs well under one. Run under a pool like
 * this one, the same engine decoded 110M Q8_0 1.12x faster (BENCHMARKS.md, "A team that
 * waits spinning"). Prompts and everything else keep OpenMP: their regions are few and long.
 *
 * A waiting thread spins for up to TEAM_SPIN_NS, then sleeps until the next call, so that a
 * paused or finished generation leaves no core busy. Without OpenMP the team has one thread,
 * the caller, as every other parallel loop then has.
 */
#ifndef TEAM_H
#define TEAM_H

/* Runs fn(arg, me, n) once for each me in 0 .. n - 1 on n threads, the caller being me = 0,
 * and returns when every one has returned; what they wrote is then visible to the caller.
 * n is at most team_size(). A call made while the team is busy (from inside fn, or from
 * another thread of the program) runs fn(arg, 0, 1) on the calling thread instead. */
void team_run(int n, void (*fn)(void *arg, int me, int n), void *arg);

/* The threads team_run can use: OpenMP's thread count (--threads), 1 without OpenMP, at
 * most TEAM_MAX. */
int team_size(void);

enum { TEAM_MAX = 64 };

#endif
