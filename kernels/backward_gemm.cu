/*
 * backward_gemm.cu -- BP2 in one kernel: the hidden layer's error, the transposed GEMM
 * with the sigmoid derivative fused into its epilogue.
 *
 * Math (batch-first, row-major; B = batch, I = outputs of this layer = inputs of the
 * next, O = outputs of the next layer; a = σ(z) of this layer, so σ'(z) = a ⊙ (1 − a)):
 *
 *     gemm_sigmoid_delta:   delta[r, i] = (Σ_o delta_next[r, o] W_next[i, o]) · a[r, i] · (1 − a[r, i])
 *                           (δ_l = (δ_{l+1} W_{l+1}ᵀ) ⊙ a_l ⊙ (1 − a_l): the product lives only in registers)
 *
 * Layout: delta_next is B×O, W_next is I×O (the MLP's W_{l+1}, as it holds it: its
 * transpose is read in place, never copied), a and delta are B×I; all row-major.
 * Outputs: delta is overwritten; nothing is accumulated.  delta may be a itself (in
 * place: each element of a is read once, by the thread that then writes that element of
 * delta, after the product); it must not overlap delta_next or W_next.
 *
 * Kernels, each as _f32 (T = float) and _f64 (T = double):
 *   gemm_sigmoid_delta_naive
 *       one thread per delta[r, i], looping over the O outputs of the next layer;
 *       threadIdx.x runs along i (a warp reads W_next[i, o] with stride O: uncoalesced,
 *       the price of reading the transpose in place).
 *       launch: 2-D, any block shape, grid = (ceil_div(I, block.x), ceil_div(B, block.y)).
 *   gemm_sigmoid_delta
 *       one block computes a TILE×TILE tile of delta: rows r0 .. r0+TILE, columns
 *       i0 .. i0+TILE.  The reduction over o is walked in chunks of BK: delta_next[r0:+TILE,
 *       k0:+BK] and W_next[i0:+TILE, k0:+BK] are both read along o (coalesced in runs of BK)
 *       and staged transposed, so that the inner loop reads both along k.  Rows and
 *       columns past B, I or O are staged as 0.  Each thread keeps a MICRO×MICRO micro-tile
 *       in registers (rows r0 + ty + EDGE·m, columns i0 + tx + EDGE·n), so the reads of a
 *       and the stores of delta are coalesced; the shared tiles are padded to TILE+1 so the
 *       transposing stores do not collide in one bank.  Epilogue: · a (1 − a), store.
 *       launch: block = (EDGE, EDGE) exactly, grid = (ceil_div(I, TILE), ceil_div(B, TILE)).
 *       static shared memory: 2·BK·(TILE+1)·sizeof(T) = 8.3 KiB (f32), 16.6 KiB (f64).
 *
 * Bytes (f32): the fused kernel reads delta_next, W_next, a and writes delta:
 * 4·(B·O + I·O + 2·B·I); cuBLAS `delta_next @ W_next.T` then sigmoid_delta writes the
 * product and reads it back: 8·B·I more.
 *
 * Indices are 32-bit: the launcher requires B·I, I·O, B·O <= 2^31 − 1 and every
 * dimension + TILE below 2^31.
 */

#ifndef TILE
#define TILE 64     // edge of the output tile one block computes
#endif
#ifndef MICRO
#define MICRO 4     // edge of the micro-tile one thread computes
#endif
#ifndef BK
#define BK 16       // outputs of the next layer (k) staged in shared memory per step
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

// ---------------------------------------------------------------------------
// naive: one thread per delta[r, i].
template <typename T>
__device__ void gemm_sigmoid_delta_naive(const T* delta_next, const T* W_next, const T* a, T* delta,
                                         int B, int I, int O) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    int r = blockIdx.y * blockDim.y + threadIdx.y;
    if (r < B && i < I) {
        T g = T(0);
        for (int o = 0; o < O; o++) g += delta_next[r * O + o] * W_next[i * O + o];
        T ai = a[r * I + i];                 // read before delta[r, i] is written: delta may be a
        delta[r * I + i] = g * ai * (T(1) - ai);
    }
}

// fast: the product for the thread's micro-tile, then the epilogue.
template <typename T>
__device__ void gemm_sigmoid_delta_fast(const T* delta_next, const T* W_next, const T* a, T* delta,
                                        int B, int I, int O) {
    __shared__ T d_tile[BK][TILE + 1];   // d_tile[k][m] = delta_next[r0 + m, k0 + k]   (transposed while staged)
    __shared__ T w_tile[BK][TILE + 1];   // w_tile[k][n] = W_next[i0 + n, k0 + k]      (transposed while staged)
    const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * EDGE + tx;
    const int r0 = blockIdx.y * TILE, i0 = blockIdx.x * TILE;
    T acc[MICRO][MICRO];
#pragma unroll
    for (int m = 0; m < MICRO; m++)
#pragma unroll
        for (int n = 0; n < MICRO; n++) acc[m][n] = T(0);

    for (int k0 = 0; k0 < O; k0 += BK) {
        for (int e = tid; e < BK * TILE; e += THREADS) {
            int k = e % BK, m = e / BK;          // both read along o: consecutive threads, consecutive o
            int o = k0 + k, r = r0 + m, i = i0 + m;
            d_tile[k][m] = (r < B && o < O) ? delta_next[r * O + o] : T(0);
            w_tile[k][m] = (i < I && o < O) ? W_next[i * O + o] : T(0);
        }
        __syncthreads();   // both tiles are fully staged before any thread reads them
#pragma unroll
        for (int k = 0; k < BK; k++) {
            T d[MICRO], w[MICRO];
#pragma unroll
            for (int m = 0; m < MICRO; m++) d[m] = d_tile[k][ty + EDGE * m];
#pragma unroll
            for (int n = 0; n < MICRO; n++) w[n] = w_tile[k][tx + EDGE * n];
#pragma unroll
            for (int m = 0; m < MICRO; m++)
#pragma unroll
                for (int n = 0; n < MICRO; n++) acc[m][n] += d[m] * w[n];
        }
        __syncthreads();   // every thread is done reading this chunk before the next one overwrites the tiles
    }
#pragma unroll
    for (int m = 0; m < MICRO; m++) {
        int r = r0 + ty + EDGE * m;
        if (r >= B) continue;
#pragma unroll
        for (int n = 0; n < MICRO; n++) {
            int i = i0 + tx + EDGE * n;
            if (i < I) {
                T ai = a[r * I + i];             // read before delta[r, i] is written: delta may be a
                delta[r * I + i] = acc[m][n] * ai * (T(1) - ai);
            }
        }
    }
}

extern "C" __global__ void gemm_sigmoid_delta_naive_f32(const float* delta_next, const float* W_next, const float* a, float* delta, int B, int I, int O) { gemm_sigmoid_delta_naive(delta_next, W_next, a, delta, B, I, O); }
extern "C" __global__ void gemm_sigmoid_delta_naive_f64(const double* delta_next, const double* W_next, const double* a, double* delta, int B, int I, int O) { gemm_sigmoid_delta_naive(delta_next, W_next, a, delta, B, I, O); }
extern "C" __global__ void __launch_bounds__(THREADS, MIN_BLOCKS_F32) gemm_sigmoid_delta_f32(const float* delta_next, const float* W_next, const float* a, float* delta, int B, int I, int O) { gemm_sigmoid_delta_fast(delta_next, W_next, a, delta, B, I, O); }
extern "C" __global__ void __launch_bounds__(THREADS, MIN_BLOCKS_F64) gemm_sigmoid_delta_f64(const double* delta_next, const double* W_next, const double* a, double* delta, int B, int I, int O) { gemm_sigmoid_delta_fast(delta_next, W_next, a, delta, B, I, O); }
