/*
 * team.h - the engine's threads: a team kept waiting between calls, so that handing work to
 * every thread costs about what one cache line's trip between two cores costs. Internal to
 * the library.
 *
 * Why not OpenMP's parallel regions: decoding a 110M Q8_0 token is 61 of them, about 50 us
 * each on average, and entering and leaving one in libgomp costs about 3 us here (an empty
 * region, two threads), where handing a cache line to the other thread and back costs 0.45.
 * Every parallel step goes through the team (products, attention, the elementwise steps of
 * a prompt, packing at load, the sampler): were some left to OpenMP, its threads would spin
 * for milliseconds after each region, on the cores the team needs (BENCHMARKS.md, "A team of
 * threads instead of OpenMP's regions"). OpenMP, when the build has it, only says how many
 * threads (OMP_NUM_THREADS, --threads).
 *
 * A waiting thread spins for up to 2 ms, then sleeps until the next call, so that a paused or
 * finished generation leaves no core busy. The child of a fork() starts a team of its own.
 */
#ifndef TEAM_H
#define TEAM_H

/* Runs fn(arg, me, n) once for each me in 0 .. n - 1 on n threads, the caller being me = 0,
 * and returns when every one has returned; what they wrote is then visible to the caller.
 * The n that fn is given may be smaller than asked (at most TEAM_MAX, and only the helpers
 * that could be started), so fn must split its work by the n it receives. A call made while
 * the team is busy (from inside fn, or from another thread of the program) runs
 * fn(arg, 0, 1) on the calling thread instead. */
void team_run(int n, void (*fn)(void *arg, int me, int n), void *arg);

/* The threads the engine's steps use: OpenMP's thread count (OMP_NUM_THREADS, --threads), 1
 * in a build without OpenMP, at most TEAM_MAX. */
int team_size(void);

enum { TEAM_MAX = 64 };

/* The loop of team_run's most common use: items 0 .. count - 1 split evenly into contiguous
 * parts, as OpenMP's schedule(static) would, body(arg, from, to) running each part on its
 * own thread of n. */
void team_for(int n, int count, void (*body)(void *arg, int from, int to), void *arg);

#endif
