// Warp-synchronous test kernels for tests/test_emulator_warp.py: the same file is
// run on the emulated device and compiled with NVRTC for sm_75 ... sm_120.
// One thread per element; lane = threadIdx.x % 32, warp w = threadIdx.x / 32 of a
// 1-D block.  Kernels named *_bug carry one bug each, the rule the test expects
// the emulator to name.
#define FULL 0xffffffffu

// out[w] = sum of the 32 x of warp w (n a multiple of 32): a shuffle-down tree.
extern "C" __global__ void warp_sum_down(const float* x, float* out) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    float v = x[i];
    for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(FULL, v, offset);
    if (threadIdx.x % 32 == 0) out[i / 32] = v;  // lane 0 holds the warp's sum
}

// out[i] = x[0] + ... + x[i] within each warp: an inclusive Hillis-Steele scan with __shfl_up_sync.
extern "C" __global__ void warp_scan_up(const int* x, int* out) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x, lane = threadIdx.x % 32;
    int v = x[i];
    for (int d = 1; d < 32; d *= 2) {
        const int up = __shfl_up_sync(FULL, v, d);
        if (lane >= d) v += up;  // lanes below d got their own value back
    }
    out[i] = v;
}

// out[i] = sum over i's segment of `width` lanes, in every lane: a butterfly with __shfl_xor_sync,
// then out2[i] = the segment's first value, broadcast with __shfl_sync(.., 0, width).
extern "C" __global__ void segment_allreduce(const double* x, double* out, double* out2, int width) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    double v = x[i];
    for (int m = width / 2; m > 0; m /= 2) v += __shfl_xor_sync(FULL, v, m, width);
    out[i] = v;
    out2[i] = __shfl_sync(FULL, x[i], 0, width);
}

// __shfl_down_sync with a width: out[i] = x[i + d] within i's segment of `width`, else x[i].
extern "C" __global__ void shfl_down_width(const int* x, int* out, int d, int width) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    out[i] = __shfl_down_sync(FULL, x[i], d, width);
}

// Votes: per warp w, ballot[w] = bits of lanes with x > 0, any[w], all[w].
extern "C" __global__ void votes(const float* x, unsigned* ballot, int* any, int* all) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    const int p = x[i] > 0.0f;
    const unsigned b = __ballot_sync(FULL, p);
    const int a = __any_sync(FULL, p), e = __all_sync(FULL, p);
    if (threadIdx.x % 32 == 0) {
        ballot[i / 32] = b;
        any[i / 32] = a;
        all[i / 32] = e;
    }
}

// Per warp: sum, min and max of int x. __reduce_*_sync on sm_80 and newer, a __shfl_xor_sync
// butterfly on older architectures (where __reduce_*_sync do not exist).
__device__ void warp_int_stats(int v, int* sum, int* lo, int* hi) {
#if __CUDA_ARCH__ >= 800
    *sum = __reduce_add_sync(FULL, v);
    *lo = __reduce_min_sync(FULL, v);
    *hi = __reduce_max_sync(FULL, v);
#else
    int s = v, l = v, h = v;
    for (int m = 16; m > 0; m /= 2) {
        s += __shfl_xor_sync(FULL, s, m);
        l = min(l, __shfl_xor_sync(FULL, l, m));
        h = max(h, __shfl_xor_sync(FULL, h, m));
    }
    *sum = s;
    *lo = l;
    *hi = h;
#endif
}
extern "C" __global__ void warp_reduce_int(const int* x, int* sum, int* lo, int* hi, unsigned* usum) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    int s, l, h;
    warp_int_stats(x[i], &s, &l, &h);
#if __CUDA_ARCH__ >= 800
    const unsigned u = __reduce_add_sync(FULL, static_cast<unsigned>(x[i]));  // the unsigned overload
#else
    const unsigned u = static_cast<unsigned>(s);
#endif
    if (threadIdx.x % 32 == 0) {
        sum[i / 32] = s;
        lo[i / 32] = l;
        hi[i / 32] = h;
        usum[i / 32] = u;
    }
}

// Block sum: each warp reduces through shared memory, __syncwarp() between the steps
// (SYNC), or relying on implicit lockstep (the bug: no __syncwarp), then thread 0 adds
// the warps' sums.  blockDim.x = 32 * WARPS.
#define WARPS 4
template <bool SYNC>
__device__ void block_sum_shared(const float* x, float* out) {
    __shared__ float s[32 * WARPS];
    const int t = threadIdx.x, lane = t % 32, base = t - lane;
    s[t] = x[blockIdx.x * blockDim.x + t];
    if (SYNC) __syncwarp();  // s of this warp is written
    for (int offset = 16; offset > 0; offset /= 2) {
        float other = 0.0f;
        if (lane < offset) other = s[base + lane + offset];
        if (SYNC) __syncwarp();  // every lane has read before any writes
        if (lane < offset) s[base + lane] += other;
        if (SYNC) __syncwarp();  // this level is summed before the next reads it
    }
    __syncthreads();  // every warp's sum is in s[32 w]
    if (t == 0) {
        float total = 0.0f;
        for (int w = 0; w < WARPS; ++w) total += s[32 * w];
        out[blockIdx.x] = total;
    }
}
extern "C" __global__ void block_sum_syncwarp(const float* x, float* out) { block_sum_shared<true>(x, out); }
extern "C" __global__ void block_sum_nosyncwarp_bug(const float* x, float* out) { block_sum_shared<false>(x, out); }

// Inside the guard i < n, __activemask() names the lanes that took it: per warp, masks[w] = that
// mask, ballot[w] = which of them have x > 0, first[i] = x of the warp's lane 0 (broadcast).
extern "C" __global__ void active_votes(const float* x, unsigned* masks, unsigned* ballot, float* first, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        const unsigned mask = __activemask();
        const unsigned b = __ballot_sync(mask, x[i] > 0.0f);
        first[i] = __shfl_sync(mask, x[i], 0);
        if (threadIdx.x % 32 == 0) {
            masks[i / 32] = mask;
            ballot[i / 32] = b;
        }
    }
}

// Bugs, one per kernel.
// Threads past n return, then the rest shuffle with the full mask: it names exited lanes.
extern "C" __global__ void exited_lane_bug(const float* x, float* out, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float v = x[i];
    v += __shfl_down_sync(FULL, v, 1);
    out[i] = v;
}
// Every lane votes, but the mask leaves out lanes 16..31.
extern "C" __global__ void mask_leaves_out_lane_bug(const float* x, unsigned* out) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    out[i] = __ballot_sync(0x0000ffffu, x[i] > 0.0f);
}
// Lanes 0..15 shuffle among themselves, but lanes 8..15 read lanes 16..23, outside the mask.
extern "C" __global__ void read_outside_mask_bug(const float* x, float* out) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (threadIdx.x % 32 < 16) out[i] = __shfl_down_sync(0x0000ffffu, x[i], 8);
}
// Half the warp shuffles on one line, half on another: neither call completes.
extern "C" __global__ void split_call_sites_bug(const float* x, float* out) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (threadIdx.x % 32 < 16) {
        out[i] = __shfl_xor_sync(FULL, x[i], 1);
    } else {
        out[i] = __shfl_xor_sync(FULL, x[i], 1);
    }
}
// A warp primitive waits for lanes that wait at __syncthreads().
extern "C" __global__ void warp_vs_barrier_bug(const float* x, float* out) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    float v = x[i];
    if (threadIdx.x % 32 < 4) v = __shfl_sync(FULL, v, 0);
    __syncthreads();
    out[i] = v;
}
// A width that is not a power of 2.
extern "C" __global__ void bad_width_bug(const float* x, float* out) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    out[i] = __shfl_sync(FULL, x[i], 0, 12);
}
