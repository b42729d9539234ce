"""Every kernel of kernels/*.cu, naive and fast, f32 and f64, equals the float64
NumPy reference (gpubp.reference) on shapes that straddle every block and tile
edge; and the launchers reject bad input with a message that says the fix.

The checks themselves are ``gpubp.check.kernels`` (``gpubp check`` runs the
same ones): here they run on the emulated CUDA device and, where CuPy and a GPU
are present, on the GPU.  Outputs are poisoned with NaN before every launch so
an element the kernel never writes fails.
"""
from __future__ import annotations

import numpy as np
import pytest

from gpubp import reference
from gpubp.check import kernels as checks
from gpubp.check.kernels import ROW_SHAPES, WG_SHAPES, layer, nan_like, output_layer
from gpubp.cuda import launchers
from gpubp.cuda import sources as kernels
from gpubp.testing import assert_close

DTYPES = [np.float32, np.float64]
NAIVE = [pytest.param(True, id="naive"), pytest.param(False, id="fast")]


def test_shape_lists_cover_the_edges():
    """1, the primes and one below/at/above the tile appear in every dimension."""
    for shapes, edges in ((ROW_SHAPES, (1, 7, 31, 127, 257, 63, 64, 65)),
                          (WG_SHAPES, (1, 7, 31, 127, 257, 63, 64, 65, 15, 16, 17))):
        assert len(shapes) >= 20
        for dim in range(len(shapes[0])):
            missing = set(edges) - {s[dim] for s in shapes}
            assert not missing, f"dimension {dim} never takes the sizes {sorted(missing)}"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("naive", NAIVE)
@pytest.mark.parametrize("check, fn, extra", checks.CHECKS, ids=[c[0].replace(" ", "-") for c in checks.CHECKS])
def test_kernel_against_reference(dev, check, fn, extra, naive, dtype):
    assert fn(dev, dtype, naive, **extra) >= 20         # every shape of its list agreed with the reference


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("defines", [pytest.param(d, id=" ".join(f"{k}={v}" for k, v in d.items()))
                                     for d in checks.VARIANTS])
@pytest.mark.parametrize("check, fn, extra", checks.GEMM_CHECKS, ids=[c[0].replace(" ", "-") for c in checks.GEMM_CHECKS])
def test_gemm_variants_against_reference(dev, check, fn, extra, defines, dtype):
    """The main loop's other schedules (register double buffering; v1's one stage) and the narrow tiles on
    every GEMM check."""
    assert fn(checks.variant(dev, defines), dtype, False, **extra) >= 20


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("check, fn, extra", checks.GEMM_CHECKS, ids=[c[0].replace(" ", "-") for c in checks.GEMM_CHECKS])
def test_gemms_built_for_sm_75_against_reference(check, fn, extra, dtype):
    """Built for sm_75 (no cp.async), the default schedule stages every operand through registers: the
    code a Turing GPU runs, on the emulated device."""
    ks = kernels.emulated_kernels(arch="sm_75")
    assert ks.arch == "sm_75" and ks.module("weight_grad").arch == "sm_75"
    dev = checks.emulated_device()._replace(ks=ks, kernels=lambda d: kernels.emulated_kernels(d, "sm_75"))
    assert fn(dev, dtype, False, **extra) >= 20


@pytest.mark.parametrize("dtype", DTYPES)
def test_split_k_gives_the_same_bits_whichever_block_of_a_tile_comes_last(monkeypatch, dtype):
    """Issue 21 part 3's deterministic reduction: the last block of a tile to arrive sums the partials in the
    order z = 0, 1, …, so the output's bits do not depend on the order the blocks ran in (a GPU's is any):
    index order, backwards and three shuffles of the emulated device's blocks give the same bits, 5 splits."""
    dev, rng = checks.emulated_device(), np.random.default_rng(3)
    B, I, O, splits = 97, 130, 70, 5
    a_prev, delta = layer(rng, B, I, O, dtype)
    W, b = rng.normal(0.0, 0.1, (I, O)).astype(dtype), rng.normal(size=O).astype(dtype)
    delta_next, a = rng.normal(0.0, 0.5, (B, O)).astype(dtype), rng.uniform(0.0, 1.0, (B, I)).astype(dtype)

    def outputs():
        out = {"forward": nan_like((B, O), dtype), "BP2": nan_like((B, I), dtype),
               "dW": nan_like((I, O), dtype), "db": nan_like(O, dtype)}
        splits_of = {f: checks.split_workspace(dev, f, M, N, splits, dtype, False)
                     for f, M, N in (("forward_gemm", B, O), ("backward_gemm", B, I), ("weight_grad", I, O))}
        launchers.gemm_bias_sigmoid(dev.ks, a_prev, W, b, out["forward"], **splits_of["forward_gemm"])
        launchers.gemm_sigmoid_delta(dev.ks, delta_next, W, a, out["BP2"], **splits_of["backward_gemm"])
        launchers.weight_grad(dev.ks, a_prev, delta, out["dW"], out["db"], scale=1.0 / B, **splits_of["weight_grad"])
        assert not any(s["counters"].any() for s in splits_of.values())
        return out

    monkeypatch.delenv("GPUBP_EMULATOR_BLOCK_ORDER", raising=False)
    first = outputs()
    want = np.empty((B, O))
    reference.gemm_bias_sigmoid(a_prev, W, b, want)
    assert_close(first["forward"], want, dtype, what="split-K forward")            # right, not only repeatable
    for order in ("reverse", "shuffle:1", "shuffle:2", "shuffle:3"):
        monkeypatch.setenv("GPUBP_EMULATOR_BLOCK_ORDER", order)
        for name, got in outputs().items():
            assert got.tobytes() == first[name].tobytes(), f"{name} under block order {order}: other bits"


def test_every_kernel_has_a_check():
    checked = {c[0].split(" ")[0] for c in checks.CHECKS}
    names = {k.removesuffix("_f32").removesuffix("_f64").removesuffix("_naive")
             for f in kernels.families() for k in kernels.kernel_names(f)}
    assert checked == names


# -- tunables injected with -D: the launchers follow the compiled tiles ---------------------------

SMALL_TILES = {"TILE": 32, "MICRO": 2, "BK": 8, "EPT": 2, "ROW_THREADS": 8, "ROWS_PER_BLOCK": 4}


@pytest.mark.parametrize("dtype", DTYPES)
def test_injected_tunables(dev, dtype):
    ks = dev.kernels(SMALL_TILES)
    assert ks.param("weight_grad", "TILE") == 32 and ks.param("delta", "ROW_THREADS") == 8
    rng = np.random.default_rng(6)
    for B, I, O in [(1, 1, 1), (7, 31, 33), (9, 33, 65), (17, 64, 31)]:
        a_prev, delta = layer(rng, B, I, O, dtype)
        expected_dW, expected_db = np.empty((I, O)), np.empty(O)
        reference.weight_grad(a_prev, delta, expected_dW, expected_db, scale=0.25)
        dW, db = dev.put(nan_like((I, O), dtype)), dev.put(nan_like(O, dtype))
        launchers.weight_grad(ks, dev.put(a_prev), dev.put(delta), dW, db, scale=0.25)
        assert_close(dW, expected_dW, dtype, what=f"weight_grad dW, small tiles {(B, I, O)}")
        assert_close(db, expected_db, dtype, what=f"weight_grad db, small tiles {(B, I, O)}")

        a, y = output_layer(rng, B, O, dtype)
        expected_delta, expected_loss = np.empty((B, O)), np.empty(B)
        reference.output_delta("output_delta_ce", a, y, expected_delta, expected_loss)
        delta, loss = dev.put(nan_like((B, O), dtype)), dev.put(nan_like(B, dtype))
        launchers.output_delta(ks, "output_delta_ce", dev.put(a), dev.put(y), delta, loss)
        assert_close(delta, expected_delta, dtype, what=f"output_delta delta, small tiles {(B, O)}")
        assert_close(loss, expected_loss, dtype, what=f"output_delta loss, small tiles {(B, O)}")

        z, b = rng.normal(size=(B, O)).astype(dtype), rng.normal(size=O).astype(dtype)
        expected_z = z.astype(np.float64)
        reference.bias_sigmoid(expected_z, b)
        z_dev = dev.put(z)
        launchers.bias_sigmoid(ks, z_dev, dev.put(b))
        assert_close(z_dev, expected_z, dtype, what=f"bias_sigmoid, small tiles {(B, O)}")


def test_a_variant_at_the_default_tunables_is_the_default_build():
    """A tuned entry or the narrow-tile rule may name the defaults explicitly: that is not a second build."""
    ks = kernels.emulated_kernels()
    assert ks.variant({"TILE": 64, "MICRO": 8}) is ks and ks.variant({}) is ks
    narrow = ks.variant({"TILE": 32, "MICRO": 4})
    assert narrow is not ks and narrow.defines == {"TILE": 32, "MICRO": 4}
    assert narrow.variant({"TILE": 32, "MICRO": 4, "BK": 4}) is narrow          # BK 4 is the default
    assert narrow.variant({"TILE": 64, "MICRO": 8}).defines == {}


def test_unknown_tunable_is_refused():
    with pytest.raises(ValueError, match=r"unknown kernel tunable 'TILES'; the tunables are .*TILE"):
        kernels.emulated_kernels({"TILES": 32})


# -- launcher validation ------------------------------------------------------------------------

def test_launchers_reject_bad_input(dev):
    ks, put = dev.ks, dev.put
    f32 = np.zeros((4, 3), np.float32)
    a_prev, delta, W = put(np.zeros((5, 4), np.float32)), put(np.zeros((5, 3), np.float32)), put(f32)
    b = put(np.zeros(3, np.float32))

    with pytest.raises(TypeError, match=r"bias_sigmoid: z has dtype float16; the kernels take float32 or float64"):
        launchers.bias_sigmoid(ks, put(f32.astype(np.float16)), put(np.zeros(3, np.float16)))
    with pytest.raises(TypeError, match=r"bias_sigmoid: z has dtype int32"):
        launchers.bias_sigmoid(ks, put(np.zeros((4, 3), np.int32)), b)
    with pytest.raises(TypeError, match=r"bias_sigmoid: b is float64 but z is float32; all arrays must have one dtype"):
        launchers.bias_sigmoid(ks, put(f32), put(np.zeros(3)))
    with pytest.raises(ValueError, match=r"bias_sigmoid: b has shape \(4,\) but must be \(3,\)"):
        launchers.bias_sigmoid(ks, put(f32), put(np.zeros(4, np.float32)))
    with pytest.raises(ValueError, match=r"weight_grad: a_prev is not C-contiguous .*; pass xp\.ascontiguousarray\(a_prev\)"):
        launchers.weight_grad(ks, put(np.zeros((4, 5), np.float32)).T, delta, W)
    with pytest.raises(ValueError, match=r"sigmoid_delta: g is not C-contiguous"):
        launchers.sigmoid_delta(ks, put(np.zeros((4, 6), np.float32))[:, ::2], put(f32), put(f32))
    with pytest.raises(ValueError, match=r"sigmoid_delta: delta has shape \(3, 4\) but must be \(4, 3\)"):
        launchers.sigmoid_delta(ks, put(f32), put(f32), put(np.zeros((3, 4), np.float32)))
    with pytest.raises(ValueError, match=r"weight_grad: delta has 4 rows but a_prev has 5"):
        launchers.weight_grad(ks, a_prev, put(np.zeros((4, 3), np.float32)), W)
    with pytest.raises(ValueError, match=r"weight_grad: dW has shape \(3, 4\) but must be \(4, 3\)"):
        launchers.weight_grad(ks, a_prev, delta, put(np.zeros((3, 4), np.float32)))
    with pytest.raises(ValueError, match=r"weight_grad: a_prev must be 2-D \(B, I\)"):
        launchers.weight_grad(ks, put(np.zeros(5, np.float32)), delta, W)
    with pytest.raises(ValueError, match=r"weight_grad_sgd: mu = 0.9 needs momentum buffers; pass vW and vb"):
        launchers.weight_grad_sgd(ks, a_prev, delta, W, b, eta=0.1, mu=0.9)
    with pytest.raises(ValueError, match=r"weight_grad_sgd: pass the momentum buffers vW and vb together"):
        launchers.weight_grad_sgd(ks, a_prev, delta, W, b, put(f32), eta=0.1, mu=0.9)
    with pytest.raises(ValueError, match=r"weight_grad_sgd: eta = nan is not finite"):
        launchers.weight_grad_sgd(ks, a_prev, delta, W, b, eta=float("nan"))
    with pytest.raises(ValueError, match=r"weight_grad: scale = 1e\+40 is not finite in float32"):
        launchers.weight_grad(ks, a_prev, delta, W, scale=1e40)
    with pytest.raises(ValueError, match=r"output_delta: kernel must be one of 'output_delta_mse', 'output_delta_ce' "
                                         r"\(a cost's \.kernel\), got 'mse'"):
        launchers.output_delta(ks, "mse", put(f32), put(f32), put(f32))
    with pytest.raises(ValueError, match=r"output_delta: loss has shape \(3,\) but must be \(4,\)"):
        launchers.output_delta(ks, "output_delta_mse", put(f32), put(f32), put(f32), put(np.zeros(3, np.float32)))
    # nothing was launched: W is untouched by the refused updates
    assert_close(W, np.zeros((4, 3)), np.float32, what="W after refused launches")


def test_kernel_names_and_families():
    assert kernels.families() == ("backward_gemm", "delta", "forward", "forward_gemm", "fused_step", "gather",
                                  "weight_grad")
    names = {k for f in kernels.families() for k in kernels.kernel_names(f)}
    for base in ("gather_rows", "bias_sigmoid", "gemm_bias_sigmoid", "sigmoid_delta", "gemm_sigmoid_delta",
                 "output_delta_mse", "output_delta_ce", "weight_grad", "weight_grad_sgd"):
        for dt in ("f32", "f64"):
            assert {f"{base}_{dt}", f"{base}_naive_{dt}"} <= names
    # the fused step's unfused twin is the per-kernel step itself (the kernels above)
    assert set(kernels.kernel_names("fused_step")) == {f"fused_step_{c}_{dt}" for c in ("mse", "ce")
                                                       for dt in ("f32", "f64")}
    assert len(names) == 40
    assert kernels.family_of("weight_grad_sgd_naive_f64") == "weight_grad"
    with pytest.raises(ValueError, match=r"no kernel named 'weight_grad_f16'"):
        kernels.family_of("weight_grad_f16")


# -- memory: which arguments may share memory, per launcher ----------------------------------------

@pytest.mark.parametrize("naive", NAIVE)
@pytest.mark.parametrize("kernel", ["output_delta_mse", "output_delta_ce"])
@pytest.mark.parametrize("into", ["a", "y"])
def test_output_delta_in_place_over_a_or_y(dev, kernel, into, naive):
    """delta may be a or y itself: each thread loads a[i], y[i] before it stores delta[i].  (Before,
    the loss re-read a[i] after delta[i] overwrote it: f32, B=9, O=33, mse, delta is a gave a loss of
    8.83 where the reference says 4.26.)"""
    rng = np.random.default_rng(8)
    a, y = output_layer(rng, 9, 33, np.float32)
    expected_delta, expected_loss = np.empty((9, 33)), np.empty(9)
    reference.output_delta(kernel, a, y, expected_delta, expected_loss)
    a_dev, y_dev, loss = dev.put(a), dev.put(y), dev.put(nan_like(9, np.float32))
    out = a_dev if into == "a" else y_dev
    launchers.output_delta(dev.ks, kernel, a_dev, y_dev, out, loss, naive=naive)
    assert_close(out, expected_delta, np.float32, what=f"{kernel} delta written over {into}")
    assert_close(loss, expected_loss, np.float32, what=f"{kernel} loss with delta over {into}")


@pytest.mark.parametrize("naive", NAIVE)
def test_sigmoid_delta_in_place_over_a(dev, naive):
    rng = np.random.default_rng(9)
    g, a = rng.normal(size=(9, 33)).astype(np.float32), rng.uniform(0, 1, (9, 33)).astype(np.float32)
    expected = np.empty((9, 33))
    reference.sigmoid_delta(g, a, expected)
    a_dev = dev.put(a)
    launchers.sigmoid_delta(dev.ks, dev.put(g), a_dev, a_dev, naive=naive)
    assert_close(a_dev, expected, np.float32, what="sigmoid_delta written over a")


def test_every_other_overlap_is_refused(dev):
    """Partial overlaps, and whole ones the kernels do not allow, are refused before any launch."""
    ks, put = dev.ks, dev.put
    f32 = np.float32
    buf = put(np.zeros(4 * 3 + 3, f32))
    z, b = buf[:12].reshape(4, 3), buf[9:12]                      # b is z's last row
    with pytest.raises(ValueError, match=r"bias_sigmoid: b overlaps z in memory; no other two arguments may share"):
        launchers.bias_sigmoid(ks, z, b)
    g, shifted = buf[:12].reshape(4, 3), buf[1:13].reshape(4, 3)
    with pytest.raises(ValueError, match=r"sigmoid_delta: delta overlaps g in memory; delta may be g or a itself"):
        launchers.sigmoid_delta(ks, g, put(np.zeros((4, 3), f32)), shifted)
    a, y = put(np.full((4, 3), 0.5, f32)), put(np.zeros((4, 3), f32))
    with pytest.raises(ValueError, match=r"output_delta: loss overlaps a in memory; delta may be a or y itself"):
        launchers.output_delta(ks, "output_delta_mse", a, y, put(np.zeros((4, 3), f32)), a.reshape(-1)[:4])
    sq = put(np.zeros((3, 3), f32))
    with pytest.raises(ValueError, match=r"weight_grad: dW is a_prev in memory"):
        launchers.weight_grad(ks, sq, put(np.zeros((3, 3), f32)), sq)
    W = put(np.zeros((3, 3), f32))
    with pytest.raises(ValueError, match=r"weight_grad_sgd: vW is W in memory"):
        launchers.weight_grad_sgd(ks, put(np.zeros((2, 3), f32)), put(np.zeros((2, 3), f32)), W,
                                  put(np.zeros(3, f32)), W, put(np.zeros(3, f32)), eta=0.1, mu=0.9)
    assert_close(W, np.zeros((3, 3)), f32, what="W after the refused update")


# -- 32-bit indices: the limit follows the compiled tunables --------------------------------------------

@pytest.mark.parametrize("ept", [1, 4, 64])
def test_the_largest_index_at_the_size_limit_fits_32_bits(ept):
    """At the largest size the launcher accepts, the fast elementwise kernels' largest index,
    base + (EPT-1)*blockDim.x with base = blockIdx.x*blockDim.x*EPT + threadIdx.x, is below 2^31."""
    n = launchers.INT_MAX - launchers.BLOCK * ept            # the limit: n + BLOCK*EPT <= INT_MAX
    grid = -(-n // (launchers.BLOCK * ept))
    largest = (grid - 1) * launchers.BLOCK * ept + (launchers.BLOCK - 1) + (ept - 1) * launchers.BLOCK
    assert largest <= launchers.INT_MAX and (grid - 1) * launchers.BLOCK * ept <= launchers.INT_MAX


def test_sizes_past_the_limit_of_these_tunables_are_refused():
    """With EPT = 64 the limit is 2^31 - 1 - 256*64 elements; one more is refused before any launch
    (the arrays are virtual memory, never touched)."""
    ks = kernels.emulated_kernels({"EPT": 64})
    limit = launchers.INT_MAX - launchers.BLOCK * 64
    z = np.empty(((limit + 1) // 2, 2), np.float32)
    with pytest.raises(ValueError, match=rf"bias_sigmoid: B\*O = {limit + 1} is too large .* \(at most {limit} "
                                         r"with these tunables"):
        launchers.bias_sigmoid(ks, z, np.zeros(2, np.float32))
    with pytest.raises(ValueError, match=rf"sigmoid_delta: n = {limit + 1} is too large"):
        launchers.sigmoid_delta(ks, z, z, z)
    del z


@pytest.mark.parametrize("defines", [None, {"TILE": 1, "MICRO": 1, "BK": 1024}], ids=["default", "BK=1024"])
def test_reduction_lengths_within_BK_of_2_31_are_refused(defines):
    """The tiled kernels' loop ``k0 += BK`` reaches reduction length + BK − 1 in an int: I (forward GEMM),
    O (BP2) and B (weight gradient) must stay at most INT_MAX − BK.  At the limit the check passes; one
    past it, each launcher refuses before any launch (virtual arrays, never touched)."""
    ks = kernels.emulated_kernels(defines)
    f32 = np.float32
    for family, kernel, what in (("forward_gemm", "gemm_bias_sigmoid", "I"), ("backward_gemm", "gemm_sigmoid_delta", "O"),
                                 ("weight_grad", "weight_grad", "B")):
        bk = ks.param(family, "BK")
        launchers._check_reduction(ks, kernel, family, False, what, launchers.INT_MAX - bk)     # the limit itself
        launchers._check_reduction(ks, kernel, family, True, what, launchers.INT_MAX)           # naive: steps by 1
        n = launchers.INT_MAX - bk + 1
        long = np.empty((1, n), f32)                   # 8 GiB of address space, never written
        message = rf"{kernel}: {what} = {n} is too large for the kernel's 32-bit reduction loop: .*\(at most {n - 1} with"
        with pytest.raises(ValueError, match=message):
            if what == "I":
                launchers.gemm_bias_sigmoid(ks, long, long.reshape(n, 1), np.zeros(1, f32), np.empty((1, 1), f32))
            elif what == "O":
                launchers.gemm_sigmoid_delta(ks, long, long, np.empty((1, 1), f32), np.empty((1, 1), f32))
            else:
                launchers.weight_grad(ks, long.reshape(n, 1), long.reshape(n, 1), np.empty((1, 1), f32))
        del long


# -- tunables a GPU would refuse, or that would spill, are refused alike on every device -----------------

nvrtc = pytest.importorskip("gpubp.cuda.nvrtc")
needs_nvrtc = pytest.mark.skipif(not nvrtc.available()[0], reason="NVRTC is not installed (pip install 'gpubp[nvrtc]')")


@needs_nvrtc
@pytest.mark.parametrize("defines, problem", [
    ({"TILE": 128, "MICRO": 8}, r"gemm_\w+_f64 spills \d+ bytes of registers"),   # f64: 1024 threads, 64 registers
    ({"TILE": 64, "MICRO": 16}, r"\w+_f32 spills \d+ bytes"),                       # 256 accumulators a thread
    ({"TILE": 128, "MICRO": 4}, r"weight_grad.cu does not compile with them .*must be at most 1024 per block"),
    ({"TILE": 128, "BK": 32}, r"weight_grad.cu does not compile with them .*48 KiB of static shared memory"),
    ({"EPT": 65}, r"forward.cu does not compile with them .*EPT \(elements per thread\) must be in 1 \.\. 64"),
])
def test_tunables_are_refused_when_the_model_is_made(defines, problem):
    from gpubp import MLP, InputError
    with pytest.raises(InputError, match=r"kernel tunables .* are refused on every device: .*" + problem):
        MLP([3, 2], backend="emulated", backend_options={"defines": defines})


@needs_nvrtc
def test_the_emulator_and_nvrtc_refuse_the_same_shared_memory():
    """The limit is a static_assert in the source, so both compilers refuse it with its words."""
    from gpubp.cuda.emulator import EmulatedCompileError
    words = "must fit CUDA's 48 KiB of static shared memory per block"
    with pytest.raises(nvrtc.CompileError, match=words):
        nvrtc.compile_family("weight_grad", "sm_90", {"TILE": 128, "BK": 32})
    ks = kernels.emulated_kernels({"TILE": 128, "BK": 32})
    with pytest.raises(EmulatedCompileError, match=words):
        launchers.weight_grad(ks, np.zeros((2, 3), np.float32), np.zeros((2, 3), np.float32),
                              np.zeros((3, 3), np.float32))


@needs_nvrtc
def test_launch_bounds_follow_the_tile():
    """The launch bounds follow the threads a tile takes: at TILE=128, MICRO=8 the f32 block is 256 threads
    (__launch_bounds__(256, 1): 65536 / (256 · 168) rounds down to 1 block, the hardware's 255 registers at
    most, no spill) and the f64 block 1024 (__launch_bounds__(1024, 1): the hardware's 64 registers a thread),
    and no 'minnctapersm will be ignored' (a constant would be)."""
    compiled = nvrtc.compile_family("weight_grad", "sm_90", {"TILE": 128, "MICRO": 8})
    assert "minnctapersm" not in compiled.log and "ignored" not in compiled.log
    r32, r64 = compiled.resources["weight_grad_f32"], compiled.resources["weight_grad_f64"]
    assert r32.registers <= 255 and r32.spill_stores == r32.spill_loads == 0
    assert r64.registers <= 64                    # its spills are why tunable_problems refuses this set


# -- headers: kernels/*.cuh, inlined by the loader ---------------------------------------------------

def test_headers_are_inlined_once_and_defined_once():
    """σ and the costs live in one header each; every compiler gets the family's text with the headers
    in it (no #include left), so NVRTC, CuPy's cache key and the emulator all see the same source."""
    import re
    headers = sorted(p.name for p in kernels.kernel_dir().glob("*.cuh"))
    assert headers == ["async_copy.cuh", "costs.cuh", "gemm_mainloop.cuh", "quiet_nan.cuh", "sigmoid.cuh"]
    for fam in kernels.families():
        text = kernels.source(fam)
        assert not re.search(r'^\s*#\s*include\s+"', text, re.M), fam
    assert kernels.source("forward").count("__device__ inline T sigmoid(T x)") == 1
    assert kernels.source("forward_gemm").count("__device__ inline T sigmoid(T x)") == 1
    assert kernels.source("delta").count("struct CrossEntropy") == 1
    for p in kernels.kernel_dir().glob("*.cu"):             # no second copy in any .cu file
        raw = p.read_text()
        assert "inline T sigmoid(T x)" not in raw and "struct CrossEntropy" not in raw, p.name


def test_a_header_included_twice_is_inlined_once_and_a_missing_one_is_named(tmp_path, monkeypatch):
    (tmp_path / "a.cuh").write_text("#ifndef A\n#define A\nint a;\n#endif\n")
    (tmp_path / "b.cuh").write_text('#include "a.cuh"\nint b;\n')
    monkeypatch.setattr(kernels, "kernel_dir", lambda: tmp_path)
    text = kernels._inlined('#include "a.cuh"\n#include "b.cuh"\nint c;\n', "x.cu", set())
    assert text.count("int a;") == 1 and "int b;" in text and "#include" not in text
    with pytest.raises(ValueError, match=r"x.cu includes 'nope.cuh', which is not in"):
        kernels._inlined('#include "nope.cuh"\n', "x.cu", set())


def test_the_cu_files_compile_with_nvcc_and_the_kernels_folder_on_the_include_path(tmp_path):
    """What a reader who builds a .cu file by hand does: nvcc -I kernels (skipped without a CUDA toolkit)."""
    import shutil
    import subprocess
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("no nvcc on PATH (the CUDA toolkit is not needed by gpubp; NVRTC compiles the inlined text)")
    for p in sorted(kernels.kernel_dir().glob("*.cu")):
        for arch in ("sm_75", "sm_90"):          # sm_90: async_copy.cuh's PTX (cp.async) too
            out = subprocess.run([nvcc, "-std=c++17", f"-arch={arch}", "--ptx", "-I", str(kernels.kernel_dir()),
                                  str(p), "-o", str(tmp_path / f"{p.stem}-{arch}.ptx")], capture_output=True, text=True)
            assert out.returncode == 0, f"{p.name} for {arch}: {out.stderr[-2000:]}"
