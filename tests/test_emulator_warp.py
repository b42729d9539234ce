"""The emulated device's warp-synchronous primitives (tests/emulator_kernels/warp.cu).

Values: warp reductions and scans by shuffle (down, up, xor and idx, with width), votes,
``__reduce_*_sync`` (sm_80+, and its shuffle fallback on sm_75), a shared-memory reduction
ordered by ``__syncwarp``, ``__activemask`` in a guard, each against NumPy.  Rules: every
bug kernel is caught with a message that names the primitive, the line and the lanes; a
missing ``__syncwarp`` gives a wrong result.  The same file compiles with NVRTC for every
architecture gpubp targets.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gpubp.cuda import nvrtc
from gpubp.cuda.emulator import EmulatedCompileError, EmulatedDeviceError, EmulatedModule, compiler_available, \
    load_module
from gpubp.testing import assert_close

pytestmark = pytest.mark.skipif(not compiler_available(), reason="the emulator needs a C++ compiler (g++)")

SOURCE = Path(__file__).resolve().parent / "emulator_kernels" / "warp.cu"


def line_of(text: str, occurrence: int = 1) -> int:
    """The line of warp.cu holding ``text`` (its ``occurrence``-th match)."""
    hits = [i for i, line in enumerate(SOURCE.read_text().splitlines(), 1) if text in line]
    return hits[occurrence - 1]


@pytest.fixture(scope="module")
def warp():
    return load_module(SOURCE)  # sm_90, the default target


@pytest.fixture(scope="module")
def warp_sm75():
    return load_module(SOURCE, arch="sm_75")


@pytest.fixture
def rng():
    return np.random.default_rng(20)


# ---------------------------------------------------------------- values
def test_shuffle_down_reduction(warp, rng):
    x = rng.standard_normal(3 * 128).astype(np.float32)
    out = np.full(12, np.nan, np.float32)
    warp.get_function("warp_sum_down")(3, 128, (x, out))
    assert_close(out, x.astype(np.float64).reshape(12, 32).sum(axis=1), np.float32, what="warp_sum_down")


def test_shuffle_up_inclusive_scan(warp, rng):
    x = rng.integers(-50, 50, 2 * 96).astype(np.int32)
    out = np.zeros_like(x)
    warp.get_function("warp_scan_up")(2, 96, (x, out))
    np.testing.assert_array_equal(out, np.cumsum(x.reshape(-1, 32), axis=1).ravel())


@pytest.mark.parametrize("width", [32, 16, 8, 4, 2, 1])
def test_xor_butterfly_and_broadcast_within_width(warp, rng, width):
    x = rng.standard_normal(64)
    out, first = np.zeros(64), np.zeros(64)
    warp.get_function("segment_allreduce")(1, 64, (x, out, first, np.int32(width)))
    segments = x.reshape(-1, width)
    assert_close(out, np.repeat(segments.sum(axis=1), width), np.float64, what=f"xor allreduce, width {width}")
    np.testing.assert_array_equal(first, np.repeat(segments[:, 0], width))


@pytest.mark.parametrize("d, width", [(1, 32), (3, 8), (5, 16), (2, 4)])
def test_shuffle_down_keeps_own_value_past_the_segment(warp, d, width):
    x = np.arange(64, dtype=np.int32)
    out = np.zeros_like(x)
    warp.get_function("shfl_down_width")(1, 64, (x, out, np.int32(d), np.int32(width)))
    lane = x % width
    np.testing.assert_array_equal(out, np.where(lane + d < width, x + d, x))


def test_votes(warp, rng):
    x = rng.standard_normal(128).astype(np.float32)
    x[64:96] = np.abs(x[64:96]) + 1  # warp 2: all positive
    x[96:] = -np.abs(x[96:]) - 1     # warp 3: none
    ballot, any_, all_ = np.zeros(4, np.uint32), np.zeros(4, np.int32), np.zeros(4, np.int32)
    warp.get_function("votes")(1, 128, (x, ballot, any_, all_))
    positive = (x > 0).reshape(4, 32)
    np.testing.assert_array_equal(ballot, (positive * (1 << np.arange(32, dtype=np.uint64))).sum(axis=1))
    np.testing.assert_array_equal(any_, positive.any(axis=1))
    np.testing.assert_array_equal(all_, positive.all(axis=1))


@pytest.mark.parametrize("target", ["sm_90", "sm_75"])
def test_reduce_sync_on_sm80_and_its_fallback(warp, warp_sm75, rng, target):
    """__reduce_add/min/max_sync on sm_90; the same kernel built for sm_75 takes its __shfl_xor_sync path."""
    mod = warp if target == "sm_90" else warp_sm75
    x = rng.integers(-1000, 1000, 96).astype(np.int32)
    sums, lo, hi, usum = (np.zeros(3, np.int32), np.zeros(3, np.int32), np.zeros(3, np.int32),
                          np.zeros(3, np.uint32))
    mod.get_function("warp_reduce_int")(1, 96, (x, sums, lo, hi, usum))
    w = x.reshape(3, 32)
    np.testing.assert_array_equal(sums, w.sum(axis=1))
    np.testing.assert_array_equal(lo, w.min(axis=1))
    np.testing.assert_array_equal(hi, w.max(axis=1))
    np.testing.assert_array_equal(usum, w.astype(np.int64).sum(axis=1).astype(np.uint32))


def test_reduce_sync_is_a_compile_error_before_sm80():
    src = 'extern "C" __global__ void k(int* x) { x[0] = __reduce_add_sync(0xffffffffu, x[0]); }\n'
    with pytest.raises(EmulatedCompileError, match="__reduce_add_sync needs sm_80 or newer"):
        EmulatedModule(code=src, options=("-arch=sm_75",), name="reduce75")


def test_syncwarp_orders_shared_memory_and_its_absence_is_visible(warp, rng):
    x = rng.standard_normal(3 * 128).astype(np.float32)
    expected = x.astype(np.float64).reshape(3, 128).sum(axis=1)
    out = np.zeros(3, np.float32)
    warp.get_function("block_sum_syncwarp")(3, 128, (x, out))
    assert_close(out, expected, np.float32, what="block_sum_syncwarp")
    # Without __syncwarp() a lane runs its whole loop before the next lane starts (no implicit
    # lockstep): it reads partial sums that are not written yet, NaN poison in block 0.
    bad = np.zeros(3, np.float32)
    warp.get_function("block_sum_nosyncwarp_bug")(3, 128, (x, bad))
    assert np.isnan(bad[0]) and not np.allclose(bad, expected, equal_nan=False)


def test_activemask_names_the_lanes_inside_the_guard(warp, rng):
    n = 40  # warp 0 all in; warp 1: lanes 0..7
    x = rng.standard_normal(64).astype(np.float32)
    masks, ballot, first = np.zeros(2, np.uint32), np.zeros(2, np.uint32), np.zeros(64, np.float32)
    warp.get_function("active_votes")(1, 64, (x, masks, ballot, first, np.int32(n)))
    np.testing.assert_array_equal(masks, [0xFFFFFFFF, 0xFF])
    bits = (x > 0) * (1 << (np.arange(64, dtype=np.uint64) % 32))
    np.testing.assert_array_equal(ballot, [bits[:32].sum(), bits[32:40].sum()])
    np.testing.assert_array_equal(first[:n], np.repeat(x[[0, 32]], 32)[:n])


# ---------------------------------------------------------------- rules
def test_mask_naming_exited_lanes(warp, rng):
    x = rng.standard_normal(64).astype(np.float32)
    with pytest.raises(EmulatedDeviceError) as info:
        warp.get_function("exited_lane_bug")(1, 64, (x, np.zeros(64, np.float32), np.int32(40)))
    msg = str(info.value)
    line = line_of("v += __shfl_down_sync(FULL, v, 1);")
    assert f"__shfl_down_sync (mask 0xffffffff) on line {line} never completes in warp 1" in msg, msg
    assert "lane(s) 0-7 wait there; lane(s) 8-31 exited (returned) without calling it" in msg, msg
    assert info.value.kernel == "exited_lane_bug" and info.value.thread == (32, 0, 0)


def test_mask_leaving_out_an_active_lane(warp, rng):
    x = rng.standard_normal(32).astype(np.float32)
    with pytest.raises(EmulatedDeviceError) as info:
        warp.get_function("mask_leaves_out_lane_bug")(1, 32, (x, np.zeros(32, np.uint32)))
    line = line_of("out[i] = __ballot_sync(0x0000ffffu")
    assert (f"lane 16 calls __ballot_sync on line {line} with mask 0x0000ffff, which leaves out the calling lane"
            in str(info.value)), str(info.value)
    assert info.value.thread == (16, 0, 0)


def test_read_from_a_lane_outside_the_mask(warp, rng):
    x = rng.standard_normal(32).astype(np.float32)
    with pytest.raises(EmulatedDeviceError) as info:
        warp.get_function("read_outside_mask_bug")(1, 32, (x, np.zeros(32, np.float32)))
    line = line_of("__shfl_down_sync(0x0000ffffu, x[i], 8)")
    assert (f"__shfl_down_sync on line {line} (mask 0x0000ffff): lane 8 reads lane 16, which is outside the mask"
            in str(info.value)), str(info.value)
    assert info.value.thread == (8, 0, 0)


def test_lanes_at_different_call_sites(warp, rng):
    x = rng.standard_normal(32).astype(np.float32)
    with pytest.raises(EmulatedDeviceError) as info:
        warp.get_function("split_call_sites_bug")(1, 32, (x, np.zeros(32, np.float32)))
    first, second = line_of("out[i] = __shfl_xor_sync(FULL, x[i], 1);", 1), \
        line_of("out[i] = __shfl_xor_sync(FULL, x[i], 1);", 2)
    assert (f"__shfl_xor_sync (mask 0xffffffff) on line {first} never completes in warp 0: lane(s) 0-15 wait "
            f"there; lane(s) 16-31 wait at __shfl_xor_sync on line {second}" in str(info.value)), str(info.value)


def test_warp_primitive_waiting_for_lanes_at_a_barrier(warp, rng):
    x = rng.standard_normal(64).astype(np.float32)
    with pytest.raises(EmulatedDeviceError) as info:
        warp.get_function("warp_vs_barrier_bug")(1, 64, (x, np.zeros(64, np.float32)))
    assert (f"lane(s) 0-3 wait there; lane(s) 4-31 wait at __syncthreads() on line "
            f"{line_of('v = __shfl_sync(FULL, v, 0);') + 1}" in str(info.value)), str(info.value)


def test_shuffle_width_must_be_a_power_of_two(warp, rng):
    with pytest.raises(EmulatedDeviceError, match=r"__shfl_sync on line \d+: width 12 is not a power of 2"):
        warp.get_function("bad_width_bug")(1, 32, (rng.standard_normal(32).astype(np.float32),
                                                   np.zeros(32, np.float32)))


def test_partial_warp_lanes_do_not_exist():
    src = ('extern "C" __global__ void k(float* x) {\n'
           '    x[threadIdx.x] = __shfl_xor_sync(0xffffffffu, x[threadIdx.x], 1);\n}\n')
    mod = EmulatedModule(code=src, name="partial_warp")
    with pytest.raises(EmulatedDeviceError, match=r"lane\(s\) 0-23 wait there; lane\(s\) 24-31 do not exist "
                                                  r"\(the block has 56 threads\)"):
        mod.get_function("k")(1, 56, (np.zeros(56, np.float32),))
    x = np.arange(64, dtype=np.float32)  # full warps: fine
    mod.get_function("k")(1, 64, (x,))
    np.testing.assert_array_equal(x, np.arange(64) ^ 1)


def test_module_works_after_a_warp_error(warp, rng):
    with pytest.raises(EmulatedDeviceError):
        warp.get_function("exited_lane_bug")(1, 64, (np.zeros(64, np.float32), np.zeros(64, np.float32),
                                                     np.int32(40)))
    test_shuffle_down_reduction(warp, rng)


# ---------------------------------------------------------------- NVRTC
@pytest.mark.skipif(not nvrtc.available()[0], reason="NVRTC wheel absent")
@pytest.mark.parametrize("arch", nvrtc.ARCHS)
def test_the_kernels_compile_for_every_arch(arch):
    compiled = nvrtc.compile_source(SOURCE.read_text(), SOURCE.name, arch)
    names = {"warp_sum_down", "warp_scan_up", "segment_allreduce", "votes", "warp_reduce_int", "block_sum_syncwarp",
             "active_votes", "exited_lane_bug"}
    assert names <= set(compiled.resources)
