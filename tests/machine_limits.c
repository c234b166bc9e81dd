/*
 * machine_limits.c - the two numbers that bound the engine's speed on this machine, measured
 * the same way `make bench` measures the engine:
 *
 *   stream_gb_s   reading a 1 GiB float array once (what decoding a model larger than the
 *                 cache does with its weights), best of 5; the array is in 2 MB pages where
 *                 Linux offers them, as the engine's own copies of weights are;
 *   fma_gflop_s   fp32 multiply-adds with enough independent chains to hide their latency
 *                 (what a prompt chunk's matrix product is made of), in FLOP (2 per FMA).
 *
 * Prints `machine threads=T stream_gb_s=X fma_gflop_s=Y` for T = 1 and for all threads.
 * `machine_limits --stream T` prints only stream_gb_s for T threads, on a 256 MiB array, and
 * `machine_limits --fma T` only fma_gflop_s (tests/bench.py takes the FMA peak before each
 * case and the stream before each run and after the last: on a shared machine they drift).
 *
 * `machine_limits --products T LAYERS SIZES LAST [TOKENS]` prints the GB/s of an ideal
 * decoder: TOKENS tokens (128 if not given), each reading LAYERS times the products of SIZES
 * (bytes, comma-separated, in order), then LAST bytes, every product its own parallel pass
 * with a contiguous share per thread, as the engine's matmul runs one. Its loop is the
 * stream's, with no arithmetic: what no engine whose products wait on one another can beat,
 * and a measure of what the hand-over between products costs on this machine (BENCHMARKS.md,
 * "What an ideal decoder reaches").
 * Needs AVX-512 or AVX2+FMA; without them it says so and exits 0.
 */
#define _DEFAULT_SOURCE /* MADV_HUGEPAGE */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#ifdef __AVX512F__
typedef __m512 vec;
#define LANES 16
#define vadd _mm512_add_ps
#define vfma _mm512_fmadd_ps
#define vset _mm512_set1_ps
#define vload _mm512_loadu_ps
static float vsum(vec v) { return _mm512_reduce_add_ps(v); }
#else
typedef __m256 vec;
#define LANES 8
#define vadd _mm256_add_ps
#define vfma _mm256_fmadd_ps
#define vset _mm256_set1_ps
#define vload _mm256_loadu_ps
static float vsum(vec v) {
    float f[8];
    _mm256_storeu_ps(f, v);
    return f[0] + f[1] + f[2] + f[3] + f[4] + f[5] + f[6] + f[7];
}
#endif

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* The team size of the measurements that follow: a thread count from the command line. */
static void set_threads(const char *arg) {
#ifdef _OPENMP
    omp_set_num_threads(atoi(arg) > 0 ? atoi(arg) : 1);
#endif
    (void)arg;
}

/* bytes of memory in 2 MB pages where Linux offers them, as the engine's copies of the
 * weights are, or NULL. */
static void *huge_alloc(size_t bytes) {
    void *p = NULL;
    if (posix_memalign(&p, (size_t)2 << 20, bytes) != 0) return NULL;
#if defined(MADV_HUGEPAGE)
    madvise(p, bytes, MADV_HUGEPAGE);
#endif
    return p;
}

/* The sum of n floats (n a multiple of 4 LANES); four sums so the adds never wait on each
 * other and only memory sets the pace. */
static float read_floats(const float *p, size_t n) {
    vec s0 = vset(0), s1 = s0, s2 = s0, s3 = s0;
    for (size_t j = 0; j < n; j += 4 * LANES) {
        s0 = vadd(s0, vload(p + j));
        s1 = vadd(s1, vload(p + j + LANES));
        s2 = vadd(s2, vload(p + j + 2 * LANES));
        s3 = vadd(s3, vload(p + j + 3 * LANES));
    }
    return vsum(vadd(vadd(s0, s1), vadd(s2, s3)));
}

/* GB/s of one pass over n floats split among the threads, best of 5. */
static double stream(const float *a, size_t n, float *sink) {
    double best = 1e30;
    for (int rep = 0; rep < 5; rep++) {
        double t0 = now();
        float total = 0.0f;
        #pragma omp parallel for reduction(+:total)
        for (size_t b = 0; b < n / 4096; b++) total += read_floats(a + b * 4096, 4096);
        double t = now() - t0;
        if (t < best) best = t;
        *sink += total;
    }
    return n * sizeof(float) / best / 1e9;
}

/* What read_floats takes at a time. */
#define UNIT_BYTES (4 * LANES * sizeof(float))

/* --products: GB/s of `tokens` tokens, each reading the `count` regions in order (bytes[i]
 * at region[i], multiples of UNIT_BYTES), each in one parallel pass. */
static double products(float *const *region, const size_t *bytes, int count, int tokens,
                       float *sink) {
    double t0 = now();
    for (int token = 0; token < tokens; token++)
        for (int i = 0; i < count; i++) {
            float total = 0.0f;
            #pragma omp parallel reduction(+:total)
            {
                size_t units = bytes[i] / UNIT_BYTES, me = 0, team = 1;
#ifdef _OPENMP
                me = omp_get_thread_num(), team = omp_get_num_threads();
#endif
                size_t from = units * me / team, to = units * (me + 1) / team;
                total += read_floats(region[i] + from * 4 * LANES, (to - from) * 4 * LANES);
            }
            *sink += total;
        }
    double t = now() - t0, read = 0;
    for (int i = 0; i < count; i++) read += bytes[i];
    return tokens * read / t / 1e9;
}

/* 1 if s is a whole decimal number in lo .. hi, then in *out. */
static int number(const char *s, long lo, long hi, long *out) {
    char *end;
    *out = strtol(s, &end, 10);
    return end > s && *end == '\0' && *out >= lo && *out <= hi;
}

/* machine_limits --products T LAYERS SIZES LAST [TOKENS] */
static int products_main(int argc, char **argv, float *sink) {
    long layers = 0, tokens = 128;
    int per = 1, ok = (argc == 6 || argc == 7) && number(argv[3], 1, 10000, &layers) &&
                      (argc == 6 || number(argv[6], 1, 100000, &tokens));
    for (const char *c = ok ? argv[4] : ""; *c; c++) per += *c == ',';
    ok = ok && per <= 10000;
    int count = ok ? (int)layers * per + 1 : 1;
    size_t *bytes = calloc(count, sizeof *bytes), total = 0;
    float **region = calloc(count, sizeof *region);
    ok = ok && bytes && region;
    char *next = ok ? argv[4] : NULL, *end = NULL;
    for (int i = 0; ok && i < per; i++, next = end + 1) { /* past the ',' */
        bytes[i] = strtoull(next, &end, 10);
        ok = end > next && *next != '-' && (*end == ',' || *end == '\0');
    }
    if (ok) bytes[count - 1] = strtoull(argv[5], &end, 10);
    ok = ok && *end == '\0' && argv[5][0] != '-';
    for (int i = 0; ok && i < count; i++) { /* every layer's products are the first layer's */
        size_t b = i < per || i == count - 1 ? bytes[i] : bytes[i % per];
        bytes[i] = b / UNIT_BYTES * UNIT_BYTES;
        total += bytes[i];
        ok = bytes[i] > 0 && bytes[i] < ((size_t)1 << 40) && total < ((size_t)1 << 40);
    }
    char *arena = ok ? huge_alloc(total) : NULL;
    if (!arena) {
        fprintf(stderr, "machine_limits: --products wants THREADS LAYERS SIZES LAST [TOKENS], "
                        "sizes in bytes of at least %zu that fit in memory, 1-100000 tokens, "
                        "e.g. --products 2 12 1880064,1966080,626688,3342336,1671168 26112000\n",
                UNIT_BYTES);
        free(bytes), free(region);
        return 1;
    }
    memset(arena, 0, total);
    size_t at = 0;
    for (int i = 0; i < count; at += bytes[i], i++) region[i] = (float *)(arena + at);
    set_threads(argv[2]);
    /* three figures: a small run on a busy machine (a test's, beside other tests) can read
     * less than 0.05 GB/s, which %.1f printed as 0.0 */
    printf("%.3g\n", products(region, bytes, count, (int)tokens, sink));
    free(arena), free(bytes), free(region);
    return 0;
}

/* GFLOP/s of ten independent FMA chains per thread (FMA latency 4-5 cycles, two issued per
 * cycle at most: ten keep every pipe busy). */
static double fma_peak(float *sink) {
    const long iters = 20000000;
    double t0 = now();
    int threads = 1;
    float total = 0.0f;
    #pragma omp parallel reduction(+:total)
    {
#ifdef _OPENMP
        #pragma omp single
        threads = omp_get_num_threads();
#endif
        vec m = vset(0.999f), c = vset(1e-4f);
        vec a0 = vset(0), a1 = vset(1), a2 = vset(2), a3 = vset(3), a4 = vset(4);
        vec a5 = vset(5), a6 = vset(6), a7 = vset(7), a8 = vset(8), a9 = vset(9);
        for (long k = 0; k < iters; k++) {
            a0 = vfma(a0, m, c), a1 = vfma(a1, m, c), a2 = vfma(a2, m, c);
            a3 = vfma(a3, m, c), a4 = vfma(a4, m, c), a5 = vfma(a5, m, c);
            a6 = vfma(a6, m, c), a7 = vfma(a7, m, c), a8 = vfma(a8, m, c);
            a9 = vfma(a9, m, c);
        }
        total += vsum(vadd(vadd(vadd(a0, a1), vadd(a2, a3)), vadd(vadd(a4, a5),
                      vadd(vadd(a6, a7), vadd(a8, a9)))));
    }
    double t = now() - t0;
    *sink += total;
    return threads * (double)iters * 10 * LANES * 2 / t / 1e9;
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "--products")) {
        float sink = 0.0f;
        int status = products_main(argc, argv, &sink);
        return status ? status : sink == 12345.0f;
    }
    int only_stream = argc == 3 && !strcmp(argv[1], "--stream");
    if (argc == 3 && !strcmp(argv[1], "--fma")) {
        float sink = 0.0f;
        set_threads(argv[2]);
        double best = 0.0;
        for (int rep = 0; rep < 3; rep++) { /* best of 3: interference only slows it */
            double g = fma_peak(&sink);
            if (g > best) best = g;
        }
        printf("%.1f\n", best);
        return sink == 12345.0f;
    }
    size_t n = (size_t)1 << (only_stream ? 26 : 28);
    float *a = huge_alloc(n * sizeof *a), sink = 0.0f;
    if (!a) return 1;
    for (size_t i = 0; i < n; i++) a[i] = 1.0f;
    if (only_stream) {
        set_threads(argv[2]);
        printf("%.1f\n", stream(a, n, &sink));
        free(a);
        return sink == 12345.0f;
    }
    int all = 1;
#ifdef _OPENMP
    all = omp_get_max_threads();
#endif
    for (int t = 1; t <= all; t = t == all ? all + 1 : all) {
#ifdef _OPENMP
        omp_set_num_threads(t);
#endif
        printf("machine threads=%d stream_gb_s=%.1f fma_gflop_s=%.1f\n", t, stream(a, n, &sink),
               fma_peak(&sink));
        fflush(stdout);
    }
    free(a);
    return sink == 12345.0f; /* keeps the sums alive */
}
#else
int main(void) {
    puts("machine: no AVX-512 or AVX2+FMA in this build, limits not measured");
    return 0;
}
#endif
