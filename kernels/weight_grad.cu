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
 *       one block computes a TILE×TILE tile of dW: rows i0 .. i0+TILE of dW
 *       (columns of a_prev), columns o0 .. o0+TILE (columns of delta). The batch is walked
 *       in chunks of BK rows; each chunk of a_prev (BK×TILE) and of delta (BK×TILE) is
 *       staged in shared memory by coalesced loads (rows past B, columns past I
 *       or O are staged as 0), then each thread accumulates a MICRO×MICRO
 *       micro-tile in registers: rows i0 + ty + EDGE·m, columns o0 + tx + EDGE·n
 *       (m, n < MICRO, EDGE = TILE/MICRO). The strided micro-tile makes the
 *       shared-memory reads conflict-free (a warp reads EDGE consecutive
 *       elements of delta_tile and broadcasts a_tile) and the final stores coalesced.
 *       Per batch row a thread does MICRO² FMAs for 2·MICRO shared-memory loads
 *       (16 for 8 with MICRO = 4) where the naive kernel does 1 FMA per 2 global loads.
 *       The bias gradient is fused: in the blocks of the first I-tile
 *       (blockIdx.y == 0) the threads with ty == 0 also sum the delta values they
 *       already hold in registers, giving db for the block's TILE columns.
 *       launch: block = (EDGE, EDGE) exactly (the shared tiles are sized by it),
 *       grid = (ceil_div(O, TILE), ceil_div(I, TILE)), grid.y at least 1 as above.
 *       static shared memory: 2·BK·TILE·sizeof(T) = 8 KiB (f32), 16 KiB (f64).
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

#ifndef TILE
#define TILE 64     // edge of the dW tile one block computes
#endif
#ifndef MICRO
#define MICRO 4     // edge of the dW micro-tile one thread computes
#endif
#ifndef BK
#define BK 16       // batch rows staged in shared memory per step
#endif
#define EDGE (TILE / MICRO)          // the block is EDGE × EDGE threads
#define THREADS (EDGE * EDGE)
static_assert(TILE % MICRO == 0, "TILE must be a multiple of MICRO");
static_assert(THREADS <= 1024, "(TILE / MICRO)^2 must be at most 1024 threads per block");
static_assert((BK * TILE) % THREADS == 0, "a BK×TILE chunk must split evenly over the block's threads");
static_assert(2 * BK * TILE * sizeof(double) <= 48 * 1024,
              "2*BK*TILE doubles (the f64 tiles) must fit CUDA's 48 KiB of static shared memory per block");

// The register budget of the fast kernels, per thread: <= 64 registers (f32), <= 80 (f64: twice
// the bytes per accumulator); gpubp.cuda.launchers.SPECS states the same budget.  The launch
// bounds follow from it and the tile: as many blocks of THREADS as that many registers per
// thread leave room for in an SM's 64K registers (4 f32 / 3 f64 blocks at 256 threads; 1 at
// 1024 threads, where the hardware's own cap of 64 registers per thread applies).
constexpr int REGS_F32 = 64, REGS_F64 = 80;
constexpr int MIN_BLOCKS_F32 = 65536 / (THREADS * REGS_F32) > 0 ? 65536 / (THREADS * REGS_F32) : 1;
constexpr int MIN_BLOCKS_F64 = 65536 / (THREADS * REGS_F64) > 0 ? 65536 / (THREADS * REGS_F64) : 1;

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
// fast: the shared main loop. On return acc[m][n] = Σ_r a_prev[r, i0 + ty + EDGE m] delta[r, o0 + tx + EDGE n]
// and, if with_db, dsum[n] = Σ_r delta[r, o0 + tx + EDGE n] (unscaled; 0 outside the matrices).
template <typename T>
__device__ void outer_product_tile(const T* a_prev, const T* delta, int B, int I, int O, bool with_db,
                                   T (&acc)[MICRO][MICRO], T (&dsum)[MICRO]) {
    __shared__ T a_tile[BK][TILE];   // a_tile[k][c] = a_prev[r0 + k, i0 + c]
    __shared__ T delta_tile[BK][TILE];   // delta_tile[k][c] = delta[r0 + k, o0 + c]
    const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * EDGE + tx;
    const int i0 = blockIdx.y * TILE, o0 = blockIdx.x * TILE;

#pragma unroll
    for (int m = 0; m < MICRO; m++) {
        dsum[m] = T(0);
#pragma unroll
        for (int n = 0; n < MICRO; n++) acc[m][n] = T(0);
    }

    for (int r0 = 0; r0 < B; r0 += BK) {
        // stage a_prev[r0 : r0+BK, i0 : i0+TILE] and delta[r0 : r0+BK, o0 : o0+TILE]; consecutive tids read consecutive columns
#pragma unroll
        for (int e = tid; e < BK * TILE; e += THREADS) {
            int k = e / TILE, c = e % TILE, r = r0 + k;
            a_tile[k][c] = (r < B && i0 + c < I) ? a_prev[r * I + i0 + c] : T(0);
            delta_tile[k][c] = (r < B && o0 + c < O) ? delta[r * O + o0 + c] : T(0);
        }
        __syncthreads();   // the chunk is fully staged before any thread reads a_tile/delta_tile
#pragma unroll
        for (int k = 0; k < BK; k++) {
            T a[MICRO], d[MICRO];
#pragma unroll
            for (int m = 0; m < MICRO; m++) a[m] = a_tile[k][ty + EDGE * m];
#pragma unroll
            for (int n = 0; n < MICRO; n++) d[n] = delta_tile[k][tx + EDGE * n];
#pragma unroll
            for (int m = 0; m < MICRO; m++)
#pragma unroll
                for (int n = 0; n < MICRO; n++) acc[m][n] += a[m] * d[n];
            if (with_db) {
#pragma unroll
                for (int n = 0; n < MICRO; n++) dsum[n] += d[n];
            }
        }
        __syncthreads();   // every thread is done reading this chunk before the next one overwrites a_tile/delta_tile
    }
}

// fast: the shared epilogue. Hands every element of the thread's micro-tile that lies inside
// the I×O matrix to store(k, Σ) (k = i*O + o, the flat index into dW / W) and, if with_db,
// every column sum of its first micro-row to store_bias(o, Σ_r delta[r, o]).
template <typename T, typename Store, typename StoreBias>
__device__ inline void for_each_output(int I, int O, bool with_db, const T (&acc)[MICRO][MICRO],
                                       const T (&dsum)[MICRO], Store store, StoreBias store_bias) {
    const int i0 = blockIdx.y * TILE + threadIdx.y, o0 = blockIdx.x * TILE + threadIdx.x;
#pragma unroll
    for (int m = 0; m < MICRO; m++) {
        int i = i0 + EDGE * m;
#pragma unroll
        for (int n = 0; n < MICRO; n++) {
            int o = o0 + EDGE * n;
            if (i < I && o < O) store(i * O + o, acc[m][n]);
        }
    }
    if (with_db) {
#pragma unroll
        for (int n = 0; n < MICRO; n++) {
            int o = o0 + EDGE * n;
            if (o < O) store_bias(o, dsum[n]);
        }
    }
}

template <typename T>
__device__ void weight_grad_fast(const T* a_prev, const T* delta, T* dW, T* db, int B, int I, int O, T scale) {
    const bool with_db = db != nullptr && blockIdx.y == 0 && threadIdx.y == 0;
    T acc[MICRO][MICRO], dsum[MICRO];
    outer_product_tile(a_prev, delta, B, I, O, with_db, acc, dsum);
    for_each_output(I, O, with_db, acc, dsum,
                    [&](int k, T sum) { dW[k] = scale * sum; },
                    [&](int o, T sum) { db[o] = scale * sum; });
}

template <typename T>
__device__ void weight_grad_sgd_fast(const T* a_prev, const T* delta, T* W, T* b, T* vW, T* vb, int B, int I, int O,
                                     T scale, T eta, T lmbda, T mu) {
    const bool with_db = blockIdx.y == 0 && threadIdx.y == 0;
    T acc[MICRO][MICRO], dsum[MICRO];
    outer_product_tile(a_prev, delta, B, I, O, with_db, acc, dsum);
    for_each_output(I, O, with_db, acc, dsum,
                    [&](int k, T sum) { sgd_step(W, vW, k, scale * sum + lmbda * W[k], eta, mu); },
                    [&](int o, T sum) { sgd_step(b, vb, o, scale * sum, eta, mu); });
}

extern "C" __global__ void weight_grad_naive_f32(const float* a_prev, const float* delta, float* dW, float* db, int B, int I, int O, float scale) { weight_grad_naive(a_prev, delta, dW, db, B, I, O, scale); }
extern "C" __global__ void weight_grad_naive_f64(const double* a_prev, const double* delta, double* dW, double* db, int B, int I, int O, double scale) { weight_grad_naive(a_prev, delta, dW, db, B, I, O, scale); }
extern "C" __global__ void __launch_bounds__(THREADS, MIN_BLOCKS_F32) weight_grad_f32(const float* a_prev, const float* delta, float* dW, float* db, int B, int I, int O, float scale) { weight_grad_fast(a_prev, delta, dW, db, B, I, O, scale); }
extern "C" __global__ void __launch_bounds__(THREADS, MIN_BLOCKS_F64) weight_grad_f64(const double* a_prev, const double* delta, double* dW, double* db, int B, int I, int O, double scale) { weight_grad_fast(a_prev, delta, dW, db, B, I, O, scale); }

extern "C" __global__ void weight_grad_sgd_naive_f32(const float* a_prev, const float* delta, float* W, float* b, float* vW, float* vb, int B, int I, int O, float scale, float eta, float lmbda, float mu) { weight_grad_sgd_naive(a_prev, delta, W, b, vW, vb, B, I, O, scale, eta, lmbda, mu); }
extern "C" __global__ void weight_grad_sgd_naive_f64(const double* a_prev, const double* delta, double* W, double* b, double* vW, double* vb, int B, int I, int O, double scale, double eta, double lmbda, double mu) { weight_grad_sgd_naive(a_prev, delta, W, b, vW, vb, B, I, O, scale, eta, lmbda, mu); }
extern "C" __global__ void __launch_bounds__(THREADS, MIN_BLOCKS_F32) weight_grad_sgd_f32(const float* a_prev, const float* delta, float* W, float* b, float* vW, float* vb, int B, int I, int O, float scale, float eta, float lmbda, float mu) { weight_grad_sgd_fast(a_prev, delta, W, b, vW, vb, B, I, O, scale, eta, lmbda, mu); }
extern "C" __global__ void __launch_bounds__(THREADS, MIN_BLOCKS_F64) weight_grad_sgd_f64(const double* a_prev, const double* delta, double* W, double* b, double* vW, double* vb, int B, int I, int O, double scale, double eta, double lmbda, double mu) { weight_grad_sgd_fast(a_prev, delta, W, b, vW, vb, B, I, O, scale, eta, lmbda, mu); }
