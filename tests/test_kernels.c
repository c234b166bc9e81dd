/*
 * test_kernels.c - unit tests of the kernels: kernels.c, matmul*.c and attention.c.
 *
 * Small cases computed by hand pin down what each kernel means; random inputs of awkward sizes
 * (not multiples of the vector widths, short last groups) hold every fast path to the plain C
 * reference. Prints one line per failing check and ends with `N passed, N failed`; the exit
 * status is 1 if anything failed. tests/test_kernel_paths.py runs it for the native build and
 * builds it again for the AVX2, AVX-512-without-VNNI and plain paths.
 *
 *   test_kernels           run the tests
 *   test_kernels --bench   the matmul kernels alone, per weight type: a prompt chunk and a
 *                          decoding step (see BENCHMARKS.md; threads as OMP_NUM_THREADS)
 */
#define _DEFAULT_SOURCE /* mincore */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#include <signal.h>
#include <sys/wait.h>

#include <stdint.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__AVX512BF16__) && defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "attention.h"
#include "kernels.h"
#include "matmul.h"
#include "share.h"
#include "team.h"

static int passed, failed;

/* Records one check; on failure prints where and why. */
#define CHECK(cond, ...)                                                                     \
    do {                                                                                     \
        if (cond) {                                                                          \
            passed++;                                                                        \
        } else {                                                                             \
            failed++;                                                                        \
            printf("FAIL %s:%d: ", __func__, __LINE__);                                      \
            printf(__VA_ARGS__);                                                             \
            printf("\n");                                                                    \
        }                                                                                    \
    } while (0)

static int close_to(float a, float b, float tol) { return fabsf(a - b) <= tol; }
static int min_int(int a, int b) { return a < b ? a : b; }
#define COUNT(a) (int)(sizeof a / sizeof a[0])

/* xorshift64*: reproducible random numbers without depending on the C library's rand. */
static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint32_t next_u32(void) {
    rng ^= rng >> 12, rng ^= rng << 25, rng ^= rng >> 27;
    return (uint32_t)((rng * 0x2545F4914F6CDD1Dull) >> 32);
}
static float uniform(void) { return (next_u32() >> 8) / 16777216.0f * 2.0f - 1.0f; } /* [-1, 1) */

static float *random_floats(size_t n) {
    float *a = malloc(n * sizeof *a);
    for (size_t i = 0; i < n; i++) a[i] = uniform();
    return a;
}

static float bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint16_t f32_to_bf16(float f) { /* round to nearest even, as export does */
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)((u + 0x7FFF + ((u >> 16) & 1)) >> 16);
}

/* ------------------------------------------------------------------------------------------ */
/* Hand-computed cases */

static void test_rmsnorm(void) {
    float x[4] = {1, 2, 3, 4}, w[4] = {1, 1, 2, 0.5f}, out[4];
    rmsnorm(out, x, w, 1, 4, 0.0f);
    float rms = sqrtf(30.0f / 4.0f); /* mean of 1 + 4 + 9 + 16 */
    for (int i = 0; i < 4; i++)
        CHECK(close_to(out[i], w[i] * x[i] / rms, 1e-6f), "out[%d] = %g", i, out[i]);
    rmsnorm(x, x, w, 1, 4, 0.0f); /* in place */
    CHECK(memcmp(x, out, sizeof out) == 0, "in-place rmsnorm differs");
    float z[3] = {0, 0, 0}, one[3] = {1, 1, 1};
    rmsnorm(z, z, one, 1, 3, 1e-5f); /* eps keeps a zero vector finite */
    CHECK(z[0] == 0.0f && z[2] == 0.0f, "zero vector gave %g", z[0]);
}

static void test_softmax(void) {
    float x[3] = {1, 2, 3};
    softmax(x, 3);
    float e = expf(1), d = 1 + e + e * e;
    CHECK(close_to(x[0], 1 / d, 1e-7f) && close_to(x[1], e / d, 1e-7f) &&
          close_to(x[2], e * e / d, 1e-7f), "softmax(1,2,3) = %g %g %g", x[0], x[1], x[2]);
    float big[2] = {1000, 1000 + logf(3)}; /* would overflow without subtracting the max */
    float want = 1.0f / (1.0f + expf(big[1] - big[0])); /* about 1/4: 1000 + ln 3 is rounded */
    softmax(big, 2);
    CHECK(close_to(big[0], want, 1e-6f) && close_to(big[1], 1 - want, 1e-6f),
          "softmax of large values = %g %g, want %g", big[0], big[1], want);
}

/* The vectorised exponential of swiglu against expf's: within 2 ulp for each value. The
 * inputs reach where e^x overflows and underflows, and NaN must stay NaN. */
static void test_exp_kernels_vs_ref(void) {
    static const int SIZES[] = {1, 5, 16, 17, 100, 333};
    for (int a = 0; a < COUNT(SIZES); a++) {
        int n = SIZES[a], bad = 0;
        float *x = random_floats(n), *up = random_floats(n);
        float *y = malloc(sizeof(float) * n), *ref = malloc(sizeof(float) * n);
        for (int i = 0; i < n; i++) x[i] *= i % 7 == 3 ? 120.0f : 30.0f; /* some past +-88 */
        swiglu(y, x, up, n);
        swiglu_ref(ref, x, up, n);
        for (int i = 0; i < n; i++)
            bad += !(fabsf(y[i] - ref[i]) <= 2.4e-7f * fabsf(ref[i]) + 1e-37f);
        CHECK(bad == 0, "swiglu n %d: %d values differ", n, bad);
        free(x), free(y), free(ref), free(up);
    }
    float g[4] = {NAN, -INFINITY, INFINITY, -1e30f}, u[4] = {1, 1, 1, 1}, out[4], want[4];
    swiglu(out, g, u, 4);
    swiglu_ref(want, g, u, 4);
    for (int i = 0; i < 4; i++)
        CHECK(isnan(out[i]) ? isnan(want[i]) : out[i] == want[i], "swiglu(%g) = %g, want %g",
              g[i], out[i], want[i]);
}

/* y = x W^T through matmul (ref = 0) or matmul_ref (ref = 1), with scratch of its own. */
static void run_matmul(float *y, const Tensor *t, const float *x, int n, int ref) {
    size_t bytes = matmul_scratch_bytes(t, n);
    void *scratch = NULL;
    if (bytes && posix_memalign(&scratch, 64, bytes) != 0) abort();
    if (ref) matmul_ref(y, t, x, n, scratch);
    else matmul(y, t, x, n, scratch, bytes);
    free(scratch);
}

/* The rearranged copy of w for this build's kernel (which VNNI builds must make for Q8_0 and
 * Q4_0), with the room after it that a product may prefetch, or NULL if the stored layout
 * serves. Free it when done with the tensor. */
static void *pack(Tensor *t) {
    const WeightType *type = weight_type(t->type);
    size_t size = type->packed_size(t);
    CHECK(size > 0 || !strstr(type->isa, "vnni"), "a VNNI build did not pack %s", type->name);
    void *mem = NULL;
    if (size > 0 && posix_memalign(&mem, 64, size + MATMUL_PREFETCH_BYTES) == 0)
        type->pack(t, mem);
    return mem;
}

/* An fp16 value from a float in the normal range of fp16 (truncated: any value will do). */
static uint16_t f32_to_half(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    int e = (int)((u >> 23) & 0xFF) - 127 + 15;
    return (uint16_t)((u >> 16 & 0x8000) | (e << 10) | (u >> 13 & 0x3FF));
}

static void test_matvec_by_hand(void) {
    float w[6] = {1, 2, 3, 4, 5, 6}, x[3] = {1, 0.5f, -1}, y[2];
    for (int packed = 0; packed <= 1; packed++) {
        Tensor t = {.data = w, .type = WEIGHT_F32, .rows = 2, .cols = 3};
        void *mem = packed ? pack(&t) : NULL;
        run_matmul(y, &t, x, 1, 0);
        CHECK(y[0] == -1.0f && y[1] == 0.5f, "f32: %g %g, want -1 0.5", y[0], y[1]);
        free(mem);

        uint16_t wb[6]; /* small integers are exact in bf16, and so are x's values */
        for (int i = 0; i < 6; i++) wb[i] = f32_to_bf16(w[i]);
        Tensor tb = {.data = wb, .type = WEIGHT_BF16, .rows = 2, .cols = 3};
        mem = packed ? pack(&tb) : NULL;
        run_matmul(y, &tb, x, 1, 0);
        CHECK(y[0] == -1.0f && y[1] == 0.5f, "bf16: %g %g, want -1 0.5", y[0], y[1]);
        free(mem);
    }

    /* Q8_0, group 32, one group per row: weights q * 0.5; x's max 1 maps to 127 and 0.5 to
     * 63.5, which rounds to 64: x becomes 1, 64/127, -1. */
    int8_t wq[6] = {2, 4, 6, 8, 10, 12};
    float ws[2] = {0.5f, 0.5f};
    Tensor tq = {.data = wq, .scales = ws, .type = WEIGHT_Q8_0, .group_size = 32, .rows = 2,
                 .cols = 3};
    run_matmul(y, &tq, x, 1, 0);
    float want0 = (2 * 127 + 4 * 64 - 6 * 127) * 0.5f / 127.0f;
    float want1 = (8 * 127 + 10 * 64 - 12 * 127) * 0.5f / 127.0f;
    CHECK(close_to(y[0], want0, 1e-6f) && close_to(y[1], want1, 1e-6f),
          "q8: %g %g, want %g %g", y[0], y[1], want0, want1);

    /* Q4_0: one row of 40 weights, two blocks (d = 0.5 and 0.25; byte i low nibble = weight
     * i, high nibble = weight i + 16): the first block all nibble 9 (+0.5) but weight 16
     * nibble 0 (-4); the second block's 8 weights nibble 6 (-0.5), its padding nibble 8. x is
     * 1 everywhere (each value quantized to 127, scale 1/127). */
    uint8_t q4[36] = {0};
    uint16_t d0 = f32_to_half(0.5f), d1 = f32_to_half(0.25f);
    q4[0] = (uint8_t)d0, q4[1] = (uint8_t)(d0 >> 8);
    q4[18] = (uint8_t)d1, q4[19] = (uint8_t)(d1 >> 8);
    for (int i = 0; i < 16; i++) q4[2 + i] = 0x99, q4[20 + i] = i < 8 ? 0x86 : 0x88;
    q4[2] = 0x09; /* weight 16: nibble 0 */
    float ones[40], y4[1];
    for (int i = 0; i < 40; i++) ones[i] = 1.0f;
    Tensor t4 = {.data = q4, .type = WEIGHT_Q4_0, .group_size = 32, .rows = 1, .cols = 40};
    float want = 31 * 0.5f + -4.0f + 8 * -0.5f; /* 7.5 */
    for (int packed = 0; packed <= 1; packed++) {
        void *mem = packed ? pack(&t4) : NULL;
        run_matmul(y4, &t4, ones, 1, 0);
        CHECK(close_to(y4[0], want, 1e-5f), "q4_0: %g, want %g", y4[0], want);
        free(mem);
    }
    float row[40];
    weight_q4_0.dequantize_row(row, &t4, 0);
    CHECK(row[0] == 0.5f && row[16] == -4.0f && row[32] == -0.5f && row[39] == -0.5f,
          "q4_0 dequantized: %g %g %g %g", row[0], row[16], row[32], row[39]);
}

/* Every fp16 scale as Q4_0 reads it (a weight of nibble 9 is 1 x d): the value fp16 defines,
 * either sign, subnormals, infinities and NaN included. The random matrices below hold the VNNI
 * kernel's vcvtph2ps to the reference's conversion; this holds that conversion on every build. */
static void test_q4_0_scales(void) {
    int n = 1 << 16, bad = 0;
    uint8_t *b = malloc((size_t)n * 18);
    for (int h = 0; h < n; h++) {
        b[18 * h] = (uint8_t)h, b[18 * h + 1] = (uint8_t)(h >> 8);
        memset(b + 18 * h + 2, 0x88, 16);
        b[18 * h + 2] = 0x89; /* weight 0: nibble 9 */
    }
    Tensor t = {.data = b, .type = WEIGHT_Q4_0, .group_size = 32, .rows = n, .cols = 32};
    for (int h = 0; h < n; h++) {
        float row[32];
        weight_q4_0.dequantize_row(row, &t, h);
        int e = h >> 10 & 31, m = h & 0x3FF;
        float want = e == 0 ? ldexpf((float)m, -24)
                   : e == 31 ? (m ? NAN : INFINITY) : ldexpf((float)(m | 0x400), e - 25);
        if (h & 0x8000) want = -want;
        bad += !(memcmp(&row[0], &want, 4) == 0 || (isnan(row[0]) && isnan(want)));
    }
    CHECK(bad == 0, "%d of the 65536 fp16 scales read as another value", bad);
    free(b);
}

/* The fast quantizer must agree bit for bit with the reference, ties and all. */
static void test_quantize_q8_vs_ref(void) {
    static const int SIZES[] = {1, 5, 31, 33, 64, 100, 172, 291};
    static const int GROUPS[] = {32, 64, 48, 7};
    for (int a = 0; a < COUNT(SIZES); a++)
        for (int b = 0; b < COUNT(GROUPS); b++) {
            int n = SIZES[a], gs = GROUPS[b], groups = (n + gs - 1) / gs;
            float *x = random_floats(n);
            /* halves on an exact scale of 1 (the group max is 127) are ties for rounding */
            for (int j = 0; j < n; j++)
                x[j] = j % gs == 0 ? 127.0f : (float)((int)(next_u32() % 255) - 127) / 2.0f;
            if (n > 40) x[n - 1] = uniform(); /* and some ordinary values */
            int8_t q[300], q_ref[300];
            float s[300], s_ref[300];
            quantize_q8(q, s, x, n, gs);
            quantize_q8_ref(q_ref, s_ref, x, n, gs);
            CHECK(memcmp(q, q_ref, n) == 0 && memcmp(s, s_ref, sizeof(float) * groups) == 0,
                  "n %d group %d: fast quantizer differs from the reference", n, gs);
            free(x);
        }
    float odd[4] = {NAN, 1.0f, INFINITY, -2.0f}; /* defined results even for broken input */
    int8_t q[4], q_ref[4];
    float s[2], s_ref[2];
    quantize_q8(q, s, odd, 4, 2);
    quantize_q8_ref(q_ref, s_ref, odd, 4, 2);
    CHECK(memcmp(q, q_ref, 4) == 0, "NaN/inf: %d %d %d %d vs %d %d %d %d", q[0], q[1], q[2],
          q[3], q_ref[0], q_ref[1], q_ref[2], q_ref[3]);
}

static void test_quantize_q8(void) {
    /* 7 values in groups of 3: the last group is short; a zero group gets scale 0; with a
     * scale of exactly 1, halves round away from zero as roundf does */
    float x[7] = {127, 0.5f, -2.5f, 0, 0, 0, 3};
    int8_t q[7];
    float s[3];
    quantize_q8(q, s, x, 7, 3);
    CHECK(s[0] == 1.0f && s[1] == 0.0f && s[2] == 3.0f / 127.0f, "scales %g %g %g", s[0], s[1],
          s[2]);
    CHECK(q[0] == 127 && q[1] == 1 && q[2] == -3 && q[3] == 0 && q[6] == 127,
          "q = %d %d %d %d %d", q[0], q[1], q[2], q[3], q[6]);
}

/* ------------------------------------------------------------------------------------------ */
/* Every fast path against the reference, on sizes that leave partial vectors everywhere, and
 * on the whole blocks real models have (32 and 64: no short block of columns, no partial
 * block of rows) */

static const int ROWS[] = {1, 5, 17, 32, 33, 64, 70};
static const int COLS[] = {1, 7, 17, 32, 33, 64, 100, 291};
/* chunks of one token; of 2, 4, 5, 6 and 7, which with 19 (8 + 8 + 3) leave a last group of
 * every size, each a case of the kernels' switches over the token count; a whole group (8)
 * and one more */
static const int TOKENS[] = {1, 2, 4, 5, 6, 7, 8, 9, 19};

/* The kernels that sum in another order than the reference may differ from it by float
 * rounding: a few ulps of the sum of |terms|. 1e-5 of that sum is ample for sums of up to a
 * few hundred terms and far below any real bug. */
#define SUM_TOLERANCE 1e-5f

/* The number of the count outputs y further than tolerance x mag from ref. */
static int compare(const float *y, const float *ref, const float *mag, int count) {
    int bad = 0;
    for (int i = 0; i < count; i++)
        if (!(fabsf(y[i] - ref[i]) <= SUM_TOLERANCE * mag[i] + 1e-30f)) bad++;
    return bad;
}

/* The number of outputs whose bits differ (NaN equal to NaN). */
static int differ(const float *y, const float *ref, int count) {
    int bad = 0;
    for (int i = 0; i < count; i++)
        bad += memcmp(&y[i], &ref[i], 4) != 0 && !(isnan(y[i]) && isnan(ref[i]));
    return bad;
}

/* A weight matrix of any type with random weights, and what it owns. */
typedef struct {
    Tensor t;
    void *data, *scales, *packed;
    float *values; /* (rows, cols) the weights as floats, for the sums of |terms| */
} TestMatrix;

/* kind: WEIGHT_* type; gs: Q8_0's group size; tiny: for bf16, weights and activations near
 * and below the smallest normal float (denormal products and sums). */
static TestMatrix test_matrix(int kind, int gs, int rows, int cols, int tiny) {
    TestMatrix m = {.t = {.type = kind, .rows = rows, .cols = cols}};
    size_t n = (size_t)rows * cols;
    m.values = random_floats(n);
    if (kind == WEIGHT_F32) {
        m.data = m.values, m.values = malloc(n * sizeof(float));
        memcpy(m.values, m.data, n * sizeof(float));
    } else if (kind == WEIGHT_BF16) {
        uint16_t *w = m.data = malloc(n * sizeof(uint16_t));
        for (size_t i = 0; i < n; i++) {
            w[i] = f32_to_bf16(m.values[i] * (tiny && i % 3 == 0 ? 1e-19f : 1.0f));
            if (tiny && i % 11 == 0) w[i] = (uint16_t)(w[i] & 0x807F); /* denormal */
            m.values[i] = bf16_to_f32(w[i]);
        }
    } else if (kind == WEIGHT_Q8_0) {
        int groups = (cols + gs - 1) / gs;
        int8_t *q = m.data = malloc(n);
        float *s = m.scales = malloc(sizeof(float) * rows * groups);
        for (size_t i = 0; i < n; i++) q[i] = (int8_t)((int)(next_u32() % 255) - 127);
        for (int i = 0; i < rows * groups; i++) s[i] = 0.01f + 0.01f * (uniform() + 1);
        for (size_t i = 0; i < n; i++) m.values[i] = q[i] * s[i / cols * groups + i % cols / gs];
        m.t.scales = s, m.t.group_size = gs;
    } else { /* Q4_0: random nibbles; scales of either sign, of 2^-6 .. 2^-2 but for every
              * eighth block from the first a subnormal fp16 (0x0001 .. 0x03FF), from the
              * second a zero and from the third the largest fp16, 65504 (0x7BFF) */
        int blocks = (cols + 31) / 32;
        uint8_t *b = m.data = malloc((size_t)rows * blocks * 18);
        for (size_t i = 0; i < (size_t)rows * blocks * 18; i++) b[i] = (uint8_t)next_u32();
        for (int i = 0; i < rows * blocks; i++) {
            float d = (1.0f + (next_u32() % 1000) / 1000.0f) / (float)(8 << next_u32() % 4);
            uint16_t h = i % 8 == 0 ? (uint16_t)(1 + next_u32() % 0x3FF)
                       : i % 8 == 1 ? 0 : i % 8 == 2 ? 0x7BFF : f32_to_half(d);
            h |= next_u32() & 0x8000;
            b[18 * i] = (uint8_t)h, b[18 * i + 1] = (uint8_t)(h >> 8);
        }
        m.t.group_size = 32;
        m.t.data = m.data;
        for (int r = 0; r < rows; r++)
            weight_q4_0.dequantize_row(m.values + (size_t)r * cols, &m.t, r);
    }
    m.t.data = m.data;
    return m;
}

static void free_matrix(TestMatrix *m) {
    free(m->data), free(m->scales), free(m->packed), free(m->values);
}

static const char *type_name(const Tensor *t) { return weight_type(t->type)->name; }

/* Whether this build's product of t gives the reference's bits: all but the plain build's
 * f32 (no FMA to count on) and Q8_0 in its stored layout on AVX2 (sums across lanes). */
static int exact_path(const Tensor *t) {
    const char *isa = weight_type(t->type)->isa;
    if (t->type == WEIGHT_F32) return strcmp(isa, "plain") != 0;
    if (t->type == WEIGHT_Q8_0) return t->packed || !strcmp(isa, "plain");
    return 1;
}

/* y, a fast path's output for n tokens of x through m, against matmul_ref: bit for bit where
 * the path is exact, else within the tolerance. */
static void check_against_ref(const TestMatrix *m, const float *x, int n, const float *y,
                              const char *what) {
    const Tensor *t = &m->t;
    int rows = t->rows, cols = t->cols;
    float *ref = malloc(sizeof(float) * n * rows), *mag = calloc((size_t)n * rows, sizeof(float));
    run_matmul(ref, t, x, n, 1);
    if (exact_path(t)) {
        int bad = differ(y, ref, n * rows);
        CHECK(bad == 0, "%s %s rows %d cols %d tokens %d: %d outputs not the reference's",
              type_name(t), what, rows, cols, n, bad);
    } else {
        for (int k = 0; k < n; k++)
            for (int i = 0; i < rows; i++)
                for (int j = 0; j < cols; j++)
                    mag[k * rows + i] += fabsf(m->values[(size_t)i * cols + j] * x[k * cols + j]);
        int bad = compare(y, ref, mag, n * rows);
        CHECK(bad == 0, "%s %s rows %d cols %d tokens %d: %d outputs differ", type_name(t),
              what, rows, cols, n, bad);
    }
    free(ref), free(mag);
}

/* matmul against matmul_ref for n tokens of x (check_against_ref); and a chunk gives what its
 * tokens give one at a time, bit for bit. */
static void check_matmul(const TestMatrix *m, const float *x, int n, const char *what) {
    const Tensor *t = &m->t;
    int rows = t->rows, cols = t->cols;
    float *y = malloc(sizeof(float) * n * rows), *one = malloc(sizeof(float) * rows);
    run_matmul(y, t, x, n, 0);
    check_against_ref(m, x, n, y, what);
    int same = 1;
    for (int k = 0; k < n && n > 1; k++) {
        run_matmul(one, t, x + (size_t)k * cols, 1, 0);
        same &= memcmp(one, y + (size_t)k * rows, sizeof(float) * rows) == 0;
    }
    CHECK(same, "%s %s rows %d cols %d: a chunk of %d tokens differs from single tokens",
          type_name(t), what, rows, cols, n);
    free(y), free(one);
}

static void test_matmul_vs_ref(void) {
    static const int KINDS[][2] = {{WEIGHT_F32, 0}, {WEIGHT_BF16, 0}, {WEIGHT_Q8_0, 32},
                                   {WEIGHT_Q8_0, 64}, {WEIGHT_Q8_0, 48}, {WEIGHT_Q4_0, 32}};
    for (int k = 0; k < COUNT(KINDS); k++)
        for (int a = 0; a < COUNT(ROWS); a++)
            for (int b = 0; b < COUNT(COLS); b++)
                for (int c = 0; c < COUNT(TOKENS); c++) {
                    int rows = ROWS[a], cols = COLS[b], n = TOKENS[c];
                    TestMatrix m = test_matrix(KINDS[k][0], KINDS[k][1], rows, cols, 0);
                    float *x = random_floats((size_t)n * cols);
                    if (cols > 40) /* a zero group: scale 0, must not turn into NaN */
                        for (int j = 0; j < 32; j++) x[j] = 0.0f;
                    check_matmul(&m, x, n, "stored");
                    m.packed = pack(&m.t);
                    if (m.packed) check_matmul(&m, x, n, "packed");
                    free_matrix(&m);
                    free(x);
                }
}

/* A random float of magnitude about 2^-lo .. 2^-hi, either sign (denormal below 2^-126). */
static float tiny_float(int lo, int hi) {
    int k = hi + (int)(next_u32() % (uint32_t)(lo - hi + 1));
    return ldexpf(uniform() + (next_u32() & 1 ? 1.0f : -1.0f), -k);
}

/* bf16 where vdpbf16ps's rounding and flushing show: weights and activations whose products
 * and sums fall near and below the smallest normal float (2^-126), some denormal weights and
 * activations (read as zero), mixed with ordinary values in other rows and tokens; chunk sizes
 * past a tile, and a matrix big enough to be shared among threads. */
static void test_matmul_bf16_edges(void) {
    static const int SHAPES[][3] = {{37, 291, 11}, {70, 64, 3}, {300, 700, 9}};
    for (int s = 0; s < COUNT(SHAPES); s++) {
        int rows = SHAPES[s][0], cols = SHAPES[s][1], n = SHAPES[s][2];
        TestMatrix m = test_matrix(WEIGHT_BF16, 0, rows, cols, 0);
        uint16_t *w = m.data;
        for (int r = 0; r < rows; r++)
            for (int j = 0; j < cols; j++) {
                size_t i = (size_t)r * cols + j;
                if (r % 4 == 0) w[i] = f32_to_bf16(tiny_float(76, 62));
                if (r % 4 == 1) w[i] = f32_to_bf16(tiny_float(64, 62));
                if (j % 17 == 5) w[i] = (uint16_t)(next_u32() & 0x807F); /* denormal */
                m.values[i] = bf16_to_f32(w[i]);
            }
        float *x = random_floats((size_t)n * cols);
        for (int t = 0; t < n; t++)
            for (int j = 0; j < cols; j++) {
                float *v = &x[(size_t)t * cols + j];
                if (t % 3 == 0) *v = tiny_float(76, 62);
                if (t % 3 == 1) *v = tiny_float(64, 62);
                if (j % 13 == 3) *v = tiny_float(130, 127); /* below and around 2^-126 */
            }
        check_matmul(&m, x, n, "tiny");
        m.packed = pack(&m.t);
        if (m.packed) check_matmul(&m, x, n, "packed, tiny");
        free_matrix(&m);
        free(x);
    }
}

/* share.h with its threads played one step at a time, in a scripted and then in random
 * orders: a thread takes a quarter of its own share's units from the front, steals the back
 * half of the fullest other share when it runs out, gets -1 only once every unit is taken,
 * and every unit is taken exactly once, also when some shares have no thread to own them
 * (a team smaller than the shares dealt out). */
static void test_share_steps(void) {
    Share s[SHARES_MAX];
    int first, end, expect = 66;
    share_init(s, 3, 100); /* [0, 33), [33, 66), [66, 100) */
    first = share_take(s, 3, 0, &end);
    CHECK(first == 0 && end == 9, "thread 0 took %d .. %d, not a quarter of 33 from 0", first,
          end - 1);
    while ((first = share_take(s, 3, 2, &end)) >= 66) { /* thread 2 through its own share */
        CHECK(first == expect && end - first == (100 - first + 3) / 4,
              "thread 2 took %d .. %d after %d, not a quarter of what was left", first, end - 1,
              expect - 1);
        expect = end;
    }
    CHECK(expect == 100, "thread 2 left its own share at %d", expect);
    /* thread 0 has 24 left, thread 1 all 33: thread 2 takes the back 17 of thread 1's */
    CHECK(first == 49 && end == 54, "thread 2 stole %d .. %d, not 49 .. 53", first, end - 1);
    first = share_take(s, 3, 1, &end);
    CHECK(first == 33 && end == 37, "thread 1 took %d .. %d, not 33 .. 36", first, end - 1);

    static unsigned char taken[400];
    int trials = 3000, wrong = 0, early = 0, missed = 0;
    for (int trial = 0; trial < trials; trial++) {
        int count = 1 + (int)(next_u32() % 8), units = (int)(next_u32() % 400), left = units;
        int finished = 0, done[8] = {0};
        memset(taken, 0, sizeof taken);
        share_init(s, count, units);
        if (trial % 3 == 0) /* some threads never come: their shares are only stolen */
            for (int t = 1; t < count; t++)
                if (next_u32() % 2) done[t] = 1, finished++;
        while (finished < count) {
            int me = (int)(next_u32() % (uint32_t)count);
            if (done[me]) continue;
            first = share_take(s, count, me, &end);
            if (first < 0) {
                done[me] = 1, finished++;
                early += left > 0;
                continue;
            }
            if (end <= first) wrong++;
            for (int u = first; u < end; u++)
                if (u >= units || taken[u]) {
                    wrong++;
                } else {
                    taken[u] = 1, left--;
                }
        }
        missed += left > 0;
    }
    CHECK(wrong == 0, "%d units taken twice or out of range in %d trials", wrong, trials);
    CHECK(early == 0, "%d threads told there was nothing left while units were", early);
    CHECK(missed == 0, "%d of %d trials left units untaken", missed, trials);
}

/* share.h under real threads, more of them than cores so that the system stops some in the
 * middle of their shares and the others steal: every unit taken exactly once, and some taken
 * by a thread other than the one whose share they started in (else nothing was stolen and
 * the test proved nothing). */
static void test_share_threads(void) {
    enum { UNITS = 5000 };
    static _Atomic int times[UNITS];
    _Atomic long stolen = 0;
    int wrong = 0, rounds = 0;
    for (int threads = 2; threads <= 8; threads *= 2)
        for (int round = 0; round < 40; round++, rounds++) {
            Share s[SHARES_MAX];
            for (int u = 0; u < UNITS; u++) atomic_init(&times[u], 0);
            share_init(s, threads, UNITS);
            #pragma omp parallel num_threads(threads)
            {
                int me = 0, team = 1;
#ifdef _OPENMP
                me = omp_get_thread_num(), team = omp_get_num_threads();
#endif
                /* without OpenMP one thread plays every share in turn */
                for (int t = me; t < threads; t += team) {
                    long away = 0, lo = (long)UNITS * t / threads;
                    long hi = (long)UNITS * (t + 1) / threads;
                    for (int u, end; (u = share_take(s, threads, t, &end)) >= 0;)
                        for (; u < end; u++) {
                            atomic_fetch_add_explicit(&times[u], 1, memory_order_relaxed);
                            away += u < lo || u >= hi;
                        }
                    atomic_fetch_add_explicit(&stolen, away, memory_order_relaxed);
                }
            }
            for (int u = 0; u < UNITS; u++) wrong += atomic_load(&times[u]) != 1;
        }
    CHECK(wrong == 0, "%d units not taken exactly once in %d rounds", wrong, rounds);
    CHECK(atomic_load(&stolen) > 0, "no unit stolen in %d rounds", rounds);
}

/* team.h: every thread of a call runs exactly once, with the call's size; what it wrote is
 * seen by the caller after the call (plain stores, no atomics); a call from inside a call,
 * or from a second thread while the team is busy, runs on its caller alone; and the team
 * wakes from its sleep. */
enum { TEAM_TEST_MAX = 8 };
typedef struct {
    int runs[TEAM_MAX], told[TEAM_MAX], inner[TEAM_MAX];
    int nest; /* call team_run again from inside */
} TeamProbe;

static void team_inner(void *probe, int me, int n) { ((TeamProbe *)probe)->inner[0] += n; }

static void team_probe(void *probe, int me, int n) {
    TeamProbe *p = probe;
    p->runs[me]++, p->told[me] = n;
    if (p->nest) {
        TeamProbe inner = {0};
        team_run(4, team_inner, &inner); /* the team is busy: this thread alone, n = 1 */
        p->inner[me] = inner.inner[0];
    }
}

/* The calls of one round that went wrong, 0 if none. */
static int team_round(int n, int nest) {
    TeamProbe p = {.nest = nest};
    team_run(n, team_probe, &p);
    int wrong = 0;
    for (int me = 0; me < TEAM_MAX; me++)
        wrong += me < n ? p.runs[me] != 1 || p.told[me] != n || (nest && p.inner[me] != 1)
                        : p.runs[me] != 0;
    return wrong;
}

/* team_for: every item of 0 .. count - 1 in exactly one part, parts in order. */
static void team_for_count(void *hits, int from, int to) {
    for (int i = from; i < to; i++) ((int *)hits)[i]++;
}

static void test_team(void) {
    int wrong = 0, calls = 0;
    for (int n = 1; n <= TEAM_TEST_MAX; n++)
        for (int count = 0; count <= 50; count++) {
            int hits[50] = {0};
            team_for(n, count, team_for_count, hits);
            for (int i = 0; i < count; i++) wrong += hits[i] != 1;
        }
    CHECK(wrong == 0, "team_for: %d items not run exactly once", wrong);
    for (int round = 0; round < 100; round++)
        for (int n = 1; n <= TEAM_TEST_MAX; n++, calls++) /* n = 1 leaves the team free */
            wrong += team_round(n, n > 1 && round % 3 == 0);
    CHECK(wrong == 0, "%d threads of %d calls ran wrongly", wrong, calls);
    wrong = 0;
    /* past TEAM_SPIN_NS (2 ms) the helpers sleep: the next call must wake them */
    for (int round = 0; round < 5; round++, calls++) {
        nanosleep(&(struct timespec){0, 5000000}, NULL);
        wrong += team_round(2 + round % 3, 0);
    }
    CHECK(wrong == 0, "after a sleep: %d threads ran wrongly", wrong);
    /* two threads of the program calling at once: one gets the team, the other runs alone */
    _Atomic int bad = 0;
    #pragma omp parallel num_threads(2)
    for (int round = 0; round < 500; round++) {
        TeamProbe p = {0};
        team_run(2, team_probe, &p);
        int n = p.told[0], ok = p.runs[0] == 1 && (n == 1 || n == 2) && p.runs[1] == (n == 2);
        if (!ok) atomic_fetch_add(&bad, 1);
    }
    CHECK(atomic_load(&bad) == 0, "concurrent callers: %d calls ran wrongly", atomic_load(&bad));
    /* the child of a fork has none of the parent's helpers: it must start its own */
    team_round(2, 0);
    fflush(stdout);
    pid_t child = fork();
    if (child == 0) _exit(team_round(2, 0) == 0 && team_round(3, 1) == 0 ? 0 : 1);
    int status = -1, waited = 0;
    while (child > 0 && waitpid(child, &status, WNOHANG) == 0 && waited++ < 1000)
        nanosleep(&(struct timespec){0, 10000000}, NULL);
    if (waited > 1000) kill(child, SIGKILL), waitpid(child, &status, 0);
    CHECK(child > 0 && waited <= 1000 && WIFEXITED(status) && WEXITSTATUS(status) == 0,
          "a team call in a forked child %s", waited > 1000 ? "hung" : "went wrong");
}

/* Every type on a matrix large enough to be shared among the threads, in units of rows by
 * token groups: the threads must not change a bit. */
typedef struct {
    float *y;
    const Tensor *t;
    const float *x;
    int n;
} InsideCall;

static void matmul_inside(void *call, int me, int n) {
    InsideCall *c = call;
    if (me == 0) run_matmul(c->y, c->t, c->x, c->n, 0);
}

static void test_matmul_threads(void) {
    static const int KINDS[][2] = {{WEIGHT_F32, 0}, {WEIGHT_BF16, 0}, {WEIGHT_Q8_0, 64},
                                   {WEIGHT_Q4_0, 32}};
    for (int k = 0; k < COUNT(KINDS); k++) {
        int rows = 300, cols = 700, n = 21;
        TestMatrix m = test_matrix(KINDS[k][0], KINDS[k][1], rows, cols, 0);
        float *x = random_floats((size_t)n * cols);
        m.packed = pack(&m.t);
        check_matmul(&m, x, n, m.packed ? "packed, shared" : "shared");
        /* called from inside a call of the team, which is then busy: the caller alone takes
         * every share (team.h), and must give the same numbers */
        for (int tokens = 1; tokens <= n; tokens = tokens == 1 ? n : n + 1) { /* 1, then n */
            float *y = malloc(sizeof(float) * tokens * rows), *inside = malloc(sizeof(float) * tokens * rows);
            run_matmul(y, &m.t, x, tokens, 0);
            for (int i = 0; i < tokens * rows; i++) inside[i] = NAN; /* a row not written shows */
            InsideCall call = {inside, &m.t, x, tokens};
            team_run(2, matmul_inside, &call);
            CHECK(!memcmp(y, inside, sizeof(float) * tokens * rows),
                  "%s, %d tokens: a product inside a team call differs", type_name(&m.t), tokens);
            free(y), free(inside);
        }
        free_matrix(&m);
        free(x);
    }
}

/* f32 prompts as matmul_f32.c runs them: a unit of work is a superblock for a whole chunk of
 * 64 tokens when the matrix has rows enough for every thread, fewer tokens otherwise; the
 * tiles go block by block over the columns (here two of 256 and a short one of 188), their
 * sums kept between blocks. Chunks of exactly a unit, one token more, and two units and
 * more, through a tall and a short matrix. */
static void test_matmul_f32_units(void) {
    static const int ROWS_OF[] = {1000, 40}, TOKENS_OF[] = {64, 67, 130};
    for (int r = 0; r < COUNT(ROWS_OF); r++)
        for (int c = 0; c < COUNT(TOKENS_OF); c++) {
            int rows = ROWS_OF[r], cols = 700, n = TOKENS_OF[c];
            TestMatrix m = test_matrix(WEIGHT_F32, 0, rows, cols, 0);
            float *x = random_floats((size_t)n * cols);
            m.packed = pack(&m.t);
            check_matmul(&m, x, n, m.packed ? "packed, units" : "units");
            free_matrix(&m);
            free(x);
        }
}

/* matmul_many as the forward pass calls it (q, k and v; w1 and w3): products of one input in
 * one call, of one type (one preparation of x, one parallel loop over the rows of all three)
 * or of mixed types (one product after another). Each output must be matmul_ref's, bit for bit
 * where the path is exact, and what matmul gives for its product alone, bit for bit. 5 + 17 +
 * 33 rows of 2411 columns are past the work below which matmul stays on one thread (2^17
 * multiply-adds, simd.h) even for one token, so the threads share the rows of the three. */
static void test_matmul_many(void) {
    static const int KINDS[][2] = {{WEIGHT_F32, 0}, {WEIGHT_BF16, 0}, {WEIGHT_Q8_0, 32},
                                   {WEIGHT_Q8_0, 64}, {WEIGHT_Q4_0, 32}};
    static const int ROWS_OF[] = {5, 17, 33}, TOKENS_OF[] = {1, 19};
    int cols = 2411;
    for (int set = 0; set <= COUNT(KINDS); set++) /* each kind three times, then one of each */
        for (int c = 0; c < COUNT(TOKENS_OF); c++) {
            int n = TOKENS_OF[c], mixed = set == COUNT(KINDS), count = mixed ? COUNT(KINDS) : 3;
            TestMatrix m[COUNT(KINDS)];
            Product p[COUNT(KINDS)];
            float *x = random_floats((size_t)n * cols);
            size_t bytes = 0;
            for (int i = 0; i < count; i++) {
                const int *kind = KINDS[mixed ? i : set];
                m[i] = test_matrix(kind[0], kind[1], ROWS_OF[i % 3], cols, 0);
                m[i].packed = pack(&m[i].t);
                p[i] = (Product){malloc(sizeof(float) * n * m[i].t.rows), &m[i].t};
                size_t need = matmul_scratch_bytes(&m[i].t, n);
                if (need > bytes) bytes = need;
            }
            void *scratch = NULL;
            if (bytes && posix_memalign(&scratch, 64, bytes) != 0) abort();
            matmul_many(p, count, x, n, scratch, bytes);
            for (int i = 0; i < count; i++) {
                const Tensor *t = &m[i].t;
                const char *what = mixed ? "matmul_many, mixed" : "matmul_many";
                check_against_ref(&m[i], x, n, p[i].y, what);
                float *alone = malloc(sizeof(float) * n * t->rows);
                run_matmul(alone, t, x, n, 0);
                CHECK(memcmp(alone, p[i].y, sizeof(float) * n * t->rows) == 0,
                      "%s %s rows %d tokens %d: not what matmul gives alone", type_name(t),
                      what, t->rows, n);
                /* a scratch of one copy of the prepared input, which the threads then share
                 * instead of preparing one each */
                size_t one = weight_type(t->type)->input_stride(t, n) * n;
                memset(alone, 0, sizeof(float) * n * t->rows);
                matmul(alone, t, x, n, scratch, one);
                CHECK(memcmp(alone, p[i].y, sizeof(float) * n * t->rows) == 0,
                      "%s %s rows %d tokens %d: a shared copy of the input gives other numbers",
                      type_name(t), what, t->rows, n);
                free(alone), free(p[i].y), free_matrix(&m[i]);
            }
            free(scratch), free(x);
        }
}

#if defined(__AVX512BF16__) && defined(__AVX512F__)
/* The activations' rounding as the reference states it, against vcvtne2ps2bf16 itself: a
 * one-column bf16 matrix of weight 1 gives each activation's rounded value (the reference's
 * sum of one exact product). Random bit patterns, and values near every exponent, zeros,
 * denormals, infinities and NaN. */
static void test_bf16_rounding_vs_instruction(void) {
    uint16_t one = f32_to_bf16(1.0f);
    Tensor t = {.data = &one, .type = WEIGHT_BF16, .rows = 1, .cols = 1};
    int bad = 0, n = 1 << 16;
    float *x = malloc(sizeof(float) * n), *y = malloc(sizeof(float) * n);
    for (int i = 0; i < n; i++) {
        uint32_t u = i < n / 2 ? next_u32()
                               : (next_u32() & 0x807FFFFFu) | (uint32_t)(i % 256) << 23;
        memcpy(&x[i], &u, 4);
    }
    run_matmul(y, &t, x, n, 1);
    for (int i = 0; i < n; i += 32) {
        uint16_t h[32];
        _mm512_storeu_si512(h, (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + i + 16),
                                                            _mm512_loadu_ps(x + i)));
        for (int k = 0; k < 32; k++) { /* (a zero of either sign: +0 + -0 is +0) */
            float want = bf16_to_f32(h[k]);
            bad += !(want == y[i + k] || (isnan(want) && isnan(y[i + k])));
        }
    }
    CHECK(bad == 0, "%d of %d activations rounded otherwise than vcvtne2ps2bf16", bad, n);
    free(x), free(y);
}
#endif

/* ------------------------------------------------------------------------------------------ */
/* RoPE and attention */

static void test_rope(void) {
    /* head_size 2, position 1, theta 10000: one pair, rotated by exactly 1 radian */
    float c[4], sn[4];
    float freq[4];
    rope_frequencies(freq, 2, 10000.0f, NULL);
    rope_angles(c, sn, freq, 0, 1, 2);
    CHECK(c[0] == 1.0f && sn[0] == 0.0f, "position 0 must not rotate");
    rope_angles(c, sn, freq, 1, 1, 2);
    float v[2] = {1, 0};
    rope(v, c, sn, 1, 1, 2);
    CHECK(close_to(v[0], cosf(1), 1e-7f) && close_to(v[1], sinf(1), 1e-7f), "(1,0) -> %g %g",
          v[0], v[1]);

    /* head_size 8, pair i turns by pos * 10000^(-2i/8); every pair keeps its length */
    int hs = 8, pos = 37;
    rope_frequencies(freq, hs, 10000.0f, NULL);
    rope_angles(c, sn, freq, pos, 1, hs);
    CHECK(close_to(c[1], cosf(pos * powf(10000.0f, -0.25f)), 1e-5f), "pair 1 at %d: cos %g",
          pos, c[1]);
    float q[16], before[16];
    for (int i = 0; i < 16; i++) q[i] = before[i] = uniform();
    rope(q, c, sn, 1, 2, hs);
    for (int i = 0; i < 16; i += 2) {
        float r0 = hypotf(before[i], before[i + 1]), r1 = hypotf(q[i], q[i + 1]);
        CHECK(close_to(r0, r1, 1e-6f), "pair %d: length %g became %g", i / 2, r0, r1);
    }
}

/* RoPE's frequencies for head_size hs (theta 10000), for kv_cache_init, which copies them. */
static const float *freq_for(int hs) {
    static float freq[1024];
    rope_frequencies(freq, hs, 10000.0f, NULL);
    return freq;
}

static void test_attention_by_hand(void) {
    /* one head of size 2, two positions: scores 0 and ln 3 after the 1/sqrt(2) scaling, so
     * the weights are 1/4 and 3/4 and the output 1/4 v0 + 3/4 v1 */
    int hs = 2, seq = 4;
    KvCache kv;
    kv_cache_init(&kv, KV_F32, 1, 1, hs, seq, NULL, 1, 0, freq_for(hs));
    float att[4], out[2], ref[2];
    float q[2] = {1, 0}, k0[2] = {0, 0}, k1[2] = {sqrtf(2) * logf(3), 0};
    float v0[2] = {4, 0}, v1[2] = {0, 8};
    kv_cache_store(&kv, 0, k0, v0, 1, 0);
    kv_cache_store(&kv, 0, k1, v1, 1, 1);
    attention_weights(ref, att, q, &kv, 0, 1, 1);
    CHECK(close_to(att[0], 0.25f, 1e-6f) && close_to(att[1], 0.75f, 1e-6f), "weights %g %g",
          att[0], att[1]);
    CHECK(close_to(ref[0], 1.0f, 1e-5f) && close_to(ref[1], 6.0f, 1e-5f), "ref %g %g, want 1 6",
          ref[0], ref[1]);
    attention(out, q, NULL, NULL, &kv, 0, 1, 1, 1);
    CHECK(close_to(out[0], 1.0f, 1e-5f) && close_to(out[1], 6.0f, 1e-5f), "out %g %g, want 1 6",
          out[0], out[1]);
    attention(out, q, NULL, NULL, &kv, 0, 1, 0, 1); /* causal: position 0 sees only v0 */
    CHECK(out[0] == 4.0f && out[1] == 0.0f, "position 0 out %g %g, want 4 0", out[0], out[1]);
    kv_cache_free(&kv);

    /* a window of 1: each position sees itself only, so the output is its own value */
    int one = 1;
    kv_cache_init(&kv, KV_F32, 1, 1, hs, seq, &one, 1, 0, freq_for(hs));
    kv_cache_store(&kv, 0, k0, v0, 1, 0);
    kv_cache_store(&kv, 0, k1, v1, 1, 1);
    attention(out, q, NULL, NULL, &kv, 0, 1, 1, 1);
    attention_weights(ref, att, q, &kv, 0, 1, 1);
    CHECK(out[0] == 0.0f && out[1] == 8.0f && att[0] == 0.0f && att[1] == 1.0f,
          "window 1: out %g %g, weights %g %g", out[0], out[1], att[0], att[1]);
    kv_cache_free(&kv);
}

/* How many of the pages of the first `bytes` at p are resident (p on a page). */
static size_t resident_pages(const void *p, size_t bytes) {
    size_t page = (size_t)sysconf(_SC_PAGESIZE), n = (bytes + page - 1) / page, count = 0;
    unsigned char *in = malloc(n);
    if (mincore((void *)p, bytes, in) != 0) n = 0;
    for (size_t i = 0; i < n; i++) count += in[i] & 1;
    free(in);
    return count;
}

/* The cache's memory (kv_cache_init): one of 8 to 64 MB faulted in at once (all of its first
 * megabyte resident before anything is stored), smaller and larger ones untouched until
 * stored (none of it resident). Either way every slot reads zero until it is stored, and
 * the last slot of the last head is inside the mapping and keeps what is stored there, for
 * each type. */
static void test_kv_cache_memory(void) {
    /* 0.1-0.5 MB, 8-34 MB and 134-537 MB, depending on the type */
    int hs = 64, heads = 2, seqs[3] = {256, 1 << 14, 1 << 18};
    for (int big = 0; big <= 2; big++)
        for (int type = KV_F32; type <= KV_Q8; type++) {
            int seq = seqs[big];
            KvCache kv;
            CHECK(kv_cache_init(&kv, type, 2, heads, hs, seq, NULL, 1, 0, freq_for(hs)) == 0,
                  "seq_len %d type %d: cannot allocate", seq, type);
            size_t mb = (size_t)1 << 20, pages = mb / (size_t)sysconf(_SC_PAGESIZE);
            size_t resident = resident_pages(kv.keys, big == 0 ? 4096 : mb);
            CHECK(big == 1 ? resident == pages : resident == 0, "seq_len %d type %d: %zu pages "
                  "of the keys resident before any store", seq, type, resident);
            float v[2 * 64], k[2 * 64], got[64];
            for (int i = 0; i < heads * hs; i++) k[i] = (float)(i % 7) - 3, v[i] = (float)(i % 5) + 1;
            kv_cache_store(&kv, 1, k, v, 1, seq - 1);
            for (int value = 0; value <= 1; value++) {
                float zero = 0.0f, same = 0.0f;
                kv_cache_read(got, &kv, 1, 0, seq - 2, value);
                for (int d = 0; d < hs; d++) zero += fabsf(got[d]);
                kv_cache_read(got, &kv, 0, 0, 0, value);
                for (int d = 0; d < hs; d++) zero += fabsf(got[d]);
                kv_cache_read(got, &kv, 1, heads - 1, seq - 1, value);
                const float *want = (value ? v : k) + (heads - 1) * hs;
                for (int d = 0; d < hs; d++) same = fmaxf(same, fabsf(got[d] - want[d]));
                CHECK(zero == 0.0f, "seq_len %d type %d: unstored %s not zero", seq, type,
                      value ? "values" : "keys");
                /* small integers are exact in bf16; q8 rounds to steps of 5/127 */
                CHECK(same <= (type == KV_Q8 ? 5.0f / 254 : 0.0f), "seq_len %d type %d: the last %s "
                      "read back %g away", seq, type, value ? "value" : "key", same);
            }
            kv_cache_free(&kv);
        }
}

static void test_gqa_head_mapping(void) {
    /* 6 query heads over 3 KV heads: heads 0,1 read KV head 0, heads 2,3 KV head 1, heads 4,5
     * KV head 2. With one position the output of a head is its KV head's value. */
    int hs = 4, seq = 3, kv_heads = 3, heads = 6;
    KvCache kv;
    kv_cache_init(&kv, KV_F32, 1, kv_heads, hs, seq, NULL, 1, 0, freq_for(hs));
    float k[12], v[12], q[24], out[24], att[18];
    for (int i = 0; i < 12; i++) k[i] = uniform(), v[i] = (float)(i / hs + 1) * 10 + i % hs;
    for (int i = 0; i < 24; i++) q[i] = uniform();
    kv_cache_store(&kv, 0, k, v, 1, 0);
    for (int fast = 0; fast <= 1; fast++) {
        if (fast) attention(out, q, NULL, NULL, &kv, 0, 1, 0, heads);
        else attention_ref(out, att, q, &kv, 0, 1, 0, heads);
        for (int h = 0; h < heads; h++)
            for (int i = 0; i < hs; i++)
                CHECK(out[h * hs + i] == v[(h / 2) * hs + i], "%s: head %d reads the wrong KV "
                      "head: %g", fast ? "attention" : "attention_ref", h, out[h * hs + i]);
    }
    kv_cache_free(&kv);
}

/* ---- the tiled attention against the two-pass reference ---- */

/* A cache of the given shape filled with random keys and values at positions 0 .. len - 1,
 * stored a chunk of `chunk` positions at a time (a windowed layer's ring overwrites as it
 * goes, as in the model). Queries are three times the size of keys, so that softmaxes are
 * peaked rather than flat. */
typedef struct {
    int type, n_layers, kv_heads, heads, hs, seq, chunk, sinks;
    int window[2];
} Shape;

static void fill(KvCache *kv, const Shape *s, int layer, int from, int to) {
    size_t width = (size_t)s->kv_heads * s->hs;
    for (int p = from; p < to; p += s->chunk) {
        int n = min_int(s->chunk, to - p);
        float *k = random_floats(width * n), *v = random_floats(width * n);
        kv_cache_store(kv, layer, k, v, n, p);
        free(k), free(v);
    }
}

/* The largest |fast - reference| over the outputs of n queries at pos .. pos + n - 1 of a
 * layer whose cache holds them (and nothing later than pos + n - 1 in a ring's place). */
static float fast_vs_ref(KvCache *kv, const Shape *s, int layer, int n, int pos) {
    size_t width = (size_t)s->heads * s->hs;
    float *q = calloc(width * n, sizeof(float)), *out = malloc(sizeof(float) * width * n);
    float *ref = malloc(sizeof(float) * width * n), *att = malloc(sizeof(float) * s->heads * s->seq);
    for (size_t i = 0; i < width * n; i++) q[i] = 3.0f * uniform();
    attention(out, q, NULL, NULL, kv, layer, n, pos, s->heads);
    attention_ref(ref, att, q, kv, layer, n, pos, s->heads);
    float worst = 0.0f;
    for (size_t i = 0; i < width * n; i++) worst = fmaxf(worst, fabsf(out[i] - ref[i]));
    if (!(worst <= 1.0f)) worst = INFINITY; /* NaN: fail loudly */
    free(q), free(out), free(ref), free(att);
    return worst;
}

/* Shapes: plain multi-head, grouped-query (4 and 8 per KV head), multi-query; head sizes
 * from 2 to 130 (odd numbers of SIMD vectors, more than one block of 64 outputs); windows
 * and sink slots. Positions cross tiles of 64 and rings of every size; chunks of 1, 7 and
 * 64 queries, so items hold one query or many with different last positions. */
static void test_attention_vs_ref(void) {
    static const Shape shapes[] = {
        {KV_F32, 1, 4, 4, 64, 200, 7, 0, {0}},    {KV_F32, 1, 2, 8, 64, 300, 64, 0, {0}},
        {KV_F32, 1, 4, 32, 64, 160, 64, 0, {0}},  {KV_F32, 1, 1, 6, 10, 150, 7, 0, {0}},
        {KV_F32, 1, 3, 9, 6, 140, 64, 0, {0}},    {KV_F32, 1, 2, 4, 130, 100, 7, 0, {0}},
        {KV_F32, 1, 1, 1, 2, 90, 1, 0, {0}},      {KV_F32, 1, 2, 6, 80, 180, 64, 4, {0}},
        {KV_BF16, 1, 2, 8, 64, 200, 7, 0, {0}},   {KV_Q8, 1, 2, 8, 64, 200, 7, 0, {0}},
        {KV_Q8, 1, 1, 3, 12, 90, 64, 2, {0}},     {KV_BF16, 1, 3, 3, 18, 90, 1, 0, {0}},
        {KV_F32, 2, 2, 4, 16, 200, 7, 0, {5, 0}}, {KV_F32, 2, 2, 4, 16, 300, 64, 3, {70, 0}},
        {KV_F32, 1, 1, 2, 8, 100, 7, 0, {1}},     {KV_Q8, 2, 2, 4, 16, 200, 7, 4, {0, 9}},
        {KV_BF16, 1, 2, 4, 16, 200, 64, 0, {130}}, {KV_Q8, 1, 3, 3, 48, 300, 7, 4, {0}},
        /* heads of 2048: max_rows 4, so a lone row's runs stop every 4 tiles (256 positions) */
        {KV_F32, 1, 2, 2, 2048, 700, 7, 0, {0}},  {KV_Q8, 1, 1, 1, 2048, 700, 64, 4, {0}},
    };
    for (int si = 0; si < COUNT(shapes); si++) {
        const Shape *s = &shapes[si];
        KvCache kv;
        CHECK(kv_cache_init(&kv, s->type, s->n_layers, s->kv_heads, s->hs, s->seq, s->window,
                            s->chunk, s->sinks, freq_for(s->hs)) == 0, "shape %d: init", si);
        for (int l = 0; l < s->n_layers; l++) {
            float worst = 0.0f;
            /* decode-sized and chunk-sized calls, at positions that straddle tiles of 64 */
            static const int at[] = {0, 1, 50, 63, 64, 65, 100, 127, 128, 190, 250, 300, 520, 650};
            int filled = 0;
            for (int a = 0; a < COUNT(at); a++) {
                int pos = at[a];
                for (int ni = 0; ni < 2; ni++) {
                    int n = ni == 0 ? 1 : s->chunk;
                    if (pos + n > s->seq || pos < filled) continue;
                    /* store up to pos + n - 1 in the model's order, chunk by chunk */
                    fill(&kv, s, l, filled, pos + n);
                    filled = pos + n;
                    worst = fmaxf(worst, fast_vs_ref(&kv, s, l, n, pos));
                }
            }
            CHECK(worst <= 1e-5f, "shape %d (type %d, %d/%d heads, head size %d, window %d, "
                  "sinks %d) layer %d: off the reference by %g", si, s->type, s->heads,
                  s->kv_heads, s->hs, s->window[l], s->sinks, l, worst);
        }
        kv_cache_free(&kv);
    }
}

/* Whether n random queries at pos .. pos + n - 1 of a layer, taken as one chunk, give each
 * query what it gets alone at its position, bit for bit: that is what makes batched prefill
 * agree with token-by-token decoding. Alone, a query of a multi-head model goes through
 * attend_row, which orders the work differently. */
static int chunk_same_as_alone(KvCache *kv, const Shape *s, int layer, int n, int pos) {
    size_t width = (size_t)s->heads * s->hs;
    float *q = random_floats(width * n), *out = malloc(sizeof(float) * width * n);
    float *one = malloc(sizeof(float) * width);
    attention(out, q, NULL, NULL, kv, layer, n, pos, s->heads);
    int same = 1;
    for (int i = 0; i < n; i++) {
        attention(one, q + i * width, NULL, NULL, kv, layer, 1, pos + i, s->heads);
        same &= memcmp(one, out + i * width, sizeof(float) * width) == 0;
    }
    free(q), free(out), free(one);
    return same;
}

static void test_attention_chunk(void) {
    static const Shape shapes[] = {
        {KV_F32, 1, 2, 4, 6, 200, 64, 0, {0}},  {KV_F32, 1, 4, 32, 64, 200, 64, 0, {0}},
        {KV_BF16, 1, 1, 5, 12, 200, 64, 0, {0}}, {KV_Q8, 1, 2, 8, 64, 200, 64, 4, {0}},
        {KV_F32, 1, 2, 2, 16, 200, 64, 0, {20}}, {KV_F32, 1, 3, 3, 48, 200, 64, 4, {0}},
        {KV_Q8, 1, 2, 2, 64, 200, 64, 0, {0}},
    };
    for (int si = 0; si < COUNT(shapes); si++) {
        const Shape *s = &shapes[si];
        int pos = 100, n = 50; /* across the tile boundary at 128 */
        KvCache kv;
        kv_cache_init(&kv, s->type, 1, s->kv_heads, s->hs, s->seq, s->window, s->chunk, s->sinks,
                      freq_for(s->hs));
        fill(&kv, s, 0, 0, pos + n);
        CHECK(chunk_same_as_alone(&kv, s, 0, n, pos),
              "shape %d: a chunk's queries differ from the same queries alone", si);
        kv_cache_free(&kv);
    }
}

/* attention() given the chunk's keys and values stores them itself (decoding: each item its
 * own KV head's, on whichever thread takes it): the outputs and every stored key and value
 * equal kv_cache_store followed by attention() on a cache that already holds them, bit for
 * bit: a prompt in chunks to half the cache, decoding to three quarters, a quarter evicted
 * (the slots then reused hold keys read turned back), decoding to three quarters again;
 * through a window's ring (the one of 8 heads large enough to share among threads) and with
 * sinks. */
static void test_attention_stores(void) {
    static const Shape shapes[] = {
        {KV_F32, 1, 12, 12, 64, 400, 64, 0, {0}}, {KV_Q8, 1, 4, 8, 64, 400, 64, 0, {0}},
        {KV_BF16, 1, 2, 8, 32, 300, 7, 4, {0}},   {KV_F32, 1, 1, 4, 16, 300, 7, 0, {0}},
        {KV_Q8, 1, 3, 3, 48, 300, 7, 2, {70}},    {KV_F32, 1, 6, 6, 130, 300, 64, 0, {0}},
        {KV_F32, 1, 8, 8, 64, 400, 64, 0, {90}},
    };
    for (int si = 0; si < COUNT(shapes); si++) {
        const Shape *s = &shapes[si];
        KvCache mine, theirs;
        CHECK(kv_cache_init(&mine, s->type, 1, s->kv_heads, s->hs, s->seq, s->window, s->chunk,
                            s->sinks, freq_for(s->hs)) == 0 &&
              kv_cache_init(&theirs, s->type, 1, s->kv_heads, s->hs, s->seq, s->window, s->chunk,
                            s->sinks, freq_for(s->hs)) == 0, "shape %d: init", si);
        size_t width = (size_t)s->kv_heads * s->hs, qwidth = (size_t)s->heads * s->hs;
        int same = 1, len = 0, drop = s->seq / 4;
        for (int round = 0; round < 2; round++) {
            for (int n, prompt = round ? 0 : s->seq / 2; len < s->seq * 3 / 4; len += n) {
                n = len < prompt ? min_int(s->chunk, prompt - len) : 1;
                float *k = random_floats(width * n), *v = random_floats(width * n);
                float *q = random_floats(qwidth * n), *a = malloc(sizeof(float) * qwidth * n);
                float *b = malloc(sizeof(float) * qwidth * n);
                attention(a, q, k, v, &mine, 0, n, len, s->heads);
                kv_cache_store(&theirs, 0, k, v, n, len);
                attention(b, q, NULL, NULL, &theirs, 0, n, len, s->heads);
                same &= memcmp(a, b, sizeof(float) * qwidth * n) == 0;
                free(k), free(v), free(q), free(a), free(b);
            }
            if (round == 0) {
                CHECK(kv_cache_evict(&mine, drop, len) == 0 && kv_cache_evict(&theirs, drop, len) == 0,
                      "shape %d: eviction refused", si);
                len -= drop;
            }
        }
        float x[130], y[130];
        int first = s->window[0] ? len - s->window[0] : 0; /* what the ring still holds */
        for (int p = first; p < len; p++)
            for (int h = 0; h < s->kv_heads; h++)
                for (int value = 0; value < 2; value++) {
                    kv_cache_read(x, &mine, 0, h, p, value);
                    kv_cache_read(y, &theirs, 0, h, p, value);
                    same &= memcmp(x, y, sizeof(float) * s->hs) == 0;
                }
        CHECK(same, "shape %d (type %d, %d/%d heads): attention's own stores differ from "
              "kv_cache_store's", si, s->type, s->heads, s->kv_heads);
        kv_cache_free(&mine), kv_cache_free(&theirs);
    }
}

/* bf16 and Q8 caches against f32: the conversion's error, within the bounds docs/ATTENTION.md
 * states, relative to the largest value (values and keys in [-1, 1], peaked softmaxes). */
static void test_kv_types_error(void) {
    Shape s = {KV_F32, 1, 2, 8, 64, 300, 64, 0, {0}};
    float bound[3] = {0.0f, 4e-3f, 1.5e-2f}, worst[3] = {0};
    KvCache kv[3];
    for (int t = 0; t < 3; t++)
        kv_cache_init(&kv[t], t, 1, s.kv_heads, s.hs, s.seq, NULL, s.chunk, 0, freq_for(s.hs));
    size_t width = (size_t)s.kv_heads * s.hs, qwidth = (size_t)s.heads * s.hs;
    float *k = random_floats(width * s.seq), *v = random_floats(width * s.seq);
    float *q = random_floats(qwidth), *out[3];
    for (size_t i = 0; i < qwidth; i++) q[i] *= 3.0f;
    for (int t = 0; t < 3; t++) {
        kv_cache_store(&kv[t], 0, k, v, s.seq, 0);
        out[t] = malloc(sizeof(float) * qwidth);
    }
    for (int pos = 0; pos < s.seq; pos += 37)
        for (int t = 0; t < 3; t++) {
            attention(out[t], q, NULL, NULL, &kv[t], 0, 1, pos, s.heads);
            for (size_t i = 0; i < qwidth; i++) worst[t] = fmaxf(worst[t], fabsf(out[t][i] - out[0][i]));
        }
    for (int t = 1; t < 3; t++) {
        CHECK(worst[t] <= bound[t], "KV type %d: %g from f32, bound %g", t, worst[t], bound[t]);
        /* and the stored vectors themselves: bf16 within 2^-9 relative, Q8 within half a step */
        float back[64], err = 0.0f;
        for (int p = 0; p < s.seq; p += 11) {
            kv_cache_read(back, &kv[t], 0, 1, p, 1);
            const float *x = v + ((size_t)p * s.kv_heads + 1) * s.hs;
            float amax = 0.0f;
            for (int d = 0; d < s.hs; d++) amax = fmaxf(amax, fabsf(x[d]));
            for (int d = 0; d < s.hs; d++) {
                float allowed = t == KV_BF16 ? fabsf(x[d]) / 256.0f : amax / 254.0f * 1.0001f;
                err = fmaxf(err, fabsf(back[d] - x[d]) - allowed);
            }
        }
        CHECK(err <= 0.0f, "KV type %d: a stored value is off by %g more than its rounding", t, err);
    }
    printf("kv types: largest output error from f32: bf16 %.2e, q8 %.2e\n", worst[1], worst[2]);
    for (int t = 0; t < 3; t++) kv_cache_free(&kv[t]), free(out[t]);
    free(k), free(v), free(q);
}

/* A windowed layer's ring holds its last positions wherever they are in the ring: after
 * storing position p (many times round a ring of window + chunk - 1 slots), every position the
 * next query sees reads back what was stored for it. */
static void test_ring_wraparound(void) {
    int hs = 4, seq = 1000, window = 5, chunk = 7;
    KvCache kv;
    kv_cache_init(&kv, KV_F32, 1, 1, hs, seq, &window, chunk, 2, freq_for(hs));
    CHECK(kv.ring[0] == window + chunk - 1, "ring of %d slots", kv.ring[0]);
    int bad = 0;
    for (int p = 0; p < seq; p += chunk) {
        int n = min_int(chunk, seq - p);
        float k[7 * 4], v[7 * 4];
        for (int t = 0; t < n; t++)
            for (int d = 0; d < hs; d++) k[t * hs + d] = (float)(p + t), v[t * hs + d] = -(float)(p + t) - d;
        kv_cache_store(&kv, 0, k, v, n, p);
        for (int t = 0; t < n; t++) /* everything query p + t sees, and the sinks */
            for (int s = p + t - window + 1; s <= p + t; s++) {
                if (s < 0) continue;
                float back[4];
                kv_cache_read(back, &kv, 0, 0, s, 0);
                bad += back[0] != (float)s;
                kv_cache_read(back, &kv, 0, 0, s, 1);
                bad += back[3] != -(float)s - 3;
            }
        float sink[4];
        kv_cache_read(sink, &kv, 0, 0, 1, 0);
        bad += sink[0] != 1.0f;
    }
    CHECK(bad == 0, "%d reads of a wrapped ring gave another position's vector", bad);
    /* 2 sinks and the ring: values in 13 slots, keys in whole blocks of 16 */
    CHECK(kv_cache_bytes(&kv) == (size_t)(2 + window + chunk - 1 + 16) * hs * sizeof(float),
          "a ring of %d slots takes %zu bytes", kv.ring[0], kv_cache_bytes(&kv));
    kv_cache_free(&kv);
}

/* Eviction: after dropping positions sinks .. sinks + drop - 1, position p reads what position
 * p + drop held, its key rotated back by drop positions; the sinks keep theirs. Then the
 * tiled attention (which turns queries instead of keys) still equals the reference (which
 * turns keys) over the turned rings. */
static void test_evict(void) {
    for (int type = KV_F32; type <= KV_Q8; type++)
    for (int heads = 2; heads <= 4; heads += 2) { /* multi-head (attend_row) and GQA */
        Shape s = {type, 2, 2, heads, 16, 120, 7, 3, {0, 11}};
        KvCache kv;
        kv_cache_init(&kv, type, 2, s.kv_heads, s.hs, s.seq, s.window, s.chunk, s.sinks,
                      freq_for(s.hs));
        float freq[8], back[16], want[16], cos[8], sin[8];
        rope_frequencies(freq, s.hs, 10000.0f, NULL);
        float worst_move = 0.0f, worst_attention = 0.0f;
        int len = 0;
        for (int round = 0; round < 5; round++) {
            for (int l = 0; l < 2; l++) fill(&kv, &s, l, len, s.seq);
            len = s.seq;
            /* positions that move: one in the full layer, one the windowed layer's ring holds */
            int drop = 17 + 13 * round, p = 30, p1 = len - drop - 2;
            float before[2][16];
            kv_cache_read(before[0], &kv, 0, 1, p + drop, 0);
            kv_cache_read(before[1], &kv, 1, 1, p1 + drop, 1);
            float sink[16], sink_after[16];
            kv_cache_read(sink, &kv, 0, 0, 2, 0);
            kv_cache_evict(&kv, drop, len);
            len -= drop;
            rope_angles(cos, sin, freq, -drop, 1, s.hs);
            memcpy(want, before[0], sizeof want);
            rope(want, cos, sin, 1, 1, s.hs);
            kv_cache_read(back, &kv, 0, 1, p, 0);
            for (int d = 0; d < s.hs; d++) worst_move = fmaxf(worst_move, fabsf(back[d] - want[d]));
            kv_cache_read(back, &kv, 1, 1, p1, 1); /* a value in the windowed layer's ring */
            for (int d = 0; d < s.hs; d++) worst_move = fmaxf(worst_move, fabsf(back[d] - before[1][d]));
            kv_cache_read(sink_after, &kv, 0, 0, 2, 0);
            CHECK(memcmp(sink, sink_after, sizeof sink) == 0, "type %d: a sink moved", type);
            for (int l = 0; l < 2; l++) {
                worst_attention = fmaxf(worst_attention, fast_vs_ref(&kv, &s, l, 1, len - 1));
                fill(&kv, &s, l, len, len + s.chunk);
                worst_attention = fmaxf(worst_attention, fast_vs_ref(&kv, &s, l, s.chunk, len));
                /* keys of several shifts, tiles cut where the shift changes */
                CHECK(chunk_same_as_alone(&kv, &s, l, s.chunk, len),
                      "type %d, %d heads, layer %d: after eviction a chunk's queries differ "
                      "from the same queries alone", type, heads, l);
            }
            len += s.chunk;
        }
        /* a key is never rewritten: read back, it is the stored one turned by the shift, to
         * float rounding, in every type */
        float allowed = 2e-6f;
        CHECK(worst_move <= allowed, "type %d: a moved vector is off by %g", type, worst_move);
        CHECK(worst_attention <= 1e-5f, "type %d, %d heads: after eviction attention is off "
              "the reference by %g", type, heads, worst_attention);
        /* a caller that keeps saying the cache is full when it is not: the shifts would run
         * past the table of turns, so the evictions are refused, and nothing moves */
        CHECK(kv_cache_evict(&kv, 0, len) < 0 && kv_cache_evict(&kv, len, len) < 0 &&
              kv_cache_evict(&kv, 1, s.seq + 1) < 0, "type %d: an impossible eviction was done", type);
        int refused = 0;
        for (int i = 0; i < 40; i++) refused += kv_cache_evict(&kv, 50, s.seq) < 0;
        CHECK(refused > 0, "type %d: stale lengths pushed shifts past seq_len unrefused", type);
        kv_cache_free(&kv);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* --bench: each weight type's kernels alone, packed as the engine packs them: a 64-token
 * chunk through a 2048 x 768 matrix (the arithmetic: weights and activations in the cache),
 * and one token through 32000 x 768 (decoding: the weights streamed from memory). Best of
 * several runs, on the threads OpenMP gives. */

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void bench(void) {
    static const int KINDS[][2] = {{WEIGHT_F32, 0}, {WEIGHT_BF16, 0}, {WEIGHT_Q8_0, 64},
                                   {WEIGHT_Q4_0, 32}};
    printf("kernels: %s\n", matmul_isa());
    for (int k = 0; k < COUNT(KINDS); k++)
        for (int decode = 0; decode <= 1; decode++) {
            int rows = decode ? 32000 : 2048, cols = 768, n = decode ? 1 : 64;
            TestMatrix m = test_matrix(KINDS[k][0], KINDS[k][1], rows, cols, 0);
            m.packed = pack(&m.t);
            float *x = random_floats((size_t)n * cols), *y = malloc(sizeof(float) * n * rows);
            void *scratch = NULL;
            size_t bytes = matmul_scratch_bytes(&m.t, n);
            if (bytes && posix_memalign(&scratch, 64, bytes) != 0) abort();
            double best = 1e9;
            for (int rep = 0; rep < (decode ? 30 : 10); rep++) {
                double t0 = now();
                matmul(y, &m.t, x, n, scratch, bytes);
                best = fmin(best, now() - t0);
            }
            size_t stored = weight_type(m.t.type)->file_bytes(rows, cols, m.t.group_size);
            if (decode)
                printf("bench %-5s decode  %5d x %d: %8.1f us, %6.1f GB/s of weights\n",
                       type_name(&m.t), rows, cols, best * 1e6, stored / best / 1e9);
            else
                printf("bench %-5s prefill %5d x %d x %d: %8.1f us, %6.1f G multiply-adds/s\n",
                       type_name(&m.t), rows, cols, n, best * 1e6,
                       (double)rows * cols * n / best / 1e9);
            free_matrix(&m), free(x), free(y), free(scratch);
        }
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "--bench")) {
        bench();
        return 0;
    }
    printf("kernels: %s\n", matmul_isa());
    test_rmsnorm();
    test_softmax();
    test_matvec_by_hand();
    test_exp_kernels_vs_ref();
    test_quantize_q8();
    test_quantize_q8_vs_ref();
    test_q4_0_scales();
    test_matmul_vs_ref();
    test_matmul_bf16_edges();
    test_share_steps();
    test_share_threads();
    test_team();
    test_matmul_threads();
    test_matmul_f32_units();
    test_matmul_many();
#if defined(__AVX512BF16__) && defined(__AVX512F__)
    test_bf16_rounding_vs_instruction();
#endif
    test_rope();
    test_attention_by_hand();
    test_gqa_head_mapping();
    test_attention_vs_ref();
    test_attention_chunk();
    test_attention_stores();
    test_kv_types_error();
    test_ring_wraparound();
    test_kv_cache_memory();
    test_evict();
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
