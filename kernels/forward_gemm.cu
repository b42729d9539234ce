/*
 * forward_gemm.cu -- the forward pass of one sigmoid layer in one kernel: the GEMM
 * with the bias add and the sigmoid fused into its epilogue, so z is never written.
 *
 * Math (batch-first, row-major; B = batch, I = inputs, O = outputs of the layer):
 *
 *     gemm_bias_sigmoid:   a[r, o] = σ(Σ_i a_prev[r, i] W[i, o] + b[o])        r < B, o < O
 *                          (a = σ(a_prev W + b): z = a_prev W + b lives only in registers)
 *
 * σ(x) = 1 / (1 + exp(−x)) in the form that never overflows, as forward.cu:
 * with e = exp(−|x|), σ = 1/(1 + e) for x >= 0 and e/(1 + e) for x < 0.
 *
 * Layout: a_prev is B×I, W is I×O (the MLP's W_l, as it holds it), b has O elements,
 * a is B×O; all row-major (X[r, c] at X[r*cols + c]).
 * Outputs: a is overwritten; nothing is accumulated.  a must not overlap a_prev, W or
 * b: other blocks read those while this one writes (the launcher refuses overlaps).
 *
 * Kernels, each as _f32 (T = float) and _f64 (T = double):
 *   gemm_bias_sigmoid_naive
 *       one thread per a[r, o], looping over the I inputs; threadIdx.x runs along o, so
 *       a warp reads a row of W coalesced and one a_prev[r, i] by broadcast.
 *       launch: 2-D, any block shape, grid = (ceil_div(O, block.x), ceil_div(B, block.y)).
 *   gemm_bias_sigmoid
 *       one block computes a TILE×TILE tile of a: rows r0 .. r0+TILE (batch rows),
 *       columns o0 .. o0+TILE.  The inputs are walked in chunks of BK: a_prev[r0:+TILE,
 *       k0:+BK] is staged in shared memory transposed (read along k, coalesced in runs of
 *       BK) and W[k0:+BK, o0:+TILE] as it is (read along o, coalesced); both tiles are then
 *       read along k.  Rows and columns past B, I or O are staged as 0.  Each thread keeps a
 *       MICRO×MICRO micro-tile of z in registers: rows r0 + ty + EDGE·m, columns o0 + tx +
 *       EDGE·n (m, n < MICRO, EDGE = TILE/MICRO), so the stores of a are coalesced.  The
 *       shared tiles are padded to TILE+1 columns, so the transposing stores do not collide
 *       in one bank.  Epilogue in registers: + b[o], σ, store.
 *       launch: block = (EDGE, EDGE) exactly (the tiles are sized by it),
 *       grid = (ceil_div(O, TILE), ceil_div(B, TILE)).
 *       static shared memory: 2·BK·(TILE+1)·sizeof(T) = 8.3 KiB (f32), 16.6 KiB (f64).
 *
 * Bytes (f32): the fused kernel reads a_prev, W, b and writes a: 4·(B·I + I·O + O + B·O);
 * cuBLAS `a_prev @ W` then bias_sigmoid also writes z and reads it back: 8·B·O more.
 *
 * Indices are 32-bit: the launcher requires B·I, I·O, B·O <= 2^31 − 1 and every
 * dimension + TILE below 2^31 (a block's row and column indices, before the bounds test).
 */

#ifndef TILE
#define TILE 64     // edge of the output tile one block computes
#endif
#ifndef MICRO
#define MICRO 4     // edge of the micro-tile one thread computes
#endif
#ifndef BK
#define BK 16       // inputs (k) staged in shared memory per step
#endif
#define EDGE (TILE / MICRO)          // the block is EDGE × EDGE threads
#define THREADS (EDGE * EDGE)
static_assert(TILE % MICRO == 0, "TILE must be a multiple of MICRO");
static_assert(THREADS <= 1024, "(TILE / MICRO)^2 must be at most 1024 threads per block");
static_assert(2 * BK * (TILE + 1) * sizeof(double) <= 48 * 1024,
              "2*BK*(TILE+1) doubles (the f64 tiles) must fit CUDA's 48 KiB of static shared memory per block");

// The register budget per thread and the launch bounds that follow from it, as in weight_grad.cu.
constexpr int REGS_F32 = 64, REGS_F64 = 80;
constexpr int MIN_BLOCKS_F32 = 65536 / (THREADS * REGS_F32) > 0 ? 65536 / (THREADS * REGS_F32) : 1;
constexpr int MIN_BLOCKS_F64 = 65536 / (THREADS * REGS_F64) > 0 ? 65536 / (THREADS * REGS_F64) : 1;

#include "sigmoid.cuh"    // exp_t, sigmoid (forward.cu's formula)

// ---------------------------------------------------------------------------
// naive: one thread per a[r, o].
template <typename T>
__device__ void gemm_bias_sigmoid_naive(const T* a_prev, const T* W, const T* b, T* a, int B, int I, int O) {
    int o = blockIdx.x * blockDim.x + threadIdx.x;
    int r = blockIdx.y * blockDim.y + threadIdx.y;
    if (r < B && o < O) {
        T z = b[o];
        for (int i = 0; i < I; i++) z += a_prev[r * I + i] * W[i * O + o];
        a[r * O + o] = sigmoid(z);
    }
}

// fast: z for the thread's micro-tile, then the epilogue.
template <typename T>
__device__ void gemm_bias_sigmoid_fast(const T* a_prev, const T* W, const T* b, T* a, int B, int I, int O) {
    __shared__ T a_tile[BK][TILE + 1];   // a_tile[k][m] = a_prev[r0 + m, k0 + k]  (transposed while staged)
    __shared__ T w_tile[BK][TILE + 1];   // w_tile[k][n] = W[k0 + k, o0 + n]
    const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * EDGE + tx;
    const int r0 = blockIdx.y * TILE, o0 = blockIdx.x * TILE;
    T acc[MICRO][MICRO];
#pragma unroll
    for (int m = 0; m < MICRO; m++)
#pragma unroll
        for (int n = 0; n < MICRO; n++) acc[m][n] = T(0);

    for (int k0 = 0; k0 < I; k0 += BK) {
        for (int e = tid; e < BK * TILE; e += THREADS) {
            int k = e % BK, m = e / BK;          // a_prev: consecutive threads read consecutive k of a row
            int r = r0 + m, i = k0 + k;
            a_tile[k][m] = (r < B && i < I) ? a_prev[r * I + i] : T(0);
            int n = e % TILE, kk = e / TILE;     // W: consecutive threads read consecutive o of a row
            int ii = k0 + kk, o = o0 + n;
            w_tile[kk][n] = (ii < I && o < O) ? W[ii * O + o] : T(0);
        }
        __syncthreads();   // both tiles are fully staged before any thread reads them
#pragma unroll
        for (int k = 0; k < BK; k++) {
            T x[MICRO], w[MICRO];
#pragma unroll
            for (int m = 0; m < MICRO; m++) x[m] = a_tile[k][ty + EDGE * m];
#pragma unroll
            for (int n = 0; n < MICRO; n++) w[n] = w_tile[k][tx + EDGE * n];
#pragma unroll
            for (int m = 0; m < MICRO; m++)
#pragma unroll
                for (int n = 0; n < MICRO; n++) acc[m][n] += x[m] * w[n];
        }
        __syncthreads();   // every thread is done reading this chunk before the next one overwrites the tiles
    }
#pragma unroll
    for (int n = 0; n < MICRO; n++) {
        int o = o0 + tx + EDGE * n;
        if (o >= O) continue;
        T bias = b[o];
#pragma unroll
        for (int m = 0; m < MICRO; m++) {
            int r = r0 + ty + EDGE * m;
            if (r < B) a[r * O + o] = sigmoid(acc[m][n] + bias);
        }
    }
}

extern "C" __global__ void gemm_bias_sigmoid_naive_f32(const float* a_prev, const float* W, const float* b, float* a, int B, int I, int O) { gemm_bias_sigmoid_naive(a_prev, W, b, a, B, I, O); }
extern "C" __global__ void gemm_bias_sigmoid_naive_f64(const double* a_prev, const double* W, const double* b, double* a, int B, int I, int O) { gemm_bias_sigmoid_naive(a_prev, W, b, a, B, I, O); }
extern "C" __global__ void __launch_bounds__(THREADS, MIN_BLOCKS_F32) gemm_bias_sigmoid_f32(const float* a_prev, const float* W, const float* b, float* a, int B, int I, int O) { gemm_bias_sigmoid_fast(a_prev, W, b, a, B, I, O); }
extern "C" __global__ void __launch_bounds__(THREADS, MIN_BLOCKS_F64) gemm_bias_sigmoid_f64(const double* a_prev, const double* W, const double* b, double* a, int B, int I, int O) { gemm_bias_sigmoid_fast(a_prev, W, b, a, B, I, O); }
