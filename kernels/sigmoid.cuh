/*
 * sigmoid.cuh -- σ for the kernels that compute an activation (forward.cu, forward_gemm.cu,
 * fused_step.cu): one definition, inlined into each family's source by gpubp.cuda.sources
 * before any compiler sees it (so every compiled source is self-contained; nvcc -I kernels
 * compiles the .cu files as they are).
 *
 * σ(x) = 1 / (1 + exp(−x)), evaluated in a form that never overflows: with e = exp(−|x|)
 * in (0, 1],  σ(x) = 1 / (1 + e) for x >= 0,  σ(x) = e / (1 + e) for x < 0: the formula of
 * gpubp.reference.sigmoid.
 */
#ifndef GPUBP_SIGMOID_CUH
#define GPUBP_SIGMOID_CUH

// exp for each T, spelled out so that no overload resolution is left to the compiler.
__device__ inline float exp_t(float x) { return expf(x); }
__device__ inline double exp_t(double x) { return exp(x); }

// σ(x) without overflow: e = exp(−|x|) never exceeds 1.
template <typename T>
__device__ inline T sigmoid(T x) {
    T e = exp_t(x >= T(0) ? -x : x);
    return x >= T(0) ? T(1) / (T(1) + e) : e / (T(1) + e);
}

#endif  // GPUBP_SIGMOID_CUH
