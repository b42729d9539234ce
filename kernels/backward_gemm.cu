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
 *       one block computes a TILE×TILE tile of delta (rows r0 … r0+TILE, columns i0 … i0+TILE)
 *       with the main loop of gemm_mainloop.cuh (A = delta_next, row-major B×O, and
 *       B = W_nextᵀ, read in place from W_next (I×O) along o: both staged transposed), each
 *       thread a TM×TM micro-tile.  Epilogue: · a (1 − a), store.
 *       launch: block = (GEMM_THREADS,), grid = (ceil_div(I, TILE), ceil_div(B, TILE), splits)
 *       (splits > 1: split-K over O, partial (splits×B×I) and counters its workspace);
 *       vec_d, vec_w: 1 where delta_next (W_next) may be read 16 bytes at a time (aligned
 *       pointer, O a multiple of 16 / sizeof(T)).
 *       static shared memory: 4·BK·(TILE + 16/sizeof(T))·sizeof(T) + 16 = 4.3 KiB (f32), 8.3 KiB (f64)
 *       (one stage, half that, under PIPELINE 1).
 *
 * Bytes (f32): the fused kernel reads delta_next, W_next, a and writes delta:
 * 4·(B·O + I·O + 2·B·I); cuBLAS `delta_next @ W_next.T` then sigmoid_delta writes the
 * product and reads it back: 8·B·I more.
 *
 * Indices are 32-bit: the launcher requires B·I, I·O, B·O <= 2^31 − 1 and every
 * dimension + TILE below 2^31.
 */

#include "gemm_mainloop.cuh"  // TILE, MICRO, BK; Gemm<T>, gemm_mainloop

// The register budget per thread and the launch bounds that follow from it, as in forward_gemm.cu.
constexpr int REGS_F32 = 168, REGS_F64 = 128;
constexpr int MIN_BLOCKS_F32 = 65536 / (GEMM_THREADS_F32 * REGS_F32) > 0 ? 65536 / (GEMM_THREADS_F32 * REGS_F32) : 1;
constexpr int MIN_BLOCKS_F64 = 65536 / (GEMM_THREADS_F64 * REGS_F64) > 0 ? 65536 / (GEMM_THREADS_F64 * REGS_F64) : 1;

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

// fast: the product for the thread's micro-tile (the main loop), then the epilogue.
template <typename T>
__device__ void gemm_sigmoid_delta_fast(const T* delta_next, const T* W_next, const T* a, T* delta,
                                        int B, int I, int O, int vec_d, int vec_w, int splits, T* partial,
                                        int* counters) {
    using G = Gemm<T>;
    const int r0 = blockIdx.y * TILE, i0 = blockIdx.x * TILE;
    const int kc = split_chunk(O, splits), k_begin = min(O, blockIdx.z * kc), k_end = min(O, k_begin + kc);
    T acc[G::TM][G::TM];
    gemm_mainloop<T, false, false>(delta_next, O, vec_d, W_next, O, vec_w, B, I, k_begin, k_end, r0, i0, acc);
    if (splits > 1 && !split_fixup(acc, partial, counters, B, I, r0, i0, splits)) return;
    const int rm = r0 + micro_row0<T>(), in = i0 + micro_col0<T>();
#pragma unroll
    for (int i = 0; i < G::TM; i++) {
        const int r = rm + i;
        if (r >= B) continue;
#pragma unroll
        for (int j = 0; j < G::TM; j++) {
            const int c = in + j;
            if (c < I) {
                const T ai = a[r * I + c];         // read before delta[r, c] is written: delta may be a
                delta[r * I + c] = acc[i][j] * ai * (T(1) - ai);
            }
        }
    }
}

extern "C" __global__ void gemm_sigmoid_delta_naive_f32(const float* delta_next, const float* W_next, const float* a, float* delta, int B, int I, int O) { gemm_sigmoid_delta_naive(delta_next, W_next, a, delta, B, I, O); }
extern "C" __global__ void gemm_sigmoid_delta_naive_f64(const double* delta_next, const double* W_next, const double* a, double* delta, int B, int I, int O) { gemm_sigmoid_delta_naive(delta_next, W_next, a, delta, B, I, O); }
extern "C" __global__ void __launch_bounds__(GEMM_THREADS_F32, MIN_BLOCKS_F32) gemm_sigmoid_delta_f32(const float* delta_next, const float* W_next, const float* a, float* delta, int B, int I, int O, int vec_d, int vec_w, int splits, float* partial, int* counters) { gemm_sigmoid_delta_fast(delta_next, W_next, a, delta, B, I, O, vec_d, vec_w, splits, partial, counters); }
extern "C" __global__ void __launch_bounds__(GEMM_THREADS_F64, MIN_BLOCKS_F64) gemm_sigmoid_delta_f64(const double* delta_next, const double* W_next, const double* a, double* delta, int B, int I, int O, int vec_d, int vec_w, int splits, double* partial, int* counters) { gemm_sigmoid_delta_fast(delta_next, W_next, a, delta, B, I, O, vec_d, vec_w, splits, partial, counters); }
