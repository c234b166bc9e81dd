/*
 * kernels.h - the elementwise building blocks of the forward pass.
 *
 * Every kernel is a pure function: output first, inputs const, sizes last, no allocation.
 * The *_ref functions are the plain C versions that define what each kernel computes, and
 * tests/test_kernels.c holds the fast paths to them. The matrix products are in matmul.h.
 */
#ifndef KERNELS_H
#define KERNELS_H

/* Each of n rows of out (n, dim) = the row of x (n, dim) / sqrt(mean(row^2) + eps) * weight
 * (dim). out may alias x. */
void rmsnorm(float *out, const float *x, const float *weight, int n, int dim, float eps);

/* x (n) += y (n): the residual connection. */
void add(float *x, const float *y, int n);

/* Each of n rows of x (n, dim) += bias (dim). */
void add_bias(float *x, const float *bias, int n, int dim);

/* x (n) = softmax(x), in place, subtracting the max first for stability: the reference
 * attention's (attention_ref); the fast attention takes its exponentials a tile at a time. */
void softmax(float *x, int n);

/* out (n) = silu(gate) * up, where silu(x) = x * sigmoid(x): the SwiGLU feedforward's gate.
 * out may alias gate. */
void swiglu(float *out, const float *gate, const float *up, int n);
void swiglu_ref(float *out, const float *gate, const float *up, int n);

/* The index of the largest of x (n), the first one on ties; NaN is never chosen unless it is
 * x[0] (then nothing compares greater). Greedy decoding. */
int argmax_f32(const float *x, int n);
int argmax_f32_ref(const float *x, int n);

#endif
