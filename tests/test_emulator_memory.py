"""The emulated device's dynamic shared memory, asynchronous copies and vector alignment
(tests/emulator_kernels/shared_memory.cu), and the per-architecture table they share with NVRTC.

Values against NumPy: a reversal through ``extern __shared__`` memory sized by ``shared_mem``,
two extern names aliasing one region, static beside dynamic, a double-buffered
``__pipeline_memcpy_async`` column sum, float2/float4/double2 copies.  Rules, each caught with
a message that names it: 64 KiB of dynamic shared memory without raising
``max_dynamic_shared_size_bytes``, the attribute above the architecture's ceiling, static +
dynamic over 48 KiB, a write past the dynamic size, a read before the pipeline wait (poison),
no barrier after the wait, a misaligned cp.async, misaligned float4/float2/double2 accesses.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gpubp.cuda import archs, nvrtc
from gpubp.cuda.emulator import EmulatedDeviceError, EmulatedModule, compiler_available, load_module
from gpubp.testing import assert_close

pytestmark = pytest.mark.skipif(not compiler_available(), reason="the emulator needs a C++ compiler (g++)")

SOURCE = Path(__file__).resolve().parent / "emulator_kernels" / "shared_memory.cu"
KiB = 1024


@pytest.fixture(scope="module")
def smem():
    return load_module(SOURCE)  # sm_90


@pytest.fixture
def rng():
    return np.random.default_rng(21)


def fresh(arch="sm_90"):
    """A module of its own, so that attributes set by one test do not leak into another."""
    return EmulatedModule(SOURCE.read_text(), name="shared_memory", arch=arch)


# ---------------------------------------------------------------- the table
def test_arch_table_is_the_programming_guides():
    per_block = {a: archs.get(a).smem_per_block_optin // KiB for a in archs.ARCHS}
    assert per_block == {"sm_75": 64, "sm_80": 163, "sm_86": 99, "sm_89": 99, "sm_90": 227, "sm_100": 227,
                         "sm_120": 99}
    for a in archs.ARCHS:  # the per-block ceiling is the SM's less what the runtime reserves
        arch = archs.get(a)
        assert arch.smem_per_block_optin == arch.smem - arch.reserved_smem_per_block
    assert nvrtc.ARCHS == tuple(archs.ARCHS) and nvrtc.SMS is archs.ARCHS  # NVRTC reads the same table
    assert archs.get("sm_86").compute_capability == 860
    with pytest.raises(ValueError, match="unknown GPU architecture 'sm_70'.*sm_75"):
        archs.get("sm_70")


def test_shared_memory_rule():
    assert archs.shared_memory_problem("sm_90", 0, 48 * KiB, None) is None
    assert "max_dynamic_shared_size_bytes is raised first" in archs.shared_memory_problem("sm_90", 4, 48 * KiB, None)
    assert archs.shared_memory_problem("sm_90", 0, 64 * KiB, 64 * KiB) is None
    assert "exceed the kernel's max_dynamic_shared_size_bytes = 65536" in \
        archs.shared_memory_problem("sm_90", 0, 65 * KiB, 64 * KiB)
    assert "exceed the 99 KiB per block of sm_86" in archs.shared_memory_problem("sm_86", KiB, 99 * KiB, 99 * KiB)


# ---------------------------------------------------------------- dynamic shared memory
def test_dynamic_shared_memory_reverses_segments(smem, rng):
    n = 1000  # not a multiple of the block
    x = rng.standard_normal(3 * n).astype(np.float32)
    y = x.copy()
    smem.get_function("reverse_dynamic")(3, 128, (y, np.int32(n)), shared_mem=4 * n)
    np.testing.assert_array_equal(y, x.reshape(3, n)[:, ::-1].ravel())
    assert set(smem.extern_shared) == {"s", "sd", "sb", "raw"}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_extern_shared_inside_a_function_template(smem, rng, dtype):
    """GCC calls an extern thread_local's init function unconditionally inside a template (a call to
    address 0 when none is defined): the build defines it, so templated kernels may use dynamic shared memory."""
    n = 37
    x = rng.standard_normal(n).astype(dtype)
    out = np.full(n, np.nan, dtype)
    name = "template_dynamic_f32" if dtype == np.float32 else "template_dynamic_f64"
    smem.get_function(name)(1, 32, (x, out, np.int32(n)), shared_mem=n * np.dtype(dtype).itemsize)
    np.testing.assert_array_equal(out, 2 * x[::-1])


def test_extern_shared_names_share_one_region(smem, rng):
    d = rng.standard_normal(10)
    out = np.zeros(80, np.uint8)
    smem.get_function("dynamic_aliases")(1, 32, (d, out, np.int32(10)), shared_mem=80)
    np.testing.assert_array_equal(out, d.view(np.uint8))


def test_dynamic_shared_memory_is_poisoned_per_block():
    """Block 0 writes its dynamic shared memory, block 1 only reads: it sees the poison (NaN), not block 0's data."""
    src = ('extern "C" __global__ void k(float* out) {\n'
           '    extern __shared__ float s[];\n'
           '    if (blockIdx.x == 0) s[threadIdx.x] = 1.0f;\n'
           '    __syncthreads();\n'
           '    out[blockIdx.x * blockDim.x + threadIdx.x] = s[threadIdx.x];\n}\n')
    out = np.zeros(64, np.float32)
    EmulatedModule(code=src, name="dyn_poison").get_function("k")(2, 32, (out,), shared_mem=128)
    np.testing.assert_array_equal(out[:32], 1.0)
    assert np.isnan(out[32:]).all()


def test_64_kib_needs_max_dynamic_shared_size_bytes(rng):
    mod = fresh()
    k = mod.get_function("reverse_dynamic")
    n = 16 * KiB  # 64 KiB of float32
    x = rng.standard_normal(n).astype(np.float32)
    y = x.copy()
    assert k.max_dynamic_shared_size_bytes == 48 * KiB
    with pytest.raises(ValueError, match=r"shared_mem=65536 refused on sm_90: 0 B static \+ 65536 B dynamic shared "
                                         r"memory exceed the 48 KiB a block gets unless the kernel's "
                                         r"max_dynamic_shared_size_bytes is raised first"):
        k(1, 256, (y, np.int32(n)), shared_mem=4 * n)
    np.testing.assert_array_equal(y, x)  # refused before it ran
    k.max_dynamic_shared_size_bytes = 4 * n  # as with a cupy.RawKernel
    k(1, 256, (y, np.int32(n)), shared_mem=4 * n)
    np.testing.assert_array_equal(y, x[::-1])
    with pytest.raises(ValueError, match=r"shared_mem=69632 refused on sm_90: 69632 B dynamic shared memory exceed "
                                         r"the kernel's max_dynamic_shared_size_bytes = 65536 B"):
        k(1, 256, (np.zeros(17 * KiB, np.float32), np.int32(17 * KiB)), shared_mem=68 * KiB)


@pytest.mark.parametrize("arch, ceiling_kib", [("sm_90", 227), ("sm_80", 163), ("sm_86", 99), ("sm_75", 64)])
def test_the_ceiling_follows_the_target_arch(rng, arch, ceiling_kib):
    mod = fresh(arch)
    k = mod.get_function("reverse_dynamic")
    with pytest.raises(ValueError, match=fr"max_dynamic_shared_size_bytes = {(ceiling_kib + 1) * KiB} with 0 B of "
                                         fr"static shared memory exceeds the .* \({ceiling_kib} KiB\) a block may "
                                         fr"have on {arch}"):
        k.max_dynamic_shared_size_bytes = (ceiling_kib + 1) * KiB
    k.max_dynamic_shared_size_bytes = ceiling_kib * KiB  # the whole ceiling: allowed, and it runs
    n = ceiling_kib * KiB // 4
    x = rng.standard_normal(n).astype(np.float32)
    y = x.copy()
    k(1, 1024, (y, np.int32(n)), shared_mem=4 * n)
    np.testing.assert_array_equal(y, x[::-1])


def test_static_plus_dynamic_over_48_kib(rng):
    """8 KiB static + 41 KiB dynamic: refused, once the launch has measured the static part; the
    measurement agrees with ptxas's static smem for the kernel."""
    mod = fresh()
    k = mod.get_function("static_and_dynamic")
    n = 41 * KiB // 4
    x = rng.standard_normal(n).astype(np.float32)
    out = np.zeros(n, np.float32)
    with pytest.raises(ValueError, match=r"shared_mem=41984 refused on sm_90: 8192 B static \+ 41984 B dynamic "
                                         r"shared memory exceed the 48 KiB.*learns a kernel's static shared memory "
                                         r"by running it"):
        k(1, 128, (x, out, np.int32(n)), shared_mem=4 * n)
    np.testing.assert_array_equal(out, 0.0)  # arrays unchanged
    assert k.max_dynamic_shared_size_bytes == 40 * KiB  # 48 KiB less the static 8 KiB, as the driver says
    m = 40 * KiB // 4
    k(1, 128, (x[:m].copy(), out[:m], np.int32(m)), shared_mem=4 * m)  # exactly 48 KiB: fine
    assert_close(out[:m], x[:m].astype(np.float64) + 1, np.float32, what="static_and_dynamic")
    k.max_dynamic_shared_size_bytes = 41 * KiB
    k(1, 128, (x, out, np.int32(n)), shared_mem=4 * n)
    assert_close(out, x.astype(np.float64) + 1, np.float32, what="static_and_dynamic, raised")
    with pytest.raises(ValueError, match=r"8192 B of static shared memory exceeds the 232448 B"):
        k.max_dynamic_shared_size_bytes = 220 * KiB
    if nvrtc.available()[0]:
        ptxas = nvrtc.compile_source(SOURCE.read_text(), SOURCE.name, "sm_90").resources["static_and_dynamic"]
        assert ptxas.smem == 8192


def test_write_past_the_dynamic_size(smem):
    with pytest.raises(EmulatedDeviceError, match=r"write past the end of dynamic shared memory: byte 400 .* "
                                                  r"shared_mem=400 bytes"):
        smem.get_function("dynamic_overflow_bug")(1, 32, (np.int32(100),), shared_mem=400)
    smem.get_function("dynamic_overflow_bug")(1, 32, (np.int32(99),), shared_mem=400)  # the last float: fine


def test_shared_mem_without_extern_shared_is_refused():
    mod = EmulatedModule(code='extern "C" __global__ void k(float* x) { x[0] = 1.0f; }\n', name="static_only")
    with pytest.raises(ValueError, match=r"shared_mem=1024: dynamic shared memory, but module static_only declares "
                                         r"no extern __shared__ array"):
        mod.get_function("k")(1, 1, (np.zeros(1, np.float32),), shared_mem=1024)
    with pytest.raises(ValueError, match="shared_mem must be an int >= 0"):
        mod.get_function("k")(1, 1, (np.zeros(1, np.float32),), shared_mem=-1)


# ---------------------------------------------------------------- asynchronous copies
def test_double_buffered_copy(smem, rng):
    tiles = 7
    x = rng.standard_normal((tiles * 8, 64)).astype(np.float32)
    out = np.full(64, np.nan, np.float32)
    smem.get_function("column_sums_double_buffered")(1, 64, (x, out, np.int32(tiles)))
    assert_close(out, x.astype(np.float64).sum(axis=0), np.float32, what="column_sums_double_buffered")


def test_double_buffered_copy_on_sm75(rng):
    """The same source built for sm_75 (where cuda_pipeline.h copies synchronously) gives the same sums."""
    mod = load_module(SOURCE, arch="sm_75")
    x = rng.standard_normal((3 * 8, 64)).astype(np.float32)
    out = np.zeros(64, np.float32)
    mod.get_function("column_sums_double_buffered")(1, 64, (x, out, np.int32(3)))
    assert_close(out, x.astype(np.float64).sum(axis=0), np.float32, what="column sums on sm_75")


def test_read_before_the_pipeline_wait_reads_poison(smem, rng):
    x = rng.standard_normal((3 * 8, 64)).astype(np.float32)
    out = np.zeros(64, np.float32)
    smem.get_function("read_before_wait_bug")(1, 64, (x, out, np.int32(3)))
    assert np.isnan(out).all(), "a copy must land at the wait, not at issue"


def test_no_barrier_after_the_wait_reads_other_threads_unlanded_copies(smem, rng):
    x = rng.standard_normal((3 * 8, 64)).astype(np.float32)
    out = np.zeros(64, np.float32)
    smem.get_function("no_barrier_after_wait_bug")(1, 64, (x, out, np.int32(3)))
    assert np.isnan(out).any()


def test_misaligned_async_copy(smem):
    x = np.arange(64, dtype=np.float32)
    with pytest.raises(EmulatedDeviceError) as info:
        smem.get_function("misaligned_async_bug")(1, 4, (x, np.zeros(4, np.float32)))
    assert ("misaligned address: a 16-byte __pipeline_memcpy_async source read of parameter 'x' (const float*, 64 "
            "elements) at byte offset 4 (element index 1), 4 bytes past a multiple of 16" in str(info.value))
    assert (info.value.param, info.value.index, info.value.thread) == ("x", 1, (0, 0, 0))


def test_async_copy_rules():
    src = r'''
extern "C" __global__ void to_global(const float* x, float* y) {
    __pipeline_memcpy_async(y, x, 16);
}
extern "C" __global__ void bad_size(const float* x) {
    __shared__ float s[4];
    __pipeline_memcpy_async(s, x, 12);
}
'''
    mod = EmulatedModule(code=src, name="async_rules")
    x = np.zeros(8, np.float32)
    with pytest.raises(EmulatedDeviceError, match=r"__pipeline_memcpy_async on line 3: the destination 0x[0-9a-f]+ is "
                                                  r"not shared memory"):
        mod.get_function("to_global")(1, 1, (x, np.zeros(8, np.float32)))
    with pytest.raises(EmulatedDeviceError, match="size_and_align must be 4, 8 or 16 bytes, got 12"):
        mod.get_function("bad_size")(1, 1, (x,))


# ---------------------------------------------------------------- alignment
def test_aligned_vector_accesses(smem, rng):
    x = rng.standard_normal(64).astype(np.float32)
    y = np.zeros(64, np.float32)
    smem.get_function("scale_float4")(1, 32, (x, y, np.int32(15), np.int32(4)))
    np.testing.assert_array_equal(y[:60], 2 * x[4:])
    smem.get_function("scale_float2")(1, 32, (x, y, np.int32(31), np.int32(2)))
    np.testing.assert_array_equal(y[:62], 2 * x[2:])
    xd, yd = rng.standard_normal(64), np.zeros(64)
    smem.get_function("scale_double2")(1, 32, (xd, yd, np.int32(31), np.int32(2)))
    np.testing.assert_array_equal(yd[2:], 2 * xd[:62])


def test_misaligned_float4_load(smem, rng):
    x = rng.standard_normal(64).astype(np.float32)
    y = np.zeros(64, np.float32)
    with pytest.raises(EmulatedDeviceError) as info:
        smem.get_function("scale_float4")(2, 8, (x, y, np.int32(15), np.int32(1)))
    e = info.value
    assert ("kernel scale_float4 (shared_memory.cu): misaligned address: a 16-byte float4 read of parameter 'x' "
            "(const float*, 64 elements) at byte offset 4 (element index 1), 4 bytes past a multiple of 16, in block "
            "(0, 0, 0), thread (0, 0, 0) (a GPU faults with 'misaligned address'" in str(e)), str(e)
    assert (e.kernel, e.param, e.index, e.access, e.thread) == ("scale_float4", "x", 1, "read", (0, 0, 0))
    np.testing.assert_array_equal(y, 0.0)


def test_misaligned_float2_load_and_double2_store(smem, rng):
    with pytest.raises(EmulatedDeviceError, match=r"a 8-byte float2 read of parameter 'x' .* byte offset 4 "
                                                  r"\(element index 1\), 4 bytes past a multiple of 8"):
        smem.get_function("scale_float2")(1, 32, (np.zeros(64, np.float32), np.zeros(64, np.float32), np.int32(31),
                                                  np.int32(1)))
    with pytest.raises(EmulatedDeviceError, match=r"a 16-byte double2 write of parameter 'y' \(double\*, 64 elements\) "
                                                  r"at byte offset 8 \(element index 1\)") as info:
        smem.get_function("scale_double2")(1, 32, (np.zeros(64), np.zeros(64), np.int32(31), np.int32(1)))
    assert info.value.access == "write"


# ---------------------------------------------------------------- NVRTC
@pytest.mark.skipif(not nvrtc.available()[0], reason="NVRTC wheel absent")
@pytest.mark.parametrize("arch", nvrtc.ARCHS)
def test_the_kernels_compile_for_every_arch(arch):
    if not nvrtc.header_dirs():
        pytest.skip("no CUDA headers for cuda_pipeline.h: pip install nvidia-cuda-runtime (in gpubp[test])")
    compiled = nvrtc.compile_source(SOURCE.read_text(), SOURCE.name, arch)
    assert {"reverse_dynamic", "column_sums_double_buffered", "scale_float4"} <= set(compiled.resources)
    assert compiled.resources["column_sums_double_buffered"].smem == 2 * 8 * 64 * 4
