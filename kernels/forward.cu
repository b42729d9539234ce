/*
 * forward.cu -- the forward epilogue of one sigmoid layer.
 *
 * Math (batch-first, row-major; B = batch, O = outputs of the layer):
 *     z = a_prev W + b            the GEMM, done by cuBLAS (cupy.matmul), not here
 *     a = σ(z),   σ(x) = 1 / (1 + exp(−x))
 * This file fuses the bias add and the activation into one pass over z:
 *
 *     bias_sigmoid:   z[r, c] <- σ(z[r, c] + b[c])      r < B, c < O      (in place)
 *
 * σ is evaluated in a form that never overflows: with e = exp(−|x|) in (0, 1],
 *     σ(x) = 1 / (1 + e)   for x >= 0,        σ(x) = e / (1 + e)   for x < 0,
 * the same formula as gpubp.reference.sigmoid.
 *
 * Layout: z is B×O row-major (z[r, c] at z[r*O + c]); b has O elements.
 * Outputs: z is overwritten (it holds a afterwards); nothing is accumulated.
 *
 * Kernels, each as _f32 (T = float) and _f64 (T = double):
 *   bias_sigmoid_naive  one thread per element of z.
 *       launch: 1-D, any block size, grid = ceil_div(B*O, block).
 *   bias_sigmoid        each thread handles EPT elements spaced blockDim.x apart
 *       (so for each of them a warp touches consecutive addresses), issuing all
 *       EPT loads before any math so EPT independent loads are in flight per
 *       thread and 1/EPT as many blocks are scheduled.
 *       launch: 1-D, any block size, grid = ceil_div(B*O, block*EPT).
 * Both are bound by memory: per element they read z (b[c] stays in cache) and
 * write z: 8 B/element in f32. Unfused, `a = 1/(1 + exp(-(z + b)))` as CuPy
 * runs it is 5 elementwise passes (add, negate, exp, add, divide) of 8 B each:
 * 40 B/element.
 *
 * In place: z is read and written by the same thread; b must not overlap z.
 *
 * Indices are 32-bit.  The fast kernel's largest index is below
 * B*O + blockDim.x*EPT (the last block's overshoot past the end), so the launcher
 * requires B*O <= 2^31 - 1 - blockDim.x*EPT; the naive one indexes below B*O + blockDim.x.
 */

#ifndef EPT
#define EPT 4   // elements per thread in the fast kernel
#endif
static_assert(EPT >= 1 && EPT <= 64, "EPT (elements per thread) must be in 1 .. 64");

#include "sigmoid.cuh"    // exp_t, sigmoid

// ---------------------------------------------------------------------------
// naive: one thread per element of z.
template <typename T>
__device__ void bias_sigmoid_naive(T* z, const T* b, int B, int O) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;   // flat index into z (B×O)
    if (i < B * O) {
        int c = i % O;                               // column of z[i]
        z[i] = sigmoid(z[i] + b[c]);
    }
}

// fast: EPT elements per thread, i = base + k*blockDim.x, loads first.
template <typename T>
__device__ void bias_sigmoid_fast(T* z, const T* b, int B, int O) {
    int n = B * O;
    int base = blockIdx.x * blockDim.x * EPT + threadIdx.x;
    T x[EPT];
#pragma unroll
    for (int k = 0; k < EPT; k++) {
        int i = base + k * blockDim.x;
        x[k] = i < n ? z[i] + b[i % O] : T(0);
    }
#pragma unroll
    for (int k = 0; k < EPT; k++) {
        int i = base + k * blockDim.x;
        if (i < n) z[i] = sigmoid(x[k]);
    }
}

extern "C" __global__ void bias_sigmoid_naive_f32(float* z, const float* b, int B, int O) { bias_sigmoid_naive(z, b, B, O); }
extern "C" __global__ void bias_sigmoid_naive_f64(double* z, const double* b, int B, int O) { bias_sigmoid_naive(z, b, B, O); }
extern "C" __global__ void bias_sigmoid_f32(float* z, const float* b, int B, int O) { bias_sigmoid_fast(z, b, B, O); }
extern "C" __global__ void bias_sigmoid_f64(double* z, const double* b, int B, int O) { bias_sigmoid_fast(z, b, B, O); }
