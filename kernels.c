/*
 * kernels.c - matrix-vector products, RMSNorm and softmax.
 *
 * Nearly all the time of a forward pass is spent in matvec: every weight is read once per
 * token. The plain C versions below are the definition; faster paths must give the same
 * numbers up to float rounding, and tests/test_kernels.c checks that they do.
 */
#include <math.h>

#include "kernels.h"

/* Below this many multiply-adds a matvec is not worth waking a second thread for. */
#define PARALLEL_MIN_WORK (1 << 15)

/* ------------------------------------------------------------------------------------------ */
/* Normalisation and softmax */

void rmsnorm(float *out, const float *x, const float *weight, int n, float eps) {
    float ss = 0.0f;
    for (int i = 0; i < n; i++) ss += x[i] * x[i];
    float scale = 1.0f / sqrtf(ss / n + eps);
    for (int i = 0; i < n; i++) out[i] = weight[i] * (scale * x[i]);
}

void softmax(float *x, int n) {
    float max = x[0];
    for (int i = 1; i < n; i++) if (x[i] > max) max = x[i];
    float sum = 0.0f;
    for (int i = 0; i < n; i++) {
        x[i] = expf(x[i] - max);
        sum += x[i];
    }
    for (int i = 0; i < n; i++) x[i] /= sum;
}

/* ------------------------------------------------------------------------------------------ */
/* Reference matvecs: one row, one output, summed left to right. */

void matvec_f32_ref(float *y, const float *w, const float *x, int rows, int cols) {
    #pragma omp parallel for if ((long)rows * cols >= PARALLEL_MIN_WORK)
    for (int i = 0; i < rows; i++) {
        const float *row = w + (size_t)i * cols;
        float sum = 0.0f;
        for (int j = 0; j < cols; j++) sum += row[j] * x[j];
        y[i] = sum;
    }
}

void matvec_bf16_ref(float *y, const uint16_t *w, const float *x, int rows, int cols) {
    #pragma omp parallel for if ((long)rows * cols >= PARALLEL_MIN_WORK)
    for (int i = 0; i < rows; i++) {
        const uint16_t *row = w + (size_t)i * cols;
        float sum = 0.0f;
        for (int j = 0; j < cols; j++) sum += bf16_to_f32(row[j]) * x[j];
        y[i] = sum;
    }
}

/* Q8_0: each group of group_size weights along a row (the last group of a row may be
 * shorter) is int8 times one scale. The activations are quantized the same way (per group,
 * scale max|x| / 127) so that the inner loop is an integer dot product: that is what makes
 * int8 fast on hardware with VNNI. */
void matvec_q8_ref(float *y, const int8_t *w, const float *scales, const float *x,
                   int rows, int cols, int group_size) {
    int groups = (cols + group_size - 1) / group_size;
    #pragma omp parallel for if ((long)rows * cols >= PARALLEL_MIN_WORK)
    for (int i = 0; i < rows; i++) {
        const int8_t *row = w + (size_t)i * cols;
        float sum = 0.0f;
        for (int g = 0; g < groups; g++) {
            int start = g * group_size;
            int len = cols - start < group_size ? cols - start : group_size;
            float amax = 0.0f;
            for (int j = 0; j < len; j++) amax = fmaxf(amax, fabsf(x[start + j]));
            float xscale = amax / 127.0f;
            float inv = xscale > 0.0f ? 1.0f / xscale : 0.0f;
            int32_t dot = 0;
            for (int j = 0; j < len; j++) dot += row[start + j] * (int32_t)roundf(x[start + j] * inv);
            sum += (float)dot * xscale * scales[(size_t)i * groups + g];
        }
        y[i] = sum;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Dispatch on the weight type */

void matvec(float *y, const Tensor *w, const float *x, int rows, int cols) {
    switch (w->type) {
    case WEIGHT_F32: matvec_f32_ref(y, w->data, x, rows, cols); break;
    case WEIGHT_BF16: matvec_bf16_ref(y, w->data, x, rows, cols); break;
    case WEIGHT_Q8_0: matvec_q8_ref(y, w->data, w->scales, x, rows, cols, w->group_size); break;
    }
}

void dequantize_row(float *out, const Tensor *w, int row, int cols) {
    size_t base = (size_t)row * cols;
    switch (w->type) {
    case WEIGHT_F32: {
        const float *src = (const float *)w->data + base;
        for (int j = 0; j < cols; j++) out[j] = src[j];
        break;
    }
    case WEIGHT_BF16: {
        const uint16_t *src = (const uint16_t *)w->data + base;
        for (int j = 0; j < cols; j++) out[j] = bf16_to_f32(src[j]);
        break;
    }
    case WEIGHT_Q8_0: {
        const int8_t *src = (const int8_t *)w->data + base;
        int groups = (cols + w->group_size - 1) / w->group_size;
        const float *scales = w->scales + (size_t)row * groups;
        for (int j = 0; j < cols; j++) out[j] = src[j] * scales[j / w->group_size];
        break;
    }
    }
}
