/*
 * weight_grad.cu -- the weight and bias gradients of one layer (BP3, BP4), and
 * the same fused with the SGD update so that dW never reaches memory.
 *
 * Math (batch-first, row-major; B = batch, I = inputs, O = outputs of the layer;
 * a_prev = the layer's input activations a_{l−1}, delta = its deltas δ_l):
 *
 *   weight_grad:      dW[i, o] = scale · Σ_r a_prev[r, i] delta[r, o]      (dW = scale · a_prevᵀ delta)
 *                     db[o]    = scale · Σ_r delta[r, o]
 *   weight_grad_sgd:  g  = scale · Σ_r a_prev[r, i] delta[r, o] + lmbda · W[i, o]     (L2 decay)
 *                     vW = mu · vW + g;   W −= eta · vW           (momentum buffer vW)
 *                     W −= eta · g                                (vW == NULL: no buffer)
 *                     gb = scale · Σ_r delta[r, o]                    (biases are not decayed)
 *                     vb = mu · vb + gb;  b −= eta · vb           (or b −= eta · gb if vb == NULL)
 *
 * Layout: a_prev is B×I, delta is B×O, dW, W, vW are I×O, db, b, vb have O elements; all
 * row-major (X[r, c] at X[r*cols + c]).
 * Outputs: dW and db are overwritten (db may be NULL: not computed); W, b, vW,
 * vb are read and updated in place (W −= ..., vW = mu·vW + ...), each element by
 * exactly one thread.
 *
 * Kernels, each as _f32 (T = float) and _f64 (T = double):
 *   weight_grad_naive, weight_grad_sgd_naive
 *       one thread per (i, o), looping over the batch; threadIdx.x runs along o
 *       so a warp reads a row of delta coalesced and one a_prev[r, i] by broadcast.
 *       The threads with i == 0 also compute db[o] (/ update b[o]).
 *       launch: 2-D, any block shape, grid = (ceil_div(O, block.x), ceil_div(I, block.y))
 *       (grid.y at least 1, so that db is computed even when I == 0).
 *   weight_grad, weight_grad_sgd
 *       one block computes a TILE×TILE tile of dW: rows i0 … i0+TILE of dW (columns of
 *       a_prev), columns o0 … o0+TILE (columns of delta), with the main loop of
 *       gemm_mainloop.cuh: A = a_prevᵀ (a_prev is B×I, so A's rows are read along i: k-major,
 *       staged as it is), B = delta (B×O, k-major); the reduction runs over the batch.  Each
 *       thread holds a TM×TM micro-tile (8×8 in f32, 4×4 in f64).  The bias gradient: in the
 *       blocks of the first I-tile (blockIdx.y == 0) the threads sum the block's TILE columns of
 *       delta after the main loop (db[o] = scale · Σ_r delta[r, o]).  Epilogue: scale (and the
 *       decay, momentum and update of weight_grad_sgd), store.
 *       launch: block = (GEMM_THREADS,) (64 f32, 256 f64 at the defaults),
 *       grid = (ceil_div(O, TILE), ceil_div(I, TILE), splits), grid.y at least 1 as above
 *       (splits > 1: split-K over the batch, partial (splits×I×O) and counters its workspace); vec_a,
 *       vec_d: 1 where a_prev (delta) may be read 16 bytes at a time (aligned pointer, I (O) a
 *       multiple of 16 / sizeof(T)).
 *       static shared memory: 4·BK·(TILE + 16/sizeof(T))·sizeof(T) + 16 = 4.3 KiB (f32), 8.3 KiB (f64)
 *       (one stage, half that, under PIPELINE 1).
 *
 * Bytes per element of W (f32): weight_grad writes dW (4 B) and, with db fused, reads delta
 * once instead of twice (cuBLAS `a_prev.T @ delta` then `delta.sum(0)`, then `*= scale`: 8 B more per
 * dW element). weight_grad_sgd with momentum reads W, vW and writes W, vW: 16 B; the
 * unfused step (dW = a_prev.T @ delta; dW *= scale; dW += lmbda*W; vW = mu*vW + dW; W -= eta*vW
 * as separate CuPy ops) moves ≈ 72 B, without momentum and decay 8 B vs ≈ 32 B.
 *
 * In place: W, b, vW, vb are each read and written by one thread; no output may overlap
 * a_prev, delta or another output (a tile reads a_prev and delta rows that other blocks'
 * threads would be writing); the launchers refuse overlaps.
 *
 * Indices are 32-bit: the launcher requires B*I, B*O, I*O <= 2^31 - 1 (every index is
 * r*I + i, r*O + o or i*O + o with r < B, i < I, o < O).
 */

#include "gemm_mainloop.cuh"  // TILE, MICRO, BK; Gemm<T>, gemm_mainloop

// The register budget of the fast kernels, per thread: <= 168 registers in f32 (an 8×8 accumulator tile,
// its fragments, a chunk's staged loads; capped at 128 it spilled on sm_100 and sm_120), <= 128 in f64 (4×4);
// gpubp.cuda.launchers.SPECS states the same budget.  The launch bounds follow from it and the tile: as
// many blocks of GEMM_THREADS as that many registers per thread leave room for in an SM's 64K registers
// (6 f32 blocks of 64 threads, 2 f64 blocks of 256 at the defaults).
constexpr int REGS_F32 = 168, REGS_F64 = 128;
constexpr int MIN_BLOCKS_F32 = 65536 / (GEMM_THREADS_F32 * REGS_F32) > 0 ? 65536 / (GEMM_THREADS_F32 * REGS_F32) : 1;
constexpr int MIN_BLOCKS_F64 = 65536 / (GEMM_THREADS_F64 * REGS_F64) > 0 ? 65536 / (GEMM_THREADS_F64 * REGS_F64) : 1;

// ---------------------------------------------------------------------------
// naive: Σ_r a_prev[r, i] delta[r, o] for one (i, o), and Σ_r delta[r, o].
template <typename T>
__device__ inline T dot_column(const T* a_prev, const T* delta, int B, int I, int O, int i, int o) {
    T sum = T(0);
    for (int r = 0; r < B; r++) sum += a_prev[r * I + i] * delta[r * O + o];
    return sum;
}
template <typename T>
__device__ inline T sum_column(const T* delta, int B, int O, int o) {
    T sum = T(0);
    for (int r = 0; r < B; r++) sum += delta[r * O + o];
    return sum;
}

template <typename T>
__device__ void weight_grad_naive(const T* a_prev, const T* delta, T* dW, T* db, int B, int I, int O, T scale) {
    int o = blockIdx.x * blockDim.x + threadIdx.x;
    int i = blockIdx.y * blockDim.y + threadIdx.y;
    if (i < I && o < O) dW[i * O + o] = scale * dot_column(a_prev, delta, B, I, O, i, o);
    if (db != nullptr && i == 0 && o < O) db[o] = scale * sum_column(delta, B, O, o);
}

// One SGD step of one parameter p with gradient grad; v == NULL means no momentum buffer.
template <typename T>
__device__ inline void sgd_step(T* p, T* v, int k, T grad, T eta, T mu) {
    if (v != nullptr) {
        grad = mu * v[k] + grad;   // v = mu v + g
        v[k] = grad;
    }
    p[k] -= eta * grad;
}

template <typename T>
__device__ void weight_grad_sgd_naive(const T* a_prev, const T* delta, T* W, T* b, T* vW, T* vb, int B, int I, int O,
                                      T scale, T eta, T lmbda, T mu) {
    int o = blockIdx.x * blockDim.x + threadIdx.x;
    int i = blockIdx.y * blockDim.y + threadIdx.y;
    if (i < I && o < O) {
        int k = i * O + o;
        sgd_step(W, vW, k, scale * dot_column(a_prev, delta, B, I, O, i, o) + lmbda * W[k], eta, mu);
    }
    if (i == 0 && o < O) sgd_step(b, vb, o, scale * sum_column(delta, B, O, o), eta, mu);
}

// ---------------------------------------------------------------------------
// fast: acc = a_prevᵀ delta for the thread's micro-tile (the main loop over the batch), then the
// epilogue store(k, Σ) for each element inside the I×O matrix (k = i·O + o, the flat index into
// dW / W) and, in the blocks of the first I-tile, store_bias(o, Σ_r delta[r, o]) for the block's
// columns.
template <typename T, typename Store, typename StoreBias>
__device__ inline void outer_products(const T* a_prev, const T* delta, int B, int I, int O, int vec_a, int vec_d,
                                      int splits, T* partial, int* counters, bool with_db, Store store,
                                      StoreBias store_bias) {
    using G = Gemm<T>;
    const int i0 = blockIdx.y * TILE, o0 = blockIdx.x * TILE;
    const int kc = split_chunk(B, splits), k_begin = min(B, blockIdx.z * kc), k_end = min(B, k_begin + kc);
    T acc[G::TM][G::TM];
    gemm_mainloop<T, true, true>(a_prev, I, vec_a, delta, O, vec_d, I, O, k_begin, k_end, i0, o0, acc);
    if (splits > 1 && !split_fixup(acc, partial, counters, I, O, i0, o0, splits)) return;
    const int im = i0 + micro_row0<T>(), on = o0 + micro_col0<T>();
#pragma unroll
    for (int i = 0; i < G::TM; i++) {
        if (im + i >= I) continue;
#pragma unroll
        for (int j = 0; j < G::TM; j++)
            if (on + j < O) store((im + i) * O + on + j, acc[i][j]);
    }
    if (with_db && blockIdx.y == 0) {
        for (int c = threadIdx.x; c < TILE; c += G::THREADS)
            if (o0 + c < O) store_bias(o0 + c, sum_column(delta, B, O, o0 + c));
    }
}

template <typename T>
__device__ void weight_grad_fast(const T* a_prev, const T* delta, T* dW, T* db, int B, int I, int O, T scale,
                                 int vec_a, int vec_d, int splits, T* partial, int* counters) {
    outer_products(a_prev, delta, B, I, O, vec_a, vec_d, splits, partial, counters, db != nullptr,
                   [&](int k, T sum) { dW[k] = scale * sum; },
                   [&](int o, T sum) { db[o] = scale * sum; });
}

template <typename T>
__device__ void weight_grad_sgd_fast(const T* a_prev, const T* delta, T* W, T* b, T* vW, T* vb, int B, int I, int O,
                                     T scale, T eta, T lmbda, T mu, int vec_a, int vec_d, int splits, T* partial,
                                     int* counters) {
    outer_products(a_prev, delta, B, I, O, vec_a, vec_d, splits, partial, counters, true,
                   [&](int k, T sum) { sgd_step(W, vW, k, scale * sum + lmbda * W[k], eta, mu); },
                   [&](int o, T sum) { sgd_step(b, vb, o, scale * sum, eta, mu); });
}

extern "C" __global__ void weight_grad_naive_f32(const float* a_prev, const float* delta, float* dW, float* db, int B, int I, int O, float scale) { weight_grad_naive(a_prev, delta, dW, db, B, I, O, scale); }
extern "C" __global__ void weight_grad_naive_f64(const double* a_prev, const double* delta, double* dW, double* db, int B, int I, int O, double scale) { weight_grad_naive(a_prev, delta, dW, db, B, I, O, scale); }
extern "C" __global__ void __launch_bounds__(GEMM_THREADS_F32, MIN_BLOCKS_F32) weight_grad_f32(const float* a_prev, const float* delta, float* dW, float* db, int B, int I, int O, float scale, int vec_a, int vec_d, int splits, float* partial, int* counters) { weight_grad_fast(a_prev, delta, dW, db, B, I, O, scale, vec_a, vec_d, splits, partial, counters); }
extern "C" __global__ void __launch_bounds__(GEMM_THREADS_F64, MIN_BLOCKS_F64) weight_grad_f64(const double* a_prev, const double* delta, double* dW, double* db, int B, int I, int O, double scale, int vec_a, int vec_d, int splits, double* partial, int* counters) { weight_grad_fast(a_prev, delta, dW, db, B, I, O, scale, vec_a, vec_d, splits, partial, counters); }

extern "C" __global__ void weight_grad_sgd_naive_f32(const float* a_prev, const float* delta, float* W, float* b, float* vW, float* vb, int B, int I, int O, float scale, float eta, float lmbda, float mu) { weight_grad_sgd_naive(a_prev, delta, W, b, vW, vb, B, I, O, scale, eta, lmbda, mu); }
extern "C" __global__ void weight_grad_sgd_naive_f64(const double* a_prev, const double* delta, double* W, double* b, double* vW, double* vb, int B, int I, int O, double scale, double eta, double lmbda, double mu) { weight_grad_sgd_naive(a_prev, delta, W, b, vW, vb, B, I, O, scale, eta, lmbda, mu); }
extern "C" __global__ void __launch_bounds__(GEMM_THREADS_F32, MIN_BLOCKS_F32) weight_grad_sgd_f32(const float* a_prev, const float* delta, float* W, float* b, float* vW, float* vb, int B, int I, int O, float scale, float eta, float lmbda, float mu, int vec_a, int vec_d, int splits, float* partial, int* counters) { weight_grad_sgd_fast(a_prev, delta, W, b, vW, vb, B, I, O, scale, eta, lmbda, mu, vec_a, vec_d, splits, partial, counters); }
extern "C" __global__ void __launch_bounds__(GEMM_THREADS_F64, MIN_BLOCKS_F64) weight_grad_sgd_f64(const double* a_prev, const double* delta, double* W, double* b, double* vW, double* vb, int B, int I, int O, double scale, double eta, double lmbda, double mu, int vec_a, int vec_d, int splits, double* partial, int* counters) { weight_grad_sgd_fast(a_prev, delta, W, b, vW, vb, B, I, O, scale, eta, lmbda, mu, vec_a, vec_d, splits, partial, counters); }
