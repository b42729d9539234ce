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
}  // namespace gpubp
