"""The GEMM kernels as compiled (issue 21, part 2): NVRTC's cubin for sm_90, disassembled with nvdisasm
(gpubp.cuda.sass).  Every f32 fast GEMM kernel issues at least 8 FFMA per shared-memory load
instruction (the 4×4 tile read element by element issued 2.0-3.2) and at least 75 % of its shared loads
are 64 or 128 bits wide; no spills on any arch is test_nvrtc's budget check."""
import pytest

from gpubp.cuda import sass

needs_nvdisasm = pytest.mark.skipif(not sass.available()[0], reason=sass.available()[1])

#: (family, kernel): the fast kernels on gemm_mainloop.cuh
GEMMS = [("forward_gemm", "gemm_bias_sigmoid"), ("backward_gemm", "gemm_sigmoid_delta"),
         ("weight_grad", "weight_grad"), ("weight_grad", "weight_grad_sgd")]


@needs_nvdisasm
@pytest.mark.parametrize("family, kernel", GEMMS, ids=[k for _, k in GEMMS])
def test_f32_gemms_issue_8_ffma_per_shared_load_mostly_128_bit(family, kernel):
    c = sass.instruction_counts(family, "sm_90")[f"{kernel}_f32"]
    loads = c.shared_loads
    assert sum(loads.values()) > 0, f"{kernel}_f32 issues no shared loads: {dict(c.opcodes)}"
    assert c.ffma_per_shared_load >= 8, f"{kernel}_f32: {c.fma} FFMA / {loads} shared loads"
    assert c.wide_shared_load_share >= 0.75, f"{kernel}_f32: shared loads by width {loads}"


@needs_nvdisasm
@pytest.mark.parametrize("arch", ["sm_75", "sm_90"])
@pytest.mark.parametrize("family, kernel", GEMMS, ids=[k for _, k in GEMMS])
def test_the_gemms_read_global_memory_16_bytes_at_a_time_where_they_may(family, kernel, arch):
    """The aligned path's 128-bit global reads are in every fast GEMM, f32 and f64: loads into registers
    (LDG.E.128) or, on sm_80 and newer, asynchronous copies into shared memory (LDGSTS.E.BYPASS.128)."""
    for dt in ("f32", "f64"):
        c = sass.instruction_counts(family, arch)[f"{kernel}_{dt}"]
        assert any(op.startswith(("LDG.", "LDGSTS.")) and ".128" in op for op in c.opcodes), \
            f"{kernel}_{dt} on {arch}: {dict(c.opcodes)}"


#: the operands each GEMM stores k-major, which PIPELINE 3 copies asynchronously on sm_80 and newer
K_MAJOR_OPERANDS = {"gemm_bias_sigmoid": 1, "gemm_sigmoid_delta": 0, "weight_grad": 2, "weight_grad_sgd": 2}


@needs_nvdisasm
@pytest.mark.parametrize("family, kernel", GEMMS, ids=[k for _, k in GEMMS])
def test_the_k_major_operands_are_copied_asynchronously_from_sm_80_on(family, kernel):
    """cp.async (LDGSTS, waited on by DEPBAR) where an operand is stored k-major and the arch has it;
    never on sm_75, nor under PIPELINE 2 (register staging), nor in BP2, whose operands are both staged
    transposed (a copy cannot transpose)."""
    for dt in ("f32", "f64"):
        name = f"{kernel}_{dt}"
        on_90 = sass.instruction_counts(family, "sm_90")[name]
        if K_MAJOR_OPERANDS[kernel]:
            assert on_90.count("LDGSTS") and on_90.count("DEPBAR"), f"{name}: {dict(on_90.opcodes)}"
            # the 16-byte copies zero-fill the tile's columns past the matrix
            assert any(op.startswith("LDGSTS") and op.endswith(".128.ZFILL") for op in on_90.opcodes), name
        else:
            assert not on_90.count("LDGSTS"), f"{name}: {dict(on_90.opcodes)}"
        assert not sass.instruction_counts(family, "sm_75")[name].count("LDGSTS"), name
        assert not sass.instruction_counts(family, "sm_90", (("PIPELINE", 2),))[name].count("LDGSTS"), name


@needs_nvdisasm
@pytest.mark.parametrize("arch", ["sm_75", "sm_90"])
@pytest.mark.parametrize("family, kernel", GEMMS, ids=[k for _, k in GEMMS])
def test_the_main_loop_is_mostly_ffma_with_its_index_arithmetic_hoisted(family, kernel, arch):
    """The f32 main loop (every path through it counted once): 16 FFMA per 128-bit shared load, and more than
    55 % of its instructions FFMA: staging and index arithmetic are the rest (v1's loop, compiled from
    git a2a0bd6 for sm_90: 38-41 % FFMA, 2.0 FFMA per 32-bit load)."""
    loop = sass.instruction_counts(family, arch)[f"{kernel}_f32"].main_loop
    assert loop is not None and loop.fma == 256, loop            # one chunk: 8×8 FFMA × BK = 4, unrolled
    assert loop.shared_loads == {128: 16} and loop.ffma_per_shared_load == 16.0, dict(loop.opcodes)
    assert loop.fma_share > 0.55, f"{kernel}_f32 on {arch}: {loop.fma} FFMA of {loop.total}: {dict(loop.opcodes)}"


def test_the_parser_reads_nvdisasms_text():
    text = """
        .section .text.k_f32,"ax",@progbits
        /*0000*/                   LDS.128 R4, [R2] ;
        /*0010*/              @!P0 FFMA.FTZ R8, R4, R5, R8 ;
        /*0020*/                   FFMA R9, R4, R6, R9 ;
        /*0030*/                   LDS R3, [R2+0x10] ;
        /*0040*/              @P1  LDG.E.128 R12, desc[UR4][R10.64] ;
        /*0050*/              @!PT LDS RZ, [RZ] ;
        .section .text.k_f64,"ax",@progbits
        /*0000*/                   DFMA R4, R2, R2, R4 ;
    """
    counts = sass.parse(text)
    k = counts["k_f32"]
    assert k.main_loop is None                                  # no backward branch
    assert k.fma == 2 and k.shared_loads == {128: 1, 32: 1} and k.ffma_per_shared_load == 1.0
    assert k.wide_shared_load_share == 0.5 and k.count("LDG") == 1     # @!PT: never issued, not counted
    assert counts["k_f64"].fma == 1 and counts["k_f64"].shared_loads == {}


# -- the 16-byte global loads: decided per launch from where the arrays lie ---------------------------

import numpy as np                                    # noqa: E402

from gpubp import MLP                                 # noqa: E402
from gpubp.cuda import launchers, sources             # noqa: E402
from gpubp.cuda.dryrun import dry_run_backend, recording_kernels     # noqa: E402


def test_vector_loads_follow_the_real_addresses():
    """A host pointer (CuPy's device pointer alike) decides on the dry run and a GPU: a view 4 bytes into its
    buffer, or rows of a length that is not a multiple of 4 floats, take the element-wise loads."""
    ks = recording_kernels([])
    buf = np.zeros(10 * 16 + 1, np.float32)
    aligned, shifted = buf[:160].reshape(10, 16), buf[1:].reshape(10, 16)
    assert aligned.__array_interface__["data"][0] % 16 == 0
    W, b, a = np.zeros((16, 8), np.float32), np.zeros(8, np.float32), np.zeros((10, 8), np.float32)
    assert launchers.prepare_gemm_bias_sigmoid(ks, aligned, W, b, a).args[7:9] == (1, 1)
    assert launchers.prepare_gemm_bias_sigmoid(ks, shifted, W, b, a).args[7:9] == (0, 1)
    W7, a7 = np.zeros((16, 7), np.float32), np.zeros((10, 7), np.float32)
    assert launchers.prepare_gemm_bias_sigmoid(ks, aligned, W7, np.zeros(7, np.float32), a7).args[7:9] == (1, 0)
    assert len(launchers.prepare_gemm_bias_sigmoid(ks, aligned, W, b, a, naive=True).args) == 7     # no flags


def test_the_emulated_device_places_an_array_by_its_size():
    """The emulator ends each array at a guard page, so it lies 16-byte aligned iff its size is a multiple of 16."""
    ks = sources.emulated_kernels()
    assert ks.aligned16(np.zeros((3, 4), np.float32)) and not ks.aligned16(np.zeros((3, 5), np.float32))


def test_step_prepares_a_launch_for_each_alignment_of_x():
    """step() reads the caller's X in place: an X that lies otherwise than the one the step was prepared
    with gets a step of its own (a GPU faults on a 16-byte load from a misaligned address)."""
    net = MLP([16, 4, 2], backend=dry_run_backend([], gemm="own"), seed=0)
    buf = np.zeros(5 * 16 + 1, np.float32)
    y = np.array([0, 1, 0, 1, 1])
    net.step(buf[:80].reshape(5, 16), y, 0.1)
    net.step(buf[1:].reshape(5, 16), y, 0.1)
    net.step(buf[:80].reshape(5, 16), y, 0.1)
    firsts = [next(op for op in plan.launches if op.name.startswith("gemm_bias_sigmoid")) for plan in
              net._step_plans.values()]
    assert [op.args[7] for op in firsts] == [1, 0]


def test_the_parser_finds_the_loop_with_the_most_fmas():
    text = """
        .section .text.k_f32,"ax",@progbits
        /*0000*/                   MOV R1, c[0x0][0x28] ;
        .L_x_1:
        /*0010*/                   FADD R2, R2, 1 ;
        /*0020*/              @P0  BRA `(.L_x_1) ;
        .L_x_2:
        /*0030*/                   LDS.128 R4, [R2] ;
        /*0040*/                   FFMA R8, R4, R5, R8 ;
        /*0050*/                   FFMA R9, R4, R6, R9 ;
        /*0060*/                   IADD3 R2, R2, 0x10, RZ ;
        /*0070*/              @P1  BRA `(.L_x_2) ;
        /*0080*/                   BRA `(.L_x_3) ;
        .L_x_3:
        /*0090*/                   EXIT ;
    """
    loop = sass.parse(text)["k_f32"].main_loop
    assert dict(loop.opcodes) == {"LDS.128": 1, "FFMA": 2, "IADD3": 1, "BRA": 1}
    assert loop.fma_share == 0.4 and loop.ffma_per_shared_load == 2.0
