// Dynamic shared memory, asynchronous copies and vector accesses, for
// tests/test_emulator_warp.py: run on the emulated device and compiled with NVRTC
// for sm_75 ... sm_120.  Kernels named *_bug carry one bug each.
#include <cuda_pipeline.h>

// Reverse each block's n-element segment of x through dynamic shared memory
// (shared_mem = n * 4 bytes, blockDim.x threads striding over it).
extern "C" __global__ void reverse_dynamic(float* x, int n) {
    extern __shared__ float s[];
    float* seg = x + (long long)blockIdx.x * n;
    for (int k = threadIdx.x; k < n; k += blockDim.x) s[k] = seg[k];
    __syncthreads();  // all of s is written
    for (int k = threadIdx.x; k < n; k += blockDim.x) seg[k] = s[n - 1 - k];
}

// Two extern __shared__ names are one region (as on a GPU): written as double, read as bytes.
extern "C" __global__ void dynamic_aliases(const double* x, unsigned char* out, int n) {
    extern __shared__ double sd[];
    extern __shared__ unsigned char sb[];
    for (int k = threadIdx.x; k < n; k += blockDim.x) sd[k] = x[k];
    __syncthreads();  // sd is written
    for (int k = threadIdx.x; k < 8 * n; k += blockDim.x) out[k] = sb[k];
}

// extern __shared__ declared inside a function template (as templated kernels do: fused_step.cu),
// one instantiation per T: GCC calls the TLS init function of such an extern unconditionally,
// which the emulator's build defines.  out[k] = 2 x[k] through the dynamic region.
template <typename T>
__device__ void twice_through_shared(const T* x, T* out, int n) {
    extern __shared__ __align__(16) unsigned char raw[];
    T* s = reinterpret_cast<T*>(raw);
    for (int k = threadIdx.x; k < n; k += blockDim.x) s[k] = T(2) * x[k];
    __syncthreads();  // s is written
    for (int k = threadIdx.x; k < n; k += blockDim.x) out[k] = s[n - 1 - k];
}
extern "C" __global__ void template_dynamic_f32(const float* x, float* out, int n) { twice_through_shared(x, out, n); }
extern "C" __global__ void template_dynamic_f64(const double* x, double* out, int n) { twice_through_shared(x, out, n); }

// 8 KiB of static shared memory beside the dynamic: out[k] = x[k] + 1 through both.
extern "C" __global__ void static_and_dynamic(const float* x, float* out, int n) {
    __shared__ float fixed[2048];
    extern __shared__ float s[];
    for (int k = threadIdx.x; k < 2048; k += blockDim.x) fixed[k] = 1.0f;
    for (int k = threadIdx.x; k < n; k += blockDim.x) s[k] = x[k];
    __syncthreads();  // fixed and s are written
    for (int k = threadIdx.x; k < n; k += blockDim.x) out[k] = s[k] + fixed[k % 2048];
}

// Writes one float past the launch's dynamic shared memory.
extern "C" __global__ void dynamic_overflow_bug(int n) {
    extern __shared__ float s[];
    if (threadIdx.x == 0) s[n] = 1.0f;
}

// Double-buffered column sums: x is a matrix of tiles * TILE_ROWS rows and COLS = 64 columns
// (row-major); one block of 64 threads, thread c sums column c.  Each tile is copied into
// shared memory with __pipeline_memcpy_async (16 B = 4 floats a copy) while the previous
// one is summed: stage k % 2 is read while stage (k + 1) % 2 fills.  On sm_80 and newer
// these are cp.async copies; on sm_75 cuda_pipeline.h copies synchronously.
#define TILE_ROWS 8
#define COLS 64
template <bool WAIT_FIRST, bool BARRIER_AFTER_WAIT>
__device__ void column_sums_pipelined(const float* x, float* out, int tiles) {
    __shared__ __align__(16) float stage[2][TILE_ROWS * COLS];
    const int t = threadIdx.x;  // 64 threads
    // thread t copies 16 B chunks t and t + 64 of a tile's 128 chunks (TILE_ROWS * COLS / 4)
    auto load = [&](int tile, int buf) {
        for (int chunk = t; chunk < TILE_ROWS * COLS / 4; chunk += 64)
            __pipeline_memcpy_async(&stage[buf][4 * chunk], &x[(long long)tile * TILE_ROWS * COLS + 4 * chunk], 16);
        __pipeline_commit();
    };
    float acc = 0.0f;
    load(0, 0);
    for (int k = 0; k < tiles; ++k) {
        if (k + 1 < tiles) {
            load(k + 1, (k + 1) % 2);
            if (WAIT_FIRST) __pipeline_wait_prior(1);  // tile k has landed; tile k + 1 may be in flight
        } else if (WAIT_FIRST) {
            __pipeline_wait_prior(0);  // the last tile has landed
        }
        if (BARRIER_AFTER_WAIT) __syncthreads();  // every thread's copies of tile k have landed
        for (int r = 0; r < TILE_ROWS; ++r) acc += stage[k % 2][r * COLS + t];
        __syncthreads();  // stage k % 2 is read before tile k + 2 overwrites it
    }
    out[t] = acc;
}
extern "C" __global__ void column_sums_double_buffered(const float* x, float* out, int tiles) {
    column_sums_pipelined<true, true>(x, out, tiles);
}
extern "C" __global__ void read_before_wait_bug(const float* x, float* out, int tiles) {
    column_sums_pipelined<false, true>(x, out, tiles);
}
extern "C" __global__ void no_barrier_after_wait_bug(const float* x, float* out, int tiles) {
    column_sums_pipelined<true, false>(x, out, tiles);
}
// A 16-byte copy from an address that is 4 bytes past a 16-byte boundary.
extern "C" __global__ void misaligned_async_bug(const float* x, float* out) {
    __shared__ __align__(16) float s[4];
    __pipeline_memcpy_async(s, x + 1, 16);
    __pipeline_commit();
    __pipeline_wait_prior(0);
    out[threadIdx.x] = s[threadIdx.x % 4];
}

// y[i] = 2 x[i] four at a time through float4 (n4 = n / 4), x and y read from element offset
// `offset`: a multiple of 4 keeps the float4 accesses 16-byte aligned, any other value is the bug.
extern "C" __global__ void scale_float4(const float* x, float* y, int n4, int offset) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n4) {
        float4 v = reinterpret_cast<const float4*>(x + offset)[i];
        v.x *= 2.0f; v.y *= 2.0f; v.z *= 2.0f; v.w *= 2.0f;
        reinterpret_cast<float4*>(y)[i] = v;
    }
}
// The same for float2 and double2 (n2 = n / 2), read from element offset `offset`.
extern "C" __global__ void scale_float2(const float* x, float* y, int n2, int offset) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n2) {
        float2 v = reinterpret_cast<const float2*>(x + offset)[i];
        reinterpret_cast<float2*>(y)[i] = make_float2(2.0f * v.x, 2.0f * v.y);
    }
}
extern "C" __global__ void scale_double2(const double* x, double* y, int n2, int offset) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n2) {
        double2 v = reinterpret_cast<const double2*>(x)[i];
        reinterpret_cast<double2*>(y + offset)[i] = make_double2(2.0 * v.x, 2.0 * v.y);
    }
}
