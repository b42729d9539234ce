// cuda_shim.h: the CUDA device-code surface that kernels/*.cu may use, for
// compiling the same source with a host C++ compiler (gpubp.cuda.emulator).
//
// Included before the kernel source; kernels need no #include of their own.
// Provided: the qualifiers (__global__ __device__ __host__ __forceinline__
// __noinline__ __restrict__ __launch_bounds__(...) __align__ __constant__
// __shared__, extern __shared__), threadIdx/blockIdx/blockDim/gridDim,
// warpSize, __syncthreads() (+ _count/_and/_or), the warp-synchronous
// primitives (__shfl_sync, __shfl_up/down/xor_sync with width, __ballot_sync,
// __any_sync, __all_sync, __activemask, __syncwarp, and __reduce_add/min/max_sync
// when compiled for sm_80 or newer), float/double math with CUDA's overloads
// and fast intrinsics, min/max, __ldg, atomics (trivially atomic: threads are
// fibers that only switch at barriers and warp primitives),
// __threadfence*() (no-ops), vector types whose copies check the alignment of
// the address (float2/int2: 8 bytes, float4/double2/int4: 16), the
// asynchronous copies of cuda_pipeline.h (__pipeline_memcpy_async,
// __pipeline_commit, __pipeline_wait_prior: #include <cuda_pipeline.h> finds
// an empty stand-in), device assert() and __trap().
//
// Not provided, on purpose (a compile error whose message says so): the
// legacy warp intrinsics without _sync (removed for sm_70+), __match_*_sync,
// __uni_sync.  __CUDA_ARCH__ is defined as the target architecture's (900
// unless the module was built for another); __CUDACC__ is not; GPUBP_EMULATOR is.
//
// __shared__ expands to `thread_local` (at block scope that implies static):
// one copy per block in time (blocks run one after another, all threads of a
// launch on one OS thread).  thread_local, because that puts every __shared__
// variable, templates included, in the module's TLS block, which the runtime
// fills with a NaN pattern (0xFFFADBAD words) before each block so that a
// read-before-write shows up.  (A section attribute would be simpler, but GCC
// ignores it on static locals of templates.)  `extern __shared__ T x[];` is
// then an undefined TLS symbol, which the build defines as an alias of one
// dynamic region (dynamic_shared.S), so every extern __shared__ array of a
// module starts at the same address, as on a GPU.  Nothing else in a module
// may be thread_local.
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
#ifndef __CUDA_ARCH__
#define __CUDA_ARCH__ 900  // the build passes -D__CUDA_ARCH__ for the module's target architecture
#endif

// ---------------------------------------------------------------- qualifiers
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))  // GCC takes it anywhere among the decl-specifiers
#define __constant__ static
// `used`: the optimizer must not assume that a barrier call leaves the
// variable alone; other threads (fibers) write it while this one waits.
#define __shared__ thread_local __attribute__((used))

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

// ---------------------------------------------------------------- warp-synchronous primitives
// Each is a rendezvous of the lanes its mask names (runtime.cpp: warp_op); the
// default argument __builtin_LINE() is the caller's line, which tells call
// sites apart.  Shuffles move any 4- or 8-byte arithmetic value.
namespace gpubp {
template <typename T>
inline T shuffle(int kind, int line, unsigned mask, T var, int arg, int width) {
    static_assert(sizeof(T) <= 8, "a shuffle moves at most 8 bytes");
    unsigned long long bits = 0;
    memcpy(&bits, &var, sizeof(T));
    bits = warp_op(kind, line, mask, bits, arg, width);
    T out;
    memcpy(&out, &bits, sizeof(T));
    return out;
}
inline unsigned long long warp_u32(int kind, int line, unsigned mask, unsigned v) {
    return warp_op(kind, line, mask, v, 0, 32);
}
}  // namespace gpubp
#define GPUBP_SHUFFLES(T)                                                                                 \
    inline T __shfl_sync(unsigned mask, T var, int srcLane, int width = warpSize,                         \
                         int gpubp_line = __builtin_LINE()) {                                             \
        return ::gpubp::shuffle<T>(::gpubp::W_SHFL_IDX, gpubp_line, mask, var, srcLane, width);           \
    }                                                                                                     \
    inline T __shfl_up_sync(unsigned mask, T var, unsigned int delta, int width = warpSize,               \
                            int gpubp_line = __builtin_LINE()) {                                          \
        return ::gpubp::shuffle<T>(::gpubp::W_SHFL_UP, gpubp_line, mask, var, static_cast<int>(delta), width); \
    }                                                                                                     \
    inline T __shfl_down_sync(unsigned mask, T var, unsigned int delta, int width = warpSize,             \
                              int gpubp_line = __builtin_LINE()) {                                        \
        return ::gpubp::shuffle<T>(::gpubp::W_SHFL_DOWN, gpubp_line, mask, var, static_cast<int>(delta), width); \
    }                                                                                                     \
    inline T __shfl_xor_sync(unsigned mask, T var, int laneMask, int width = warpSize,                    \
                             int gpubp_line = __builtin_LINE()) {                                         \
        return ::gpubp::shuffle<T>(::gpubp::W_SHFL_XOR, gpubp_line, mask, var, laneMask, width);          \
    }
GPUBP_SHUFFLES(int)
GPUBP_SHUFFLES(unsigned int)
GPUBP_SHUFFLES(long)
GPUBP_SHUFFLES(unsigned long)
GPUBP_SHUFFLES(long long)
GPUBP_SHUFFLES(unsigned long long)
GPUBP_SHUFFLES(float)
GPUBP_SHUFFLES(double)
#undef GPUBP_SHUFFLES

inline unsigned __ballot_sync(unsigned mask, int predicate, int gpubp_line = __builtin_LINE()) {
    return static_cast<unsigned>(::gpubp::warp_u32(::gpubp::W_BALLOT, gpubp_line, mask, predicate != 0));
}
inline int __any_sync(unsigned mask, int predicate, int gpubp_line = __builtin_LINE()) {
    return static_cast<int>(::gpubp::warp_u32(::gpubp::W_ANY, gpubp_line, mask, predicate != 0));
}
inline int __all_sync(unsigned mask, int predicate, int gpubp_line = __builtin_LINE()) {
    return static_cast<int>(::gpubp::warp_u32(::gpubp::W_ALL, gpubp_line, mask, predicate != 0));
}
// The lanes of the warp that reach this same call together (see runtime.cpp: resolve_activemask).
inline unsigned __activemask(int gpubp_line = __builtin_LINE()) {
    return static_cast<unsigned>(::gpubp::warp_op(::gpubp::W_ACTIVEMASK, gpubp_line, 0u, 0u, 0, 32));
}
inline void __syncwarp(unsigned mask = 0xffffffffu, int gpubp_line = __builtin_LINE()) {
    ::gpubp::warp_op(::gpubp::W_SYNCWARP, gpubp_line, mask, 0u, 0, 32);
}

template <typename... A>
struct gpubp_unsupported : std::false_type {};
#if __CUDA_ARCH__ >= 800
#define GPUBP_REDUCE(name, kind_u, kind_i)                                                                     \
    inline unsigned name(unsigned mask, unsigned value, int gpubp_line = __builtin_LINE()) {                   \
        return static_cast<unsigned>(::gpubp::warp_u32(::gpubp::kind_u, gpubp_line, mask, value));            \
    }                                                                                                          \
    inline int name(unsigned mask, int value, int gpubp_line = __builtin_LINE()) {                             \
        return static_cast<int>(static_cast<unsigned>(                                                         \
            ::gpubp::warp_u32(::gpubp::kind_i, gpubp_line, mask, static_cast<unsigned>(value))));             \
    }
GPUBP_REDUCE(__reduce_add_sync, W_REDUCE_ADD, W_REDUCE_ADD)
GPUBP_REDUCE(__reduce_min_sync, W_REDUCE_MIN_U, W_REDUCE_MIN_I)
GPUBP_REDUCE(__reduce_max_sync, W_REDUCE_MAX_U, W_REDUCE_MAX_I)
#undef GPUBP_REDUCE
#else
#define GPUBP_NEEDS_SM80(name)                                                                            \
    template <typename... A>                                                                              \
    inline int name(A...) {                                                                               \
        static_assert(gpubp_unsupported<A...>::value,                                                     \
                      "gpubp emulator: " #name " needs sm_80 or newer, and this module is compiled for an " \
                      "older architecture (as NVRTC says: identifier is undefined); guard it with "        \
                      "#if __CUDA_ARCH__ >= 800 and give the older architectures a __shfl_xor_sync loop");  \
        return 0;                                                                                         \
    }
GPUBP_NEEDS_SM80(__reduce_add_sync)
GPUBP_NEEDS_SM80(__reduce_min_sync)
GPUBP_NEEDS_SM80(__reduce_max_sync)
#undef GPUBP_NEEDS_SM80
#endif

#define GPUBP_UNSUPPORTED(name, why)                                                    \
    template <typename... A>                                                            \
    inline int name(A...) {                                                             \
        static_assert(gpubp_unsupported<A...>::value, "gpubp emulator: " #name " " why); \
        return 0;                                                                       \
    }
#define GPUBP_LEGACY "has no mask and was removed for sm_70 and newer: use the _sync form with a mask"
GPUBP_UNSUPPORTED(__shfl, GPUBP_LEGACY)
GPUBP_UNSUPPORTED(__shfl_up, GPUBP_LEGACY)
GPUBP_UNSUPPORTED(__shfl_down, GPUBP_LEGACY)
GPUBP_UNSUPPORTED(__shfl_xor, GPUBP_LEGACY)
GPUBP_UNSUPPORTED(__ballot, GPUBP_LEGACY)
GPUBP_UNSUPPORTED(__all, GPUBP_LEGACY)
GPUBP_UNSUPPORTED(__any, GPUBP_LEGACY)
GPUBP_UNSUPPORTED(__uni_sync, "is not emulated")
GPUBP_UNSUPPORTED(__match_any_sync, "is not emulated")
GPUBP_UNSUPPORTED(__match_all_sync, "is not emulated")
#undef GPUBP_LEGACY
#undef GPUBP_UNSUPPORTED

// ---------------------------------------------------------------- asynchronous copies (cuda_pipeline.h)
// Each thread's copies are issued, committed in groups, and land at
// __pipeline_wait_prior(), never earlier: the destination holds poison from the
// issue until then.  On sm_75 the real header copies synchronously; code that
// is right here is right there.
inline void __pipeline_memcpy_async(void* __restrict__ dst_shared, const void* __restrict__ src_global,
                                    size_t size_and_align, size_t zfill = 0, int gpubp_line = __builtin_LINE()) {
    ::gpubp::pipeline_memcpy_async(dst_shared, src_global, size_and_align, zfill, gpubp_line);
}
inline void __pipeline_commit() { ::gpubp::pipeline_commit(); }
inline void __pipeline_wait_prior(size_t prior) { ::gpubp::pipeline_wait_prior(prior); }

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
// A copy from or to memory checks that the address is aligned to the type's
// size, as a GPU's vector load/store faults ("misaligned address") otherwise.
// Members read one by one (v->x) are scalar accesses and need no more than 4.
namespace gpubp {
inline void check_aligned(const void* p, unsigned align, int write, const char* type) {
    if (__builtin_expect((reinterpret_cast<uintptr_t>(p) & (align - 1)) != 0, 0)) misaligned(p, align, write, type);
}
// Copies one vector after checking the source's (and, for a store, the
// destination's) alignment.  The empty asm hides the pointers' alignment from
// the optimizer, so that no aligned SSE move can fault before the check.
inline void copy_vector(void* dst, const void* src, unsigned size, const char* type, bool store) {
    check_aligned(src, size, 0, type);
    if (store) {
        check_aligned(dst, size, 1, type);
        asm("" : "+r"(dst));
    }
    asm("" : "+r"(src));
    memcpy(dst, src, size);
}
}  // namespace gpubp
#define GPUBP_VECTOR2(V, T, A)                                                               \
    struct alignas(A) V {                                                                    \
        T x, y;                                                                              \
        V() = default;                                                                       \
        constexpr V(T x_, T y_) : x(x_), y(y_) {}                                            \
        V(const V& o) { ::gpubp::copy_vector(this, &o, A, #V, false); }                      \
        V& operator=(const V& o) {                                                           \
            ::gpubp::copy_vector(this, &o, A, #V, true);                                     \
            return *this;                                                                    \
        }                                                                                    \
    };
#define GPUBP_VECTOR4(V, T, A)                                                               \
    struct alignas(A) V {                                                                    \
        T x, y, z, w;                                                                        \
        V() = default;                                                                       \
        constexpr V(T x_, T y_, T z_, T w_) : x(x_), y(y_), z(z_), w(w_) {}                  \
        V(const V& o) { ::gpubp::copy_vector(this, &o, A, #V, false); }                      \
        V& operator=(const V& o) {                                                           \
            ::gpubp::copy_vector(this, &o, A, #V, true);                                     \
            return *this;                                                                    \
        }                                                                                    \
    };
GPUBP_VECTOR2(float2, float, 8)
GPUBP_VECTOR4(float4, float, 16)
GPUBP_VECTOR2(double2, double, 16)
GPUBP_VECTOR2(int2, int, 8)
GPUBP_VECTOR4(int4, int, 16)
#undef GPUBP_VECTOR2
#undef GPUBP_VECTOR4
struct float3 { float x, y, z; };
struct int3 { int x, y, z; };
inline float2 make_float2(float x, float y) { return float2{x, y}; }
inline float3 make_float3(float x, float y, float z) { return float3{x, y, z}; }
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }
inline double2 make_double2(double x, double y) { return double2{x, y}; }
inline int2 make_int2(int x, int y) { return int2{x, y}; }
inline int3 make_int3(int x, int y, int z) { return int3{x, y, z}; }
inline int4 make_int4(int x, int y, int z, int w) { return int4{x, y, z, w}; }
inline uint3 make_uint3(unsigned int x, unsigned int y, unsigned int z) { return uint3{x, y, z}; }
