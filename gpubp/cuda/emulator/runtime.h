// runtime.h: what the CUDA shim (kernel side) and runtime.cpp (scheduler side)
// of the gpubp emulator share.  Internal: kernels never include it directly.
//
// The built-in index variables are plain globals that the scheduler rewrites
// before it switches to a fiber.  They are hidden (one copy per emulated
// module) and only ever change inside an opaque call into runtime.cpp, so
// compiled kernel code re-reads them after every __syncthreads().
#pragma once

#define GPUBP_HIDDEN __attribute__((visibility("hidden")))
#define GPUBP_EXPORT __attribute__((visibility("default")))

struct uint3 {
    unsigned int x, y, z;
};

struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1) : x(vx), y(vy), z(vz) {}
    constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
    constexpr operator uint3() const { return uint3{x, y, z}; }
};

namespace gpubp {
extern uint3 thread_idx GPUBP_HIDDEN;
extern uint3 block_idx GPUBP_HIDDEN;
extern dim3 block_dim GPUBP_HIDDEN;
extern dim3 grid_dim GPUBP_HIDDEN;

// __syncthreads() at source line `line`; the _count form also returns how
// many threads of the block passed a non-zero predicate.
void syncthreads(int line) GPUBP_HIDDEN;
int syncthreads_count(int line, int predicate) GPUBP_HIDDEN;
// Device-side assert / __trap(): ends the launch with an error.
[[noreturn]] void device_abort(const char* what, const char* file, int line) GPUBP_HIDDEN;

// Warp-synchronous primitives: a rendezvous of the lanes `mask` names, at
// source line `line`.  `value` is this lane's operand (its bits), `arg` the
// source lane / delta / lane mask of a shuffle, `width` a shuffle's segment.
enum WarpKind {
    W_SHFL_IDX, W_SHFL_UP, W_SHFL_DOWN, W_SHFL_XOR, W_BALLOT, W_ANY, W_ALL, W_SYNCWARP,
    W_REDUCE_ADD, W_REDUCE_MIN_U, W_REDUCE_MAX_U, W_REDUCE_MIN_I, W_REDUCE_MAX_I, W_ACTIVEMASK,
};
unsigned long long warp_op(int kind, int line, unsigned mask, unsigned long long value, int arg,
                           int width) GPUBP_HIDDEN;

// A vector access (float2/float4/double2...) at an address not aligned to its size.
[[noreturn]] void misaligned(const void* p, int size, int write, const char* type) GPUBP_HIDDEN;

// Asynchronous global -> shared copies (cuda_pipeline.h): issued, committed in
// groups, and landed at the wait, never before.
void pipeline_memcpy_async(void* dst, const void* src, unsigned long size, unsigned long zfill,
                           int line) GPUBP_HIDDEN;
void pipeline_commit() GPUBP_HIDDEN;
void pipeline_wait_prior(unsigned long prior) GPUBP_HIDDEN;
}  // namespace gpubp
