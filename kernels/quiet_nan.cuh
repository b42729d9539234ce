/*
 * quiet_nan.cuh -- a quiet NaN of each T, for the kernels that must write NaN where an input is
 * bad (gather.cu, fused_step.cu: a row number outside [0, n) reads no memory and gives NaN rows).
 * Inlined into each family's source by gpubp.cuda.sources, as sigmoid.cuh is.
 */
#ifndef GPUBP_QUIET_NAN_CUH
#define GPUBP_QUIET_NAN_CUH

__device__ inline float quiet_nan(float) { return __int_as_float(0x7fc00000); }
__device__ inline double quiet_nan(double) { return __longlong_as_double(0x7ff8000000000000LL); }

#endif  // GPUBP_QUIET_NAN_CUH
