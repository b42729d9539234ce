"""Tests of the emulated CUDA device (gpubp.cuda.emulator), with small inline kernels.

Each test checks the emulator against NumPy, or checks that a GPU-side bug
(out-of-bounds access, missing or skipped barrier, wrong argument type) is
reported with the kernel, block, thread and parameter involved.  The kernels
share a few modules so that the file compiles only a handful of times.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from gpubp.cuda.emulator import (EmulatedCompileError, EmulatedDeviceError, EmulatedModule, compiler_available,
                            load_module)
from gpubp.cuda.emulator import _build, _module
from gpubp.testing import assert_close

pytestmark = pytest.mark.skipif(not compiler_available(), reason="the emulator needs a C++ compiler (g++)")

BASICS = r"""
// y = a * x + y over an awkward n: the guard is what keeps the last block in bounds.
extern "C" __global__ void axpy_f32(float* y, const float* __restrict__ x, float a, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = a * x[i] + y[i];
}

// Reverse each block's segment through shared memory: right only if the
// barrier orders every write before every read.
#define BLOCK 64
extern "C" __global__ void reverse_block(float* x) {
    __shared__ float s[BLOCK];
    int t = threadIdx.x, i = blockIdx.x * BLOCK + t;
    s[t] = x[i];
    __syncthreads();  // all of s is written
    x[i] = s[BLOCK - 1 - t];
}
extern "C" __global__ void reverse_block_nobarrier(float* x) {
    __shared__ float s[BLOCK];
    int t = threadIdx.x, i = blockIdx.x * BLOCK + t;
    s[t] = x[i];
    x[i] = s[BLOCK - 1 - t];
}
// out[i] = x[i - 1] within a block (data flows from lower to higher threads).
extern "C" __global__ void shift_nobarrier(const float* x, float* out) {
    __shared__ float s[BLOCK];
    int t = threadIdx.x, i = blockIdx.x * BLOCK + t;
    s[t] = x[i];
    out[i] = t > 0 ? s[t - 1] : 0.0f;
}

// Per-block tree sum: partial[b] = sum of block b's elements.
template <typename T, bool SYNC>
__device__ void tree_sum(const T* x, T* partial, int n) {
    __shared__ T s[BLOCK];
    int t = threadIdx.x, i = blockIdx.x * BLOCK + t;
    s[t] = i < n ? x[i] : T(0);
    if (SYNC) __syncthreads();  // s is filled
    for (int stride = BLOCK / 2; stride > 0; stride /= 2) {
        if (t < stride) s[t] += s[t + stride];
        if (SYNC) __syncthreads();  // this level is summed before the next reads it
    }
    if (t == 0) partial[blockIdx.x] = s[0];
}
extern "C" __global__ void tree_sum_f32(const float* x, float* partial, int n) { tree_sum<float, true>(x, partial, n); }
extern "C" __global__ void tree_sum_f64(const double* x, double* partial, int n) { tree_sum<double, true>(x, partial, n); }
extern "C" __global__ void tree_sum_nobarrier(const float* x, float* partial, int n) { tree_sum<float, false>(x, partial, n); }

// Block 0 writes shared memory, later blocks read it without writing: on a
// GPU they see garbage, here the poison (NaN).
extern "C" __global__ void stale_shared(float* out) {
    __shared__ float s[32];
    if (blockIdx.x == 0) s[threadIdx.x] = 1.0f;
    __syncthreads();
    out[blockIdx.x * 32 + threadIdx.x] = s[threadIdx.x];
}

// C linkage through a block, as kernels/*.cu write it; a template kernel has
// no C name and is skipped.
extern "C" {
__global__ void block_form_double(float* x, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] *= 2.0f;
}
}
template <typename T>
__global__ void templated_kernel(T* x) { x[0] = T(1); }

// Every built-in index variable of every thread, 12 ints per thread.
extern "C" __global__ void indices(int* out) {
    int tx = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    int bx = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    int* o = out + 12 * (bx * blockDim.x * blockDim.y * blockDim.z + tx);
    o[0] = threadIdx.x; o[1] = threadIdx.y; o[2] = threadIdx.z;
    o[3] = blockIdx.x;  o[4] = blockIdx.y;  o[5] = blockIdx.z;
    o[6] = blockDim.x;  o[7] = blockDim.y;  o[8] = blockDim.z;
    o[9] = gridDim.x;   o[10] = gridDim.y;  o[11] = gridDim.z;
}

// Templates, __launch_bounds__ in both places, a multi-line parameter list, math.
template <typename T>
__device__ __forceinline__ T sigmoid(T z) { return T(1) / (T(1) + exp(-z)); }
template <typename T>
__device__ void sigmoid_prime(const T* __restrict__ z, T* __restrict__ out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) { T s = sigmoid(z[i]); out[i] = s * (T(1) - s); }
}
extern "C" __global__ void __launch_bounds__(128) sigmoid_prime_f32(const float* __restrict__ z,
                                                                    float* __restrict__ out,
                                                                    int n) { sigmoid_prime<float>(z, out, n); }
extern "C" __launch_bounds__(128, 2) __global__ void sigmoid_prime_f64(
    const double* __restrict__ z,
    double* __restrict__ out,
    int n) {
    sigmoid_prime<double>(z, out, n);
}

// A full 1024-thread block (16 x 8 x 8) summing through shared memory.
extern "C" __global__ void block_sum_1024(const float* x, float* out) {
    __shared__ float s[1024];
    int t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    s[t] = x[blockIdx.x * 1024 + t];
    __syncthreads();  // s is filled
    for (int stride = 512; stride > 0; stride >>= 1) {
        if (t < stride) s[t] += s[t + stride];
        __syncthreads();  // this level is summed
    }
    if (t == 0) out[blockIdx.x] = s[0];
}

// The order the blocks ran in: each block's place in it, by its linear index (thread 0 counts it in).
extern "C" __global__ void block_arrival(int* place, int* count) {
    if (threadIdx.x == 0) {
        const int linear = (blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
        place[linear] = atomicAdd(count, 1);
    }
}

// atomicAdd from every thread of every block.
extern "C" __global__ void atomic_sums(const float* x, float* total, int* positives, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        atomicAdd(total, x[i]);
        if (x[i] > 0.0f) atomicAdd(positives, 1);
    }
}

// Reads src after writing dst: 4 * src when dst and src are the same array
// (as on a GPU), 3 * src when they are distinct.
extern "C" __global__ void write_then_read(float* dst, const float* src, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) { dst[i] = 2.0f * src[i]; dst[i] += src[i]; }
}

// Bugs, one per kernel.
extern "C" __global__ void read_one_past(const float* x, float* y, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = x[i + 1];  // off by one: thread n-1 reads x[n]
}
extern "C" __global__ void write_one_past(float* y, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i <= n) y[i] = 1.0f;  // <= : thread n writes y[n]
}
extern "C" __global__ void write_before(float* y, int offset) {
    if (blockIdx.x == 0 && threadIdx.x == 5) y[-offset] = 1.0f;
}
extern "C" __global__ void write_const(const float* x) { ((float*)x)[threadIdx.x] = 0.0f; }
extern "C" __global__ void deref(const float* x, float* y) { y[threadIdx.x] = x[threadIdx.x]; }
extern "C" __global__ void divide(const int* x, int* y, int d) { y[threadIdx.x] = x[threadIdx.x] / d; }
extern "C" __global__ void checked(const float* x) { assert(x[threadIdx.x] >= 0.0f); }
extern "C" __global__ void early_return(float* x, int n) {
    __shared__ float s[32];
    int t = threadIdx.x, i = blockIdx.x * 32 + t;
    if (i >= n) return;  // the bug: these threads skip the barrier below
    s[t] = x[i];
    __syncthreads();
    x[i] = s[31 - t];
}
__device__ float recurse(int depth) {
    volatile float pad[64];  // 256 bytes a level: deep recursion overflows the 64 KiB fiber stack
    pad[0] = float(depth);
    return depth <= 0 ? pad[0] : recurse(depth - 1) + pad[0];
}
extern "C" __global__ void deep(float* out, int depth) { out[threadIdx.x] = recurse(depth); }
extern "C" __global__ void divergent_barrier(float* x) {
    if (threadIdx.x < 16) {
        __syncthreads();
    } else {
        __syncthreads();
    }
    x[threadIdx.x] = 1.0f;
}
"""

MATMUL = r"""
// C = A @ B, A: M x K, B: K x N, one TILE x TILE block of C per block.
extern "C" __global__ void matmul_f32(const float* A, const float* B, float* C, int M, int N, int K) {
    __shared__ float As[TILE][TILE + 1];
    __shared__ float Bs[TILE][TILE + 1];
    int row = blockIdx.y * TILE + threadIdx.y, col = blockIdx.x * TILE + threadIdx.x;
    float acc = 0.0f;
    for (int k0 = 0; k0 < K; k0 += TILE) {
        int ka = k0 + threadIdx.x, kb = k0 + threadIdx.y;
        As[threadIdx.y][threadIdx.x] = (row < M && ka < K) ? A[row * K + ka] : 0.0f;
        Bs[threadIdx.y][threadIdx.x] = (kb < K && col < N) ? B[kb * N + col] : 0.0f;
        __syncthreads();  // the tiles are loaded
        for (int k = 0; k < TILE; ++k) acc += As[threadIdx.y][k] * Bs[k][threadIdx.x];
        __syncthreads();  // the tiles are used up before the next load
    }
    if (row < M && col < N) C[row * N + col] = acc * SCALE;
}
"""


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory):
    """A cache directory of this test module's own, so the disk-cache test starts clean."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GPUBP_CACHE_DIR", str(tmp_path_factory.mktemp("gpubp-cache")))
        yield


@pytest.fixture(scope="module")
def basics():
    return EmulatedModule(code=BASICS, name="basics")


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def ceil_div(a, b):
    return (a + b - 1) // b


# ---------------------------------------------------------------- values
def test_elementwise_with_guard_over_awkward_size(basics, rng):
    n = 1000  # not a multiple of the block: the last block has idle threads
    x = rng.standard_normal(n).astype(np.float32)
    y = rng.standard_normal(n).astype(np.float32)
    expected = np.float32(2.5) * x + y
    basics.get_function("axpy_f32")(ceil_div(n, 128), 128, (y, x, np.float32(2.5), np.int32(n)))
    np.testing.assert_array_equal(y, expected)


def test_barrier_orders_shared_memory_and_its_absence_is_visible(basics, rng):
    x = rng.standard_normal(4 * 64).astype(np.float32)
    expected = x.reshape(4, 64)[:, ::-1].ravel()
    y = x.copy()
    basics.get_function("reverse_block")(4, 64, (y,))
    np.testing.assert_array_equal(y, expected)
    # Without the barrier a thread reads slots that later threads have not
    # written yet: poison (NaN) instead of data.
    z = x.copy()
    basics.get_function("reverse_block_nobarrier")(4, 64, (z,))
    assert np.isnan(z).any() and not np.array_equal(z, expected)
    # Data flowing to *higher* threads is caught too: odd blocks run their threads in reverse.
    out = np.zeros_like(x)
    basics.get_function("shift_nobarrier")(4, 64, (x, out))
    rows, shifted = out.reshape(4, 64), np.concatenate([np.zeros((4, 1)), x.reshape(4, 64)[:, :-1]], axis=1)
    np.testing.assert_array_equal(rows[0], shifted[0])  # forward order happens to work...
    assert np.isnan(rows[1]).any()  # ...reverse order does not


def test_tree_reduction_f32_f64_and_without_barriers(basics, rng):
    n = 1000
    for dtype, kernel in ((np.float32, "tree_sum_f32"), (np.float64, "tree_sum_f64")):
        x = rng.standard_normal(n).astype(dtype)
        partial = np.zeros(ceil_div(n, 64), dtype)
        basics.get_function(kernel)(len(partial), 64, (x, partial, np.int32(n)))
        expected = np.add.reduceat(x.astype(np.float64), np.arange(0, n, 64))
        assert_close(partial, expected, dtype, what=kernel)
    x = rng.standard_normal(n).astype(np.float32)
    partial = np.zeros(ceil_div(n, 64), np.float32)
    basics.get_function("tree_sum_nobarrier")(len(partial), 64, (x, partial, np.int32(n)))
    assert not np.allclose(partial, np.add.reduceat(x, np.arange(0, n, 64)), equal_nan=False)


def test_shared_memory_is_per_block(basics):
    out = np.zeros(3 * 32, np.float32)
    basics.get_function("stale_shared")(3, 32, (out,))
    np.testing.assert_array_equal(out[:32], 1.0)
    assert np.isnan(out[32:]).all(), "later blocks must not see block 0's shared memory"


@pytest.mark.parametrize("grid, block", [((3, 2, 2), (4, 3, 2)), ((5, 3), (7, 2)), (4, (2, 1, 3))])
def test_2d_and_3d_indices(basics, grid, block):
    g = tuple(grid) + (1,) * (3 - len(grid)) if isinstance(grid, tuple) else (grid, 1, 1)
    b = tuple(block) + (1,) * (3 - len(block)) if isinstance(block, tuple) else (block, 1, 1)
    out = np.full((g[2], g[1], g[0], b[2], b[1], b[0], 12), -1, np.int32)
    basics.get_function("indices")(grid, block, (out,))
    bz, by, bx, tz, ty, tx = np.meshgrid(*(np.arange(d) for d in (g[2], g[1], g[0], b[2], b[1], b[0])), indexing="ij")
    expected = [tx, ty, tz, bx, by, bz] + [np.full_like(tx, d) for d in b + g]
    np.testing.assert_array_equal(out, np.stack(expected, axis=-1))


def test_templates_launch_bounds_and_both_precisions(basics, rng):
    n = 333
    for dtype, name in ((np.float32, "sigmoid_prime_f32"), (np.float64, "sigmoid_prime_f64")):
        k = basics.get_function(name)
        assert k.param_names == ("z", "out", "n")
        assert k.param_types == (f"const {'float' if dtype == np.float32 else 'double'}*",) * 1 + k.param_types[1:]
        z = rng.standard_normal(n).astype(dtype)
        out = np.zeros(n, dtype)
        k(ceil_div(n, 128), 128, (z, out, np.int32(n)))
        s = 1 / (1 + np.exp(-z.astype(np.float64)))
        assert_close(out, s * (1 - s), dtype, what=name)


def test_full_1024_thread_blocks_from_several_python_threads(basics, rng):
    x = rng.integers(-8, 8, 3 * 1024).astype(np.float32)  # small integers: every order sums exactly
    expected = x.reshape(3, 1024).sum(axis=1)
    errors = []

    def worker():
        try:
            for _ in range(3):
                out = np.zeros(3, np.float32)
                basics.get_function("block_sum_1024")(3, (16, 8, 8), (x, out))
                np.testing.assert_array_equal(out, expected)
                with pytest.raises(EmulatedDeviceError, match="stack overflow"):
                    basics.get_function("deep")(1, 4, (np.zeros(4, np.float32), np.int32(100_000)))
        except BaseException as e:  # noqa: BLE001  (re-raised in the main thread below)
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    out = np.zeros(4, np.float32)
    basics.get_function("deep")(1, 4, (out, np.int32(10)))  # a shallow recursion is fine
    np.testing.assert_array_equal(out, 55.0)


def test_kernels_in_an_extern_c_block_are_found_and_templates_skipped(basics):
    assert "block_form_double" in basics.kernel_names and "templated_kernel" not in basics.kernel_names
    x = np.arange(5, dtype=np.float32)
    basics.get_function("block_form_double")(1, 32, (x, np.int32(5)))
    np.testing.assert_array_equal(x, 2 * np.arange(5))


def test_atomic_add_over_many_blocks(basics, rng):
    n = 5000
    x = rng.standard_normal(n).astype(np.float32)
    total, positives = np.zeros(1, np.float32), np.zeros(1, np.int32)
    basics.get_function("atomic_sums")(ceil_div(n, 256), 256, (x, total, positives, np.int32(n)))
    assert positives[0] == (x > 0).sum()
    np.testing.assert_allclose(total[0], x.astype(np.float64).sum(), atol=1e-3)


def _arrival(basics, grid):
    n = int(np.prod(grid))
    place, count = np.full(n, -1, np.int32), np.zeros(1, np.int32)
    basics.get_function("block_arrival")(grid, 32, (place, count))
    assert count[0] == n and sorted(place) == list(range(n))          # every block ran, once
    return place


def test_blocks_run_in_index_order_or_as_block_order_says(basics, monkeypatch):
    """GPUBP_EMULATOR_BLOCK_ORDER: index order (x fastest) by default, backwards, or a seeded permutation,
    the same for the same seed; a GPU promises none of them, so a result must come out alike under each."""
    grid = (5, 3, 2)
    monkeypatch.delenv("GPUBP_EMULATOR_BLOCK_ORDER", raising=False)
    assert list(_arrival(basics, grid)) == list(range(30))
    monkeypatch.setenv("GPUBP_EMULATOR_BLOCK_ORDER", "reverse")
    assert list(_arrival(basics, grid)) == list(range(29, -1, -1))
    orders = {}
    for seed in (1, 2, 12345678901234567890 % 10**19):
        monkeypatch.setenv("GPUBP_EMULATOR_BLOCK_ORDER", f"shuffle:{seed}")
        orders[seed] = list(_arrival(basics, grid))
        assert orders[seed] == list(_arrival(basics, grid))            # a seed is one order
        assert orders[seed] not in (list(range(30)), list(range(29, -1, -1)))
    assert len({tuple(o) for o in orders.values()}) == 3
    monkeypatch.setenv("GPUBP_EMULATOR_BLOCK_ORDER", "shuffle:3")
    assert list(_arrival(basics, 1)) == [0] and sorted(_arrival(basics, (7, 1, 1))) == list(range(7))
    for bad in ("random", "shuffle", "shuffle:-1", "shuffle:x"):
        monkeypatch.setenv("GPUBP_EMULATOR_BLOCK_ORDER", bad)
        with pytest.raises(ValueError, match=rf"GPUBP_EMULATOR_BLOCK_ORDER='{bad}': the emulated device runs a "
                                             r"grid's blocks in 'index' order \(the default\), 'reverse', or "
                                             r"'shuffle:SEED'"):
            _arrival(basics, grid)


def test_same_array_twice_is_aliased_like_on_a_gpu(basics, rng):
    n = 100
    x = rng.standard_normal(n).astype(np.float32)
    dst = np.zeros_like(x)
    basics.get_function("write_then_read")(1, 128, (dst, x, np.int32(n)))
    np.testing.assert_allclose(dst, 3 * x, rtol=1e-6)
    y = x.copy()
    basics.get_function("write_then_read")(1, 128, (y, y, np.int32(n)))
    np.testing.assert_allclose(y, 4 * x, rtol=1e-6)
    with pytest.raises(ValueError, match="partially overlapping"):
        basics.get_function("write_then_read")(1, 128, (y[1:], y[:-1], np.int32(n - 1)))


def test_tiled_matmul_with_options_is_right_and_fast(rng):
    mod = EmulatedModule(code=MATMUL, options=("-DTILE=16", "-DSCALE=2.0f", "--use_fast_math", "-std=c++17"),
                         name="matmul")
    M = N = K = 257
    A = rng.standard_normal((M, K)).astype(np.float32)
    B = rng.standard_normal((K, N)).astype(np.float32)
    C = np.zeros((M, N), np.float32)
    k = mod.get_function("matmul_f32")
    args = (A, B, C, np.int32(M), np.int32(N), np.int32(K))
    t0 = time.perf_counter()
    k((ceil_div(N, 16), ceil_div(M, 16)), (16, 16), args)  # 289 blocks x 256 threads x 34 barriers
    elapsed = time.perf_counter() - t0
    np.testing.assert_allclose(C, 2.0 * (A.astype(np.float64) @ B), rtol=1e-4, atol=1e-3)
    assert elapsed < 2.0, f"tiled 257x257 matmul took {elapsed:.2f} s"
    # -D values reach the source: another scale is another module.
    mod3 = EmulatedModule(code=MATMUL, options=("-DTILE=8", "-DSCALE=3.0f"), name="matmul")
    C3 = np.zeros_like(C)
    mod3.get_function("matmul_f32")((ceil_div(N, 8), ceil_div(M, 8)), (8, 8), (A, B, C3) + args[3:])
    np.testing.assert_allclose(C3, 1.5 * C, rtol=1e-5, atol=1e-4)


def test_options_are_validated():
    with pytest.raises(ValueError, match="not supported"):
        EmulatedModule(code=MATMUL, options=("-I/usr/include",), name="matmul")
    with pytest.raises(TypeError, match="tuple of strings"):
        EmulatedModule(code=MATMUL, options="-DTILE=16", name="matmul")


# ---------------------------------------------------------------- memory errors
def test_read_one_past_the_end(basics):
    n = 100
    x, y = np.ones(n, np.float32), np.zeros(n, np.float32)
    with pytest.raises(EmulatedDeviceError) as info:
        basics.get_function("read_one_past")(ceil_div(n, 32), 32, (x, y, np.int32(n)))
    e = info.value
    msg = str(e)
    for part in ("read_one_past", "'x'", "element index 100", "past the end", "read", "block (3, 0, 0)",
                 "thread (3, 0, 0)"):
        assert part in msg, (part, msg)
    assert (e.kernel, e.param, e.index, e.access, e.block, e.thread) == \
        ("read_one_past", "x", 100, "read", (3, 0, 0), (3, 0, 0))
    np.testing.assert_array_equal(y, 0.0)  # a failed launch leaves the arrays alone


def test_write_one_past_the_end_then_module_still_works(basics):
    n = 64
    y = np.zeros(n, np.float32)
    with pytest.raises(EmulatedDeviceError) as info:
        basics.get_function("write_one_past")(2, 64, (y, np.int32(n)))
    e = info.value
    assert (e.param, e.index, e.access, e.block, e.thread) == ("y", 64, "write", (1, 0, 0), (0, 0, 0))
    assert "write_one_past" in str(e) and "past the end" in str(e)
    # The same module, and the same kernel with a correct size, still work.
    basics.get_function("write_one_past")(1, 64, (y, np.int32(n - 1)))
    np.testing.assert_array_equal(y, 1.0)
    test_elementwise_with_guard_over_awkward_size(basics, np.random.default_rng(1))


def test_write_before_the_start(basics):
    y = np.zeros(100, np.float32)
    with pytest.raises(EmulatedDeviceError, match=r"write before the start of parameter 'y'.*element index -1\b") \
            as info:
        basics.get_function("write_before")(1, 32, (y, np.int32(1)))  # lands in the canary
    assert info.value.index == -1
    with pytest.raises(EmulatedDeviceError, match=r"'y'.*element index -5000 \(before the start\).*thread \(5, 0, 0\)"):
        basics.get_function("write_before")(1, 32, (y, np.int32(5000)))  # lands in the leading guard


def test_write_to_const_null_pointer_division_and_assert(basics):
    x = np.arange(8, dtype=np.float32)
    with pytest.raises(EmulatedDeviceError, match=r"write to parameter 'x'.*const"):
        basics.get_function("write_const")(1, 8, (x,))
    with pytest.raises(EmulatedDeviceError, match=r"NULL pointer.*passed None: x"):
        basics.get_function("deref")(1, 8, (None, x))
    with pytest.raises(EmulatedDeviceError, match="division by zero"):
        basics.get_function("divide")(1, 8, (np.ones(8, np.int32), np.ones(8, np.int32), np.int32(0)))
    x[3] = -1
    with pytest.raises(EmulatedDeviceError, match=r"assert.*thread \(3, 0, 0\).*x\[threadIdx.x\] >= 0.0f"):
        basics.get_function("checked")(1, 8, (x,))


# ---------------------------------------------------------------- barrier errors
def test_thread_returning_before_a_barrier_is_named(basics):
    x = np.ones(40, np.float32)  # block 1 has 8 live threads; threads 8..31 return early
    with pytest.raises(EmulatedDeviceError) as info:
        basics.get_function("early_return")(2, 32, (x, np.int32(40)))
    msg = str(info.value)
    assert "early_return" in msg and "block (1, 0, 0)" in msg and "__syncthreads()" in msg
    assert "24 thread(s) returned" in msg and "(8, 0, 0)" in msg
    assert info.value.thread == (8, 0, 0)


def test_divergent_barriers_are_reported_with_their_lines(basics):
    with pytest.raises(EmulatedDeviceError, match="different __syncthreads") as info:
        basics.get_function("divergent_barrier")(1, 32, (np.zeros(32, np.float32),))
    line = next(i for i, text in enumerate(BASICS.splitlines(), 1) if "threadIdx.x < 16" in text)
    assert f"line {line + 1} (thread (0, 0, 0) and 15 more)" in str(info.value)
    assert f"line {line + 3} (thread (16, 0, 0) and 15 more)" in str(info.value)


# ---------------------------------------------------------------- launch checks
def test_arguments_are_checked_strictly(basics):
    k = basics.get_function("axpy_f32")
    y, x = np.zeros(10, np.float32), np.ones(10, np.float32)
    with pytest.raises(TypeError, match=r"axpy_f32.*'n' \(int\).*Python int.*np.int32\(10\)"):
        k(1, 32, (y, x, np.float32(1), 10))
    with pytest.raises(TypeError, match=r"'a' \(float\).*Python float.*np.float32"):
        k(1, 32, (y, x, 1.0, np.int32(10)))
    with pytest.raises(TypeError, match=r"'n' \(int\).*int32 scalar, got int64"):
        k(1, 32, (y, x, np.float32(1), np.int64(10)))
    with pytest.raises(TypeError, match=r"'x' \(const float\*\).*float32 array, got float64.*astype"):
        k(1, 32, (y, x.astype(np.float64), np.float32(1), np.int32(10)))
    with pytest.raises(TypeError, match=r"takes 4 arguments.*got 3"):
        k(1, 32, (y, x, np.float32(1)))
    with pytest.raises(ValueError, match=r"'y'.*non-C-contiguous.*ascontiguousarray"):
        k(1, 32, (np.zeros(20, np.float32)[::2], x, np.float32(1), np.int32(10)))
    ro = np.zeros(10, np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match=r"'y'.*read-only array"):
        k(1, 32, (ro, x, np.float32(1), np.int32(10)))
    k(1, 32, (y, ro, np.float32(1), np.int32(10)))  # a read-only array is fine for a const parameter


def test_launch_configuration_is_checked(basics):
    k = basics.get_function("axpy_f32")
    args = (np.zeros(10, np.float32), np.ones(10, np.float32), np.float32(1), np.int32(10))
    with pytest.raises(ValueError, match="dynamic shared memory"):
        k(1, 32, args, shared_mem=1024)
    with pytest.raises(ValueError, match="invalid configuration.*1024"):
        k(1, (32, 33), args)
    with pytest.raises(ValueError, match="invalid configuration.*<= 0"):
        k((1, 0), 32, args)
    with pytest.raises(TypeError, match="grid must be"):
        k(1.0, 32, args)
    with pytest.raises(KeyError, match="no extern.*'axpy'.*available: axpy_f32, reverse_block"):
        basics.get_function("axpy")


# ---------------------------------------------------------------- compilation
def test_compile_error_shows_compiler_output():
    src = "extern \"C\" __global__ void broken(float* x) {\n    x[0] = undeclared_name;\n}\n"
    with pytest.raises(EmulatedCompileError, match=r"broken\.cu:2:\d+: error: .undeclared_name"):
        EmulatedModule(code=src, name="broken")


def test_legacy_warp_shuffles_are_a_compile_error():
    """The _sync primitives are emulated (tests/test_emulator_warp.py); the maskless ones were removed for sm_70+."""
    src = "extern \"C\" __global__ void warp(float* x) { x[0] = __shfl_down(x[0], 1); }\n"
    with pytest.raises(EmulatedCompileError, match="__shfl_down has no mask and was removed for sm_70"):
        EmulatedModule(code=src, name="warp")


def test_missing_compiler_is_explained(monkeypatch):
    monkeypatch.setenv("CXX", "/nonexistent/g++")
    with pytest.raises(EmulatedCompileError, match=r"apt-get install g\+\+.*NumPy backend needs no compiler"):
        EmulatedModule(code=MATMUL, options=("-DTILE=16", "-DSCALE=1"), name="matmul")


def test_disk_cache_is_reused_in_process_and_across_processes(tmp_path):
    path = tmp_path / "scale.cu"
    path.write_text("extern \"C\" __global__ void scale(float* x, int n) {\n"
                    "    int i = blockIdx.x * blockDim.x + threadIdx.x;\n    if (i < n) x[i] *= FACTOR;\n}\n")
    before = _build.compile_count()
    mod = load_module(path, options=("-DFACTOR=3",))
    assert _build.compile_count() == before + 1
    assert load_module(path, options=("-DFACTOR=3",)) is mod  # in-process cache
    _module._loaded.clear()
    mod2 = load_module(path, options=("-DFACTOR=3",))  # a new module object, from the disk cache
    assert mod2 is not mod and _build.compile_count() == before + 1
    x = np.ones(5, np.float32)
    mod2.get_function("scale")(1, 8, (x, np.int32(5)))
    np.testing.assert_array_equal(x, 3.0)
    script = textwrap.dedent(f"""
        import numpy as np
        from gpubp.cuda.emulator import load_module, _build
        x = np.ones(5, np.float32)
        load_module({str(path)!r}, options=("-DFACTOR=3",)).get_function("scale")(1, 8, (x, np.int32(5)))
        assert (x == 3).all(), x
        print(_build.compile_count())
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=dict(os.environ),
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0", "a new process recompiled instead of using the disk cache"
