/*
 * costs.cuh -- the two costs, one output element at a time: BP1's delta and the loss term
 * (delta.cu's output_delta, fused_step.cu).  Inlined into each family's source by
 * gpubp.cuda.sources, as sigmoid.cuh is.
 *
 *     Mse:           delta = (a − y) · a(1 − a)       loss = ½ (a − y)²
 *     CrossEntropy:  delta = a − y  (σ' cancels)      loss = −[y ln a + (1 − y) ln(1 − a)]
 * with a and 1 − a clamped below at ε before the logs: ε = 1e-7 (float), 1e-12 (double),
 * gpubp.reference.CE_EPS.  The clamp keeps a NaN (a diverged run must show as a NaN loss).
 */
#ifndef GPUBP_COSTS_CUH
#define GPUBP_COSTS_CUH

// log for each T, spelled out so that no overload resolution is left to the compiler.
__device__ inline float log_t(float x) { return logf(x); }
__device__ inline double log_t(double x) { return log(x); }
// max(x, lo) that keeps a NaN x: fmax(NaN, lo) is lo, which would turn a NaN activation into a
// finite loss and hide a diverged training run (the comparison is false for NaN, so x is returned).
template <typename T> __device__ inline T at_least(T x, T lo) { return x < lo ? lo : x; }

template <typename T> __device__ inline T ce_eps();
template <> __device__ inline float ce_eps<float>() { return 1e-7f; }
template <> __device__ inline double ce_eps<double>() { return 1e-12; }

struct Mse {
    template <typename T> __device__ static T delta(T a, T y) { return (a - y) * a * (T(1) - a); }
    template <typename T> __device__ static T loss(T a, T y) { return T(0.5) * (a - y) * (a - y); }
};
struct CrossEntropy {
    template <typename T> __device__ static T delta(T a, T y) { return a - y; }
    template <typename T> __device__ static T loss(T a, T y) {
        return -(y * log_t(at_least(a, ce_eps<T>())) + (T(1) - y) * log_t(at_least(T(1) - a, ce_eps<T>())));
    }
};

#endif  // GPUBP_COSTS_CUH
