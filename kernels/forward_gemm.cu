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
 *       one block computes a TILE×TILE tile of a (rows r0 … r0+TILE of the batch, columns
 *       o0 … o0+TILE) with the main loop of gemm_mainloop.cuh (A = a_prev, row-major B×I,
 *       staged transposed; B = W, I×O, staged as it is), each thread a TM×TM micro-tile
 *       (8×8 in f32, 4×4 in f64).  Epilogue in registers: + b[o], σ, store.
 *       launch: block = (GEMM_THREADS,) (64 in f32, 256 in f64 at the defaults),
 *       grid = (ceil_div(O, TILE), ceil_div(B, TILE), splits); vec_a, vec_w: 1 where a_prev (W)
 *       may be read 16 bytes at a time (aligned pointer, I (O) a multiple of 16 / sizeof(T));
 *       splits > 1: split-K over I, partial (splits×B×O) and counters (a zeroed int a tile) its
 *       workspace.
 *       static shared memory: 4·BK·(TILE + 16/sizeof(T))·sizeof(T) + 16 = 4.3 KiB (f32), 8.3 KiB (f64)
 *       (one stage, half that, under PIPELINE 1).
 *
 * Bytes (f32): the fused kernel reads a_prev, W, b and writes a: 4·(B·I + I·O + O + B·O);
 * cuBLAS `a_prev @ W` then bias_sigmoid also writes z and reads it back: 8·B·O more.
 *
 * Indices are 32-bit: the launcher requires B·I, I·O, B·O <= 2^31 − 1 and every
 * dimension + TILE below 2^31 (a block's row and column indices, before the bounds test).
 */

#include "gemm_mainloop.cuh"  // TILE, MICRO, BK; Gemm<T>, gemm_mainloop

// The register budget per thread and the launch bounds that follow from it (as weight_grad.cu):
// an 8×8 (f32: <= 168) or 4×4 (f64: <= 128) accumulator tile, its fragments and a chunk's staged loads.
constexpr int REGS_F32 = 168, REGS_F64 = 128;
constexpr int MIN_BLOCKS_F32 = 65536 / (GEMM_THREADS_F32 * REGS_F32) > 0 ? 65536 / (GEMM_THREADS_F32 * REGS_F32) : 1;
constexpr int MIN_BLOCKS_F64 = 65536 / (GEMM_THREADS_F64 * REGS_F64) > 0 ? 65536 / (GEMM_THREADS_F64 * REGS_F64) : 1;

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

// fast: z for the thread's micro-tile (the main loop), then the epilogue.
template <typename T>
__device__ void gemm_bias_sigmoid_fast(const T* a_prev, const T* W, const T* b, T* a, int B, int I, int O,
                                       int vec_a, int vec_w, int splits, T* partial, int* counters) {
    using G = Gemm<T>;
    const int r0 = blockIdx.y * TILE, o0 = blockIdx.x * TILE;
    const int kc = split_chunk(I, splits), k_begin = min(I, blockIdx.z * kc), k_end = min(I, k_begin + kc);
    T acc[G::TM][G::TM];
    gemm_mainloop<T, false, true>(a_prev, I, vec_a, W, O, vec_w, B, O, k_begin, k_end, r0, o0, acc);
    if (splits > 1 && !split_fixup(acc, partial, counters, B, O, r0, o0, splits)) return;
    const int rm = r0 + micro_row0<T>(), on = o0 + micro_col0<T>();
#pragma unroll
    for (int j = 0; j < G::TM; j++) {
        const int o = on + j;
        if (o >= O) continue;
        const T bias = b[o];
#pragma unroll
        for (int i = 0; i < G::TM; i++) {
            const int r = rm + i;
            if (r < B) a[r * O + o] = sigmoid(acc[i][j] + bias);
        }
    }
}

extern "C" __global__ void gemm_bias_sigmoid_naive_f32(const float* a_prev, const float* W, const float* b, float* a, int B, int I, int O) { gemm_bias_sigmoid_naive(a_prev, W, b, a, B, I, O); }
extern "C" __global__ void gemm_bias_sigmoid_naive_f64(const double* a_prev, const double* W, const double* b, double* a, int B, int I, int O) { gemm_bias_sigmoid_naive(a_prev, W, b, a, B, I, O); }
extern "C" __global__ void __launch_bounds__(GEMM_THREADS_F32, MIN_BLOCKS_F32) gemm_bias_sigmoid_f32(const float* a_prev, const float* W, const float* b, float* a, int B, int I, int O, int vec_a, int vec_w, int splits, float* partial, int* counters) { gemm_bias_sigmoid_fast(a_prev, W, b, a, B, I, O, vec_a, vec_w, splits, partial, counters); }
extern "C" __global__ void __launch_bounds__(GEMM_THREADS_F64, MIN_BLOCKS_F64) gemm_bias_sigmoid_f64(const double* a_prev, const double* W, const double* b, double* a, int B, int I, int O, int vec_a, int vec_w, int splits, double* partial, int* counters) { gemm_bias_sigmoid_fast(a_prev, W, b, a, B, I, O, vec_a, vec_w, splits, partial, counters); }
