// cuda_shim.h: the CUDA device-code surface that kernels/*.cu may use, for
// compiling the same source with a host C++ compiler (gpubp.cuda.emulator).
//
// Included before the kernel source; kernels need no #include of their own.
// Provided: the qualifiers (__global__ __device__ __host__ __forceinline__
// __noinline__ __restrict__ __launch_bounds__(...) __align__ __constant__
// __shared__), threadIdx/blockIdx/blockDim/gridDim, warpSize, __syncthreads()
// (+ _count/_and/_or), float/double math with CUDA's overloads and fast
// intrinsics, min/max, __ldg, atomics (trivially atomic: threads are fibers
// that only switch at barriers), __threadfence*() (no-ops), vector types,
// device assert() and __trap().
//
// Not provided, on purpose:
//  * warp shuffles and votes (__shfl*_sync, __ballot_sync, __all_sync,
//    __syncwarp, ...): the emulator has no lockstep warps; using one is a
//    compile error whose message says so.  Use shared memory + __syncthreads().
//  * dynamic shared memory (extern __shared__ T x[];): a compile error here;
//    declare static __shared__ arrays sized by a -D macro instead.
//  * __CUDA_ARCH__ / __CUDACC__ are not defined; GPUBP_EMULATOR is.
//
// __shared__ expands to `static thread_local`: one copy per block in time
// (blocks run one after another, all threads of a launch on one OS thread).
// thread_local, because that puts every __shared__ variable, templates
// included, in the module's TLS block, which the runtime fills with a NaN
// pattern (0xFFFADBAD words) before each block so that a read-before-write
// shows up.  (A section attribute would be simpler, but GCC ignores it on
// static locals of templates.)  Nothing else in a module may be thread_local.
#pragma once

#include <math.h>  // the C++ <math.h> puts the float/double overloads (exp(float), ...) in the global namespace

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <type_traits>
#include <utility>

#include "runtime.h"

#define GPUBP_EMULATOR 1

// ---------------------------------------------------------------- qualifiers
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
#define __constant__ static
// `used`: the optimizer must not assume that a barrier call leaves the
// variable alone; other threads (fibers) write it while this one waits.
#define __shared__ static thread_local __attribute__((used))

// ---------------------------------------------------------------- built-in variables
#define threadIdx (static_cast<const uint3&>(::gpubp::thread_idx))
#define blockIdx (static_cast<const uint3&>(::gpubp::block_idx))
#define blockDim (static_cast<const dim3&>(::gpubp::block_dim))
#define gridDim (static_cast<const dim3&>(::gpubp::grid_dim))
static constexpr int warpSize = 32;

// ---------------------------------------------------------------- barriers, fences, traps
// __LINE__ identifies the call site, so threads waiting at different
// __syncthreads() calls are reported instead of silently released together.
#define __syncthreads() ::gpubp::syncthreads(__LINE__)
#define __syncthreads_count(predicate) ::gpubp::syncthreads_count(__LINE__, (predicate))
#define __syncthreads_and(predicate) \
    (::gpubp::syncthreads_count(__LINE__, (predicate)) == static_cast<int>(blockDim.x * blockDim.y * blockDim.z))
#define __syncthreads_or(predicate) (::gpubp::syncthreads_count(__LINE__, (predicate)) != 0)
inline void __threadfence() {}
inline void __threadfence_block() {}
inline void __threadfence_system() {}
#undef assert
#define assert(e) ((e) ? static_cast<void>(0) : ::gpubp::device_abort("assertion `" #e "' failed", __FILE__, __LINE__))
#define __trap() ::gpubp::device_abort("__trap() called", __FILE__, __LINE__)

// ---------------------------------------------------------------- unsupported warp-level intrinsics
template <typename... A>
struct gpubp_unsupported : std::false_type {};
#define GPUBP_UNSUPPORTED(name)                                                                      \
    template <typename... A>                                                                         \
    inline int name(A...) {                                                                          \
        static_assert(gpubp_unsupported<A...>::value,                                                \
                      "gpubp emulator: " #name " is not supported (no lockstep warps are emulated); " \
                      "use shared memory and __syncthreads() instead");                              \
        return 0;                                                                                    \
    }
GPUBP_UNSUPPORTED(__shfl_sync)
GPUBP_UNSUPPORTED(__shfl_up_sync)
GPUBP_UNSUPPORTED(__shfl_down_sync)
GPUBP_UNSUPPORTED(__shfl_xor_sync)
GPUBP_UNSUPPORTED(__shfl)
GPUBP_UNSUPPORTED(__shfl_up)
GPUBP_UNSUPPORTED(__shfl_down)
GPUBP_UNSUPPORTED(__shfl_xor)
GPUBP_UNSUPPORTED(__ballot_sync)
GPUBP_UNSUPPORTED(__ballot)
GPUBP_UNSUPPORTED(__all_sync)
GPUBP_UNSUPPORTED(__any_sync)
GPUBP_UNSUPPORTED(__uni_sync)
GPUBP_UNSUPPORTED(__all)
GPUBP_UNSUPPORTED(__any)
GPUBP_UNSUPPORTED(__match_any_sync)
GPUBP_UNSUPPORTED(__match_all_sync)
GPUBP_UNSUPPORTED(__reduce_add_sync)
GPUBP_UNSUPPORTED(__activemask)
GPUBP_UNSUPPORTED(__syncwarp)
#undef GPUBP_UNSUPPORTED

// ---------------------------------------------------------------- math
// expf exp logf log fabsf fabs fmaxf fmax fminf fmin fmaf fma sqrtf sqrt ...
// come from <math.h>; these are the CUDA-only names.
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __log2f(float x) { return log2f(x); }
inline float __powf(float x, float y) { return powf(x, y); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline float __tanf(float x) { return tanf(x); }
inline float __fdividef(float x, float y) { return x / y; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline double __drcp_rn(double x) { return 1.0 / x; }
inline float __fadd_rn(float x, float y) { return x + y; }
inline float __fsub_rn(float x, float y) { return x - y; }
inline float __fmul_rn(float x, float y) { return x * y; }
inline float __fdiv_rn(float x, float y) { return x / y; }
inline float __fmaf_rn(float x, float y, float z) { return fmaf(x, y, z); }
inline double __dadd_rn(double x, double y) { return x + y; }
inline double __dmul_rn(double x, double y) { return x * y; }
inline double __fma_rn(double x, double y, double z) { return fma(x, y, z); }
inline float __saturatef(float x) { return fminf(fmaxf(x, 0.0f), 1.0f); }  // NaN -> 0, as in CUDA
inline float __int_as_float(int v) { float f; memcpy(&f, &v, sizeof f); return f; }
inline int __float_as_int(float v) { int i; memcpy(&i, &v, sizeof i); return i; }
inline float __uint_as_float(unsigned int v) { float f; memcpy(&f, &v, sizeof f); return f; }
inline unsigned int __float_as_uint(float v) { unsigned int i; memcpy(&i, &v, sizeof i); return i; }
inline double __longlong_as_double(long long v) { double d; memcpy(&d, &v, sizeof d); return d; }
inline long long __double_as_longlong(double v) { long long i; memcpy(&i, &v, sizeof i); return i; }

// CUDA's device min/max overloads (float/double ones follow fminf/fmin on NaN).
#define GPUBP_MINMAX(T)                                  \
    inline T min(T a, T b) { return b < a ? b : a; } \
    inline T max(T a, T b) { return a < b ? b : a; }
GPUBP_MINMAX(int)
GPUBP_MINMAX(unsigned int)
GPUBP_MINMAX(long)
GPUBP_MINMAX(unsigned long)
GPUBP_MINMAX(long long)
GPUBP_MINMAX(unsigned long long)
#undef GPUBP_MINMAX
inline unsigned int min(int a, unsigned int b) { return min(static_cast<unsigned int>(a), b); }
inline unsigned int min(unsigned int a, int b) { return min(a, static_cast<unsigned int>(b)); }
inline unsigned int max(int a, unsigned int b) { return max(static_cast<unsigned int>(a), b); }
inline unsigned int max(unsigned int a, int b) { return max(a, static_cast<unsigned int>(b)); }
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double max(double a, double b) { return fmax(a, b); }
inline double min(float a, double b) { return fmin(a, b); }
inline double min(double a, float b) { return fmin(a, b); }
inline double max(float a, double b) { return fmax(a, b); }
inline double max(double a, float b) { return fmax(a, b); }

// ---------------------------------------------------------------- memory
template <typename T>
inline T __ldg(const T* p) { return *p; }

// Fibers switch only at barriers, so a read-modify-write is already atomic.
#define GPUBP_ATOMIC(T)                                                                   \
    inline T atomicAdd(T* p, T v) { T old = *p; *p = old + v; return old; }              \
    inline T atomicExch(T* p, T v) { T old = *p; *p = v; return old; }
GPUBP_ATOMIC(int)
GPUBP_ATOMIC(unsigned int)
GPUBP_ATOMIC(unsigned long long)
GPUBP_ATOMIC(float)
GPUBP_ATOMIC(double)
#undef GPUBP_ATOMIC
#define GPUBP_ATOMIC_INT(T)                                                               \
    inline T atomicSub(T* p, T v) { T old = *p; *p = old - v; return old; }              \
    inline T atomicMin(T* p, T v) { T old = *p; *p = v < old ? v : old; return old; }    \
    inline T atomicMax(T* p, T v) { T old = *p; *p = old < v ? v : old; return old; }    \
    inline T atomicCAS(T* p, T expected, T v) { T old = *p; if (old == expected) *p = v; return old; }
GPUBP_ATOMIC_INT(int)
GPUBP_ATOMIC_INT(unsigned int)
GPUBP_ATOMIC_INT(unsigned long long)
#undef GPUBP_ATOMIC_INT

// ---------------------------------------------------------------- vector types
struct alignas(8) float2 { float x, y; };
struct float3 { float x, y, z; };
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(16) double2 { double x, y; };
struct alignas(8) int2 { int x, y; };
struct int3 { int x, y, z; };
struct alignas(16) int4 { int x, y, z, w; };
inline float2 make_float2(float x, float y) { return float2{x, y}; }
inline float3 make_float3(float x, float y, float z) { return float3{x, y, z}; }
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }
inline double2 make_double2(double x, double y) { return double2{x, y}; }
inline int2 make_int2(int x, int y) { return int2{x, y}; }
inline int3 make_int3(int x, int y, int z) { return int3{x, y, z}; }
inline int4 make_int4(int x, int y, int z, int w) { return int4{x, y, z, w}; }
inline uint3 make_uint3(unsigned int x, unsigned int y, unsigned int z) { return uint3{x, y, z}; }
