/*
 * delta.cu -- the error δ of each layer (BP1 and BP2 of backpropagation).
 *
 * Math (batch-first, row-major; B = batch, O = outputs of the layer; a = σ(z),
 * so σ'(z) = a ⊙ (1 − a)):
 *
 *   hidden layer (BP2), g = δ_{l+1} W_{l+1}ᵀ from the GEMM:
 *     sigmoid_delta:      delta = g ⊙ a ⊙ (1 − a)                        (n = B*O elements)
 *
 *   output layer (BP1), y = targets:
 *     output_delta_mse:   delta[r, c] = (a − y) ⊙ a ⊙ (1 − a)
 *                         loss[r]     = ½ Σ_c (a − y)²
 *     output_delta_ce:    delta[r, c] = a − y               (sigmoid + cross-entropy: σ' cancels)
 *                         loss[r]     = −Σ_c [y ln max(a, ε) + (1 − y) ln max(1 − a, ε)]
 *                         (the max keeps a NaN a: a diverged run gives a NaN loss, as in NumPy)
 *                         ε = 1e-7 (float), 1e-12 (double): gpubp.reference.CE_EPS
 *   delta is the per-sample error: the 1/B of a batch mean is applied where BP3/BP4 sum
 *   over the batch (weight_grad.cu's scale).  loss is per sample; it may be NULL (then it
 *   is not computed).
 *
 * Layout: g, a, y, delta are B×O row-major (x[r, c] at x[r*O + c]); loss has B.
 * Outputs: delta and loss are overwritten; nothing is accumulated.
 * In place: delta may be the very array g or a (sigmoid_delta), or a or y
 * (output_delta): each thread loads its a[i], y[i] / g[i], a[i] into registers
 * before it writes delta[i], and reads no element another thread writes, so no
 * pointer is __restrict__.  loss must not overlap any other argument, and no
 * argument may partially overlap another (the launchers refuse both).
 *
 * Kernels, each as _f32 (T = float) and _f64 (T = double):
 *   sigmoid_delta_naive     one thread per element; 1-D, any block size,
 *                           grid = ceil_div(n, block).
 *   sigmoid_delta           EPT elements per thread spaced blockDim.x apart, all
 *                           loads issued before the math; grid = ceil_div(n, block*EPT).
 *   output_delta_{mse,ce}_naive  one thread per row r: loops over the O columns,
 *                           writes delta[r, :] and sums loss[r] serially (warps
 *                           read with stride O: uncoalesced); 1-D, any block size,
 *                           grid = ceil_div(B, block).
 *   output_delta_{mse,ce}   a block of ROW_THREADS × ROWS_PER_BLOCK threads owns
 *                           ROWS_PER_BLOCK rows; the ROW_THREADS threads of a row
 *                           stride over its columns (coalesced), each keeping a
 *                           partial loss, then the row's partials are summed by a
 *                           shared-memory tree reduction (barriers, no warp shuffles).
 *                           launch: block = (ROW_THREADS, ROWS_PER_BLOCK) exactly,
 *                           grid = ceil_div(B, ROWS_PER_BLOCK).
 *
 * Bytes per element (f32), fused vs the obvious CuPy expressions:
 *   sigmoid_delta   reads g, a, writes delta: 12 B;  `g * a * (1 - a)`: 3 passes, 32 B.
 *   output_delta    reads a, y, writes delta: 12 B (+ 4 B per row of loss); unfused,
 *                   mse: delta 5 passes + loss 3 passes ≈ 76 B; ce: ≈ 100 B (two clamped logs).
 *
 * Indices are 32-bit.  The fast sigmoid_delta's largest index is below
 * n + blockDim.x*EPT (the last block's overshoot past the end), so the launcher
 * requires n <= 2^31 - 1 - blockDim.x*EPT; the other kernels index below n + blockDim.x.
 */

#ifndef EPT
#define EPT 4               // elements per thread in the fast sigmoid_delta
#endif
#ifndef ROW_THREADS
#define ROW_THREADS 32      // threads sharing one row in the fast output_delta (a power of 2)
#endif
#ifndef ROWS_PER_BLOCK
#define ROWS_PER_BLOCK 8    // rows per block in the fast output_delta
#endif
static_assert((ROW_THREADS & (ROW_THREADS - 1)) == 0, "ROW_THREADS must be a power of 2 (tree reduction)");
static_assert(ROW_THREADS * ROWS_PER_BLOCK <= 1024, "ROW_THREADS * ROWS_PER_BLOCK must be at most 1024 threads per block");
static_assert(ROW_THREADS * ROWS_PER_BLOCK * sizeof(double) <= 48 * 1024,
              "the fast output_delta's partial sums must fit CUDA's 48 KiB of static shared memory per block");
static_assert(EPT >= 1 && EPT <= 64, "EPT (elements per thread) must be in 1 .. 64");

#include "costs.cuh"      // Mse, CrossEntropy: each element's delta and loss term

// ---------------------------------------------------------------------------
// sigmoid_delta, naive: one thread per element.
template <typename T>
__device__ void sigmoid_delta_naive(const T* g, const T* a, T* delta, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) delta[i] = g[i] * a[i] * (T(1) - a[i]);
}

// sigmoid_delta, fast: EPT elements per thread, loads first.
template <typename T>
__device__ void sigmoid_delta_fast(const T* g, const T* a, T* delta, int n) {
    int base = blockIdx.x * blockDim.x * EPT + threadIdx.x;
    T gk[EPT], ak[EPT];
#pragma unroll
    for (int k = 0; k < EPT; k++) {
        int i = base + k * blockDim.x;
        gk[k] = i < n ? g[i] : T(0);
        ak[k] = i < n ? a[i] : T(0);
    }
#pragma unroll
    for (int k = 0; k < EPT; k++) {
        int i = base + k * blockDim.x;
        if (i < n) delta[i] = gk[k] * ak[k] * (T(1) - ak[k]);
    }
}

// ---------------------------------------------------------------------------
// output_delta, naive: one thread per row, serial over the columns.
template <typename Cost, typename T>
__device__ void output_delta_naive(const T* a, const T* y, T* delta, T* loss, int B, int O) {
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r < B) {
        T sum = T(0);
        for (int c = 0; c < O; c++) {
            int i = r * O + c;
            T ai = a[i], yi = y[i];      // both read before delta[i] is written: delta may be a or y
            delta[i] = Cost::delta(ai, yi);
            sum += Cost::loss(ai, yi);
        }
        if (loss != nullptr) loss[r] = sum;
    }
}

// output_delta, fast: ROW_THREADS threads per row, shared-memory tree reduction for the loss.
template <typename Cost, typename T>
__device__ void output_delta_fast(const T* a, const T* y, T* delta, T* loss, int B, int O) {
    __shared__ T partial[ROWS_PER_BLOCK][ROW_THREADS];    // partial[ty][tx]: loss of row r, columns tx, tx+ROW_THREADS, ...
    int tx = threadIdx.x, ty = threadIdx.y;
    int r = blockIdx.x * ROWS_PER_BLOCK + ty;
    T sum = T(0);
    if (r < B) {
        for (int c = tx; c < O; c += ROW_THREADS) {
            int i = r * O + c;
            T ai = a[i], yi = y[i];      // both read before delta[i] is written: delta may be a or y
            delta[i] = Cost::delta(ai, yi);
            sum += Cost::loss(ai, yi);
        }
    }
    if (loss == nullptr) return;  // uniform over the block: no thread is left waiting at a barrier
    partial[ty][tx] = sum;        // rows r >= B contribute 0 and are never stored
    __syncthreads();              // every partial[ty][:] is written before any thread reads its neighbour's
    for (int stride = ROW_THREADS / 2; stride > 0; stride /= 2) {
        if (tx < stride) partial[ty][tx] += partial[ty][tx + stride];
        __syncthreads();          // this level's sums are complete before the next level reads them
    }
    if (tx == 0 && r < B) loss[r] = partial[ty][0];
}

extern "C" __global__ void sigmoid_delta_naive_f32(const float* g, const float* a, float* delta, int n) { sigmoid_delta_naive(g, a, delta, n); }
extern "C" __global__ void sigmoid_delta_naive_f64(const double* g, const double* a, double* delta, int n) { sigmoid_delta_naive(g, a, delta, n); }
extern "C" __global__ void sigmoid_delta_f32(const float* g, const float* a, float* delta, int n) { sigmoid_delta_fast(g, a, delta, n); }
extern "C" __global__ void sigmoid_delta_f64(const double* g, const double* a, double* delta, int n) { sigmoid_delta_fast(g, a, delta, n); }

extern "C" __global__ void output_delta_mse_naive_f32(const float* a, const float* y, float* delta, float* loss, int B, int O) { output_delta_naive<Mse>(a, y, delta, loss, B, O); }
extern "C" __global__ void output_delta_mse_naive_f64(const double* a, const double* y, double* delta, double* loss, int B, int O) { output_delta_naive<Mse>(a, y, delta, loss, B, O); }
extern "C" __global__ void output_delta_mse_f32(const float* a, const float* y, float* delta, float* loss, int B, int O) { output_delta_fast<Mse>(a, y, delta, loss, B, O); }
extern "C" __global__ void output_delta_mse_f64(const double* a, const double* y, double* delta, double* loss, int B, int O) { output_delta_fast<Mse>(a, y, delta, loss, B, O); }

extern "C" __global__ void output_delta_ce_naive_f32(const float* a, const float* y, float* delta, float* loss, int B, int O) { output_delta_naive<CrossEntropy>(a, y, delta, loss, B, O); }
extern "C" __global__ void output_delta_ce_naive_f64(const double* a, const double* y, double* delta, double* loss, int B, int O) { output_delta_naive<CrossEntropy>(a, y, delta, loss, B, O); }
extern "C" __global__ void output_delta_ce_f32(const float* a, const float* y, float* delta, float* loss, int B, int O) { output_delta_fast<CrossEntropy>(a, y, delta, loss, B, O); }
extern "C" __global__ void output_delta_ce_f64(const double* a, const double* y, double* delta, double* loss, int B, int O) { output_delta_fast<CrossEntropy>(a, y, delta, loss, B, O); }
