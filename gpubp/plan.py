"""``gpubp plan``: what one training step launches on a GPU, and where its time goes, without a GPU.

A step is run on a dry-run kernel backend (``gpubp.cuda.dryrun``): the real
launch path of the cupy backend (the same launchers, the same prepared step),
with kernels and array-module calls that only write themselves down.  For
each launch the plan gives

    kernel, grid, block, shared memory     from the launch itself
    registers                              from NVRTC's cubin for the device's arch (when installed)
    FLOPs, bytes                           from the launcher's record (``launchers.SPECS``) at its (B, I, O);
                                           for array calls (gather, cuBLAS GEMM, reductions) from their shapes
    blocks per SM, SM fill                 occupancy at those registers and that shared memory, and the
                                           share of the device's SMs the grid's blocks cover
    modeled µs                             max(FLOPs / (peak · fill), bytes / (bandwidth · fill), floor)

and per step: the launches, the host cost (measured here: one step with every
kernel and array call a no-op, in µs and in this host's ``np.int32()`` calls),
the modeled device time, and which of the two bounds the step.  Everything
under "modeled" is napkin math from the public figures in :data:`GPUS`;
only the host cost is measured.
"""
from __future__ import annotations

import gc
import math
import time
import timeit
from dataclasses import asdict, dataclass, field

import numpy as np

from .cuda import launchers
from .cuda.dryrun import dry_run_backend, entries
from .mlp import MLP


@dataclass(frozen=True)
class GPU:
    """The public figures of one GPU that the napkin math needs."""
    name: str
    arch: str                   # the sm_XY NVRTC compiles for
    sms: int
    fp32_tflops: float          # peak FP32 (non-tensor) TFLOP/s
    bandwidth_gbs: float        # peak memory bandwidth, GB/s
    source: str = ""


#: Public figures.  Threads, registers and shared memory per SM are the arch's (gpubp.cuda.nvrtc.SMS,
#: from CUDA's occupancy tables); the rest from NVIDIA's data sheets, as noted.
GPUS = {
    # H100 SXM5: 132 SMs, 67 TFLOP/s FP32, 3.35 TB/s HBM3 (NVIDIA H100 Tensor Core GPU data sheet, 2023)
    "h100": GPU("NVIDIA H100 SXM5", "sm_90", 132, 67.0, 3350.0, "NVIDIA H100 data sheet"),
    # H200 SXM: the H100's GH100 (132 SMs), 67 TFLOP/s FP32, 4.8 TB/s HBM3e (NVIDIA H200 data sheet, 2024)
    "h200": GPU("NVIDIA H200 SXM", "sm_90", 132, 67.0, 4800.0, "NVIDIA H200 data sheet"),
    # A100 SXM4 80 GB: 108 SMs, 19.5 TFLOP/s FP32, 2.039 TB/s HBM2e (NVIDIA A100 data sheet, 2021)
    "a100": GPU("NVIDIA A100 SXM4 80GB", "sm_80", 108, 19.5, 2039.0, "NVIDIA A100 data sheet"),
    # L4: 58 SMs, 30.3 TFLOP/s FP32, 300 GB/s GDDR6 (NVIDIA L4 data sheet, 2023)
    "l4": GPU("NVIDIA L4", "sm_89", 58, 30.3, 300.0, "NVIDIA L4 data sheet"),
    # RTX 4090: 128 SMs, 82.6 TFLOP/s FP32, 1008 GB/s GDDR6X (NVIDIA Ada Lovelace architecture whitepaper)
    "rtx4090": GPU("NVIDIA GeForce RTX 4090", "sm_89", 128, 82.6, 1008.0, "NVIDIA Ada whitepaper"),
}

#: the modeled time below which no launch finishes: launch latency and a small kernel's ramp-up and
#: drain (a few µs eagerly; about 1.3 µs of dead time a kernel even inside a CUDA graph)
FLOOR_US = {"eager": 2.5, "graph": 1.3}


def current_gpu() -> GPU:
    """This machine's device 0: its figures read through CuPy (peaks from clocks and bus width), or the
    table's when the name matches.  Raises DeviceUnavailable without a device."""
    from .device import gpu_name, require_cupy
    cupy = require_cupy()
    rt = cupy.cuda.runtime
    props = rt.getDeviceProperties(0)
    name = gpu_name(props)
    arch = f"sm_{props['major']}{props['minor']}"
    for gpu in GPUS.values():
        if gpu.name.split()[-1].lower() in name.lower().replace("-", " ") and gpu.arch == arch:
            return GPU(name, arch, props["multiProcessorCount"], gpu.fp32_tflops, gpu.bandwidth_gbs,
                       f"this device; peaks from the {gpu.source}")
    sms = props["multiProcessorCount"]
    clock_khz = props.get("clockRate") or rt.deviceGetAttribute(13, 0)
    mem_khz = props.get("memoryClockRate") or rt.deviceGetAttribute(36, 0)
    bus_bits = props.get("memoryBusWidth") or rt.deviceGetAttribute(37, 0)
    lanes = 64 if arch in ("sm_75", "sm_80") else 128            # FP32 lanes per SM
    return GPU(name, arch, sms, sms * lanes * 2 * clock_khz * 1e3 / 1e12, 2 * mem_khz * 1e3 * bus_bits / 8 / 1e9,
               "this device: peaks from its clocks and memory bus width")


# -- one step, dry ----------------------------------------------------------------------------------

def _data(model, B, seed=0):
    rng = np.random.default_rng(seed)
    n = 2 * B
    y = rng.integers(0, max(2, model.sizes[-1]), n) if model.sizes[-1] > 1 else rng.integers(0, 2, n)
    return model.to_device(rng.random((n, model.sizes[0])), y)


@dataclass
class DryStep:
    """One launch of ``fit`` on a dry-run backend: a step, or K steps where the fused step runs K a launch
    (``K``); ``log`` holds what it launched (gpubp.cuda.dryrun)."""
    model: MLP
    step: object
    order: object
    losses: object
    B: int
    log: list
    K: int = 1

    def __call__(self, k=0) -> None:
        B, K, j = self.B, self.K, k % 2
        if K == 1:
            self.step(self.order[j * B:(j + 1) * B], loss_row=self.losses[j])
        else:                                          # as fit: K steps' rows, a row of costs each
            self.step.many(self.order[j * K * B:(j + 1) * K * B], self.losses[j * K:(j + 1) * K])


def dry_step(sizes, B, loss="cross_entropy", options=None, dtype=np.float32, arch="sm_90", sms=132) -> DryStep:
    """A model on a dry-run backend for a device of ``arch``, its stepper, and one recorded launch (the first,
    which prepares it); ``log`` then holds what a second launch launched, as fit makes it."""
    log = []
    model = MLP(sizes, loss=loss, backend=dry_run_backend(log, arch=arch, sms=sms, **(options or {})), dtype=dtype,
                seed=0)
    K = model._steps_per_launch(B, 0.0, 1 << 30)       # as fit: K steps a launch where the fused step runs
    X, Y = _data(model, K * B)
    step = model.stepper(X, Y, lr=0.1)
    order = step.order(np.arange(2 * K * B))
    losses = model.backend.zeros((2 * K, B), model.dtype)
    dry = DryStep(model, step, order, losses, B, log, K)
    with np.errstate(all="ignore"):                    # no kernel writes: array calls may read scratch garbage
        dry(0)                                         # the step is recorded (prepared) here
    del log[:]
    with model.backend.no_op_arrays():
        dry(1)
    return dry


def int32_call_s() -> float:
    """This host's ``np.int32()`` call, in seconds (the unit that makes host costs comparable)."""
    return min(timeit.repeat("int32(5)", globals={"int32": np.int32}, number=20000, repeat=7)) / 20000


def host_cost(dry: DryStep, min_time=0.2, repeat=5) -> float:
    """Seconds of host time one step costs with every kernel and array call a no-op (best of ``repeat``
    timings of at least ``min_time`` each): gpubp's own Python, no device and no array library (a launch
    of K fused steps counts K steps)."""
    return min(host_times(dry, min_time, repeat))


def host_times(dry: DryStep, min_time=0.2, repeat=5) -> list[float]:
    """Seconds a step, each of ``repeat`` timings of at least ``min_time / 4`` (see :func:`host_cost`)."""
    log = dry.log
    collecting = gc.isenabled()
    gc.disable()                     # as timeit does: the log's tuples would trigger collections of their own
    try:
        return _timed(dry, log, min_time, repeat)
    finally:
        if collecting:
            gc.enable()


def _timed(dry: DryStep, log: list, min_time: float, repeat: int) -> list[float]:
    with dry.model.backend.no_op_arrays():
        n = 1
        while True:
            t0 = time.perf_counter()
            for k in range(n):
                dry(k)
            elapsed = time.perf_counter() - t0
            del log[:]
            if elapsed >= min_time / 4 or n >= 1 << 20:
                break
            n *= 2
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            for k in range(n):
                dry(k)
            times.append((time.perf_counter() - t0) / (n * dry.K))
            del log[:]
    return times


# -- the napkin model ---------------------------------------------------------------------------------

@dataclass
class PlannedLaunch:
    kind: str                   # "kernel" or "array"
    name: str
    grid: tuple = ()
    block: tuple = ()
    shared_mem: int = 0
    registers: int | None = None
    blocks: int | None = None
    blocks_per_sm: int | None = None
    sm_fill: float | None = None
    flops: float = 0.0
    bytes: float = 0.0
    modeled_us: float = 0.0
    bound: str = ""             # what bounds its modeled time: "compute", "memory", "floor"
    note: str = ""


@dataclass
class Plan:
    sizes: list
    B: int
    loss: str
    options: dict
    dtype: str
    gpu: dict
    launches: list = field(default_factory=list)
    host_us: float = 0.0        # measured here, a step
    host_units: float = 0.0     # the same in np.int32() calls of this host
    int32_ns: float = 0.0
    device_us: float = 0.0      # modeled, the launches listed (a step, or K steps of the fused step)
    bound: str = ""
    graph: bool = False
    step: str = ""              # which training step runs, and why (the model's backend_reason says the same)
    steps_per_launch: int = 1   # fit's steps a launch (K > 1: the fused step)

    def as_dict(self) -> dict:
        return asdict(self)


def _registers(gpu: GPU, name: str, defines) -> int | None:
    """ptxas's register count for kernel ``name`` on the GPU's arch (None without NVRTC)."""
    try:
        from .cuda import nvrtc
        if not nvrtc.available()[0]:
            return None
        if defines:
            from .cuda import sources
            return nvrtc.compile_family(sources.family_of(name), gpu.arch, defines).resources[name].registers
        return nvrtc.resources(gpu.arch)[name].registers
    except Exception:
        return None


def _blocks_per_sm(gpu: GPU, threads: int, registers: int | None, smem: int) -> int | None:
    from .cuda import nvrtc
    if gpu.arch not in nvrtc.SMS or registers is None:
        return None
    occ = nvrtc.occupancy(gpu.arch, threads, registers, smem)
    warps = -(-threads // 32)
    return int(round(occ * (nvrtc.SMS[gpu.arch].max_threads // 32) / warps))


def _array_napkin(entry, itemsize) -> tuple[float, float, str]:
    """(flops, bytes, note) of an array-module call from its arrays' shapes."""
    shapes = entry.shapes
    size = lambda s: math.prod(s) if s else 1                   # noqa: E731
    if entry.name == "matmul" and len(shapes) >= 2:
        (M, K), (_, N) = shapes[0][-2:], shapes[1][-2:]
        return 2.0 * M * K * N, (M * K + K * N + M * N) * itemsize, "cuBLAS GEMM"
    if entry.name == "take" and len(shapes) >= 3:
        rows = size(shapes[2])
        return 0.0, 2.0 * rows * itemsize + size(shapes[1]) * 8, "gather (CuPy take)"
    total = sum(size(s) for s in shapes)
    return float(total), total * itemsize, f"CuPy {entry.name}"


def plan(sizes, B, loss="cross_entropy", options=None, device="h100", dtype=np.float32, measure=True) -> Plan:
    """The plan of one training step of ``MLP(sizes)`` on batches of ``B`` (see the module's docstring)."""
    options = dict(options or {})
    gpu = GPUS[device] if device != "current" else current_gpu()
    dry = dry_step(sizes, B, loss, options, dtype, gpu.arch, gpu.sms)
    itemsize = np.dtype(dtype).itemsize
    graph = bool(options.get("cuda_graph"))
    floor = FLOOR_US["graph" if graph else "eager"]
    launches = []
    (prepared,) = [s for s in dry.step.prepared if len(s.launches)] or [None]
    kernels = iter(prepared.launches if prepared is not None else ())   # the Launches, in the log's order
    for entry in entries(dry.log):
        p = PlannedLaunch(entry.kind, entry.name, entry.grid, entry.block, entry.shared_mem)
        if entry.kind == "kernel":
            op = next(kernels, None)
            if op is not None and op.name != entry.name:
                raise RuntimeError(f"the dry run launched {entry.name} where its prepared step holds {op.name}")
            threads = math.prod(entry.block)
            p.blocks = math.prod(entry.grid)
            defines = op.defines if op is not None else options.get("defines")    # the launch's own build
            p.registers = _registers(gpu, entry.name, defines)
            p.shared_mem = _static_smem(entry.name, op) + entry.shared_mem
            p.blocks_per_sm = _blocks_per_sm(gpu, threads, p.registers, p.shared_mem)
            spec = launchers.SPECS.get(op.spec) if op is not None else None
            if op is not None and op.spec == "fused_step":          # dims: (B, rows, n_0, …, n_L)
                fused_bytes, _unfused, flops = launchers.fused_step_napkin(op.dims, itemsize)
                p.flops, p.bytes = float(flops), float(fused_bytes)
                p.note = f"the whole step, one block ({'weights in shared memory' if op.args[-1] else 'weights in global memory'})"
            elif spec is not None and op.dims is not None:
                fused_bytes, _unfused, flops = spec.napkin(*op.dims, itemsize)
                p.flops, p.bytes = float(flops), float(fused_bytes)
        else:
            p.flops, p.bytes, p.note = _array_napkin(entry, itemsize)
            p.blocks = None
        fill = 1.0 if p.blocks is None else min(1.0, p.blocks / gpu.sms)
        p.sm_fill = None if p.blocks is None else fill
        compute = p.flops / (gpu.fp32_tflops * 1e12 * fill) * 1e6
        memory = p.bytes / (gpu.bandwidth_gbs * 1e9 * fill) * 1e6
        p.modeled_us = max(compute, memory, floor)
        p.bound = "floor" if p.modeled_us == floor else ("compute" if compute >= memory else "memory")
        launches.append(p)
    result = Plan(list(sizes), B, loss, options, np.dtype(dtype).name, asdict(gpu), launches, graph=graph)
    result.device_us = sum(p.modeled_us for p in launches)
    result.step = dry.model.backend_reason.partition("; training step: ")[2]
    result.steps_per_launch = dry.K                  # the launches above run K steps (K > 1: the fused step)
    if measure:
        unit = int32_call_s()
        result.host_us = host_cost(dry) * 1e6
        result.int32_ns, result.host_units = unit * 1e9, result.host_us * 1e-6 / unit
    result.bound = "host" if result.host_us > result.device_us / dry.K else "device"
    return result


def _static_smem(name: str, op) -> int:
    """The static shared memory of a kernel at the tunables it was compiled with, from its launcher's budget."""
    if op is None or op.spec not in launchers.SPECS:
        return 0
    from .cuda import sources
    spec = launchers.SPECS[op.spec]
    fast, naive = spec.budgets({**sources.defaults(spec.family), **op.defines}, 8 if name.endswith("f64") else 4)
    return (naive if "_naive" in name else fast).smem


# -- the report -----------------------------------------------------------------------------------------

def _si(x: float, unit: str) -> str:
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if x >= scale:
            return f"{x / scale:.3g} {prefix}{unit}"
    return f"{x:.3g} {unit}"


def render(p: Plan) -> str:
    """The plan as the terminal shows it."""
    g = p.gpu
    opts = ", ".join(f"{k}={v!r}" for k, v in p.options.items()) or "defaults"
    lines = [f"one training step of {p.sizes}, batch {p.B}, {p.loss}, {p.dtype}, backend options: {opts}",
             f"device (modeled): {g['name']}, {g['arch']}, {g['sms']} SMs, {g['fp32_tflops']:g} FP32 TFLOP/s, "
             f"{g['bandwidth_gbs']:g} GB/s ({g['source']}); floor {FLOOR_US['graph' if p.graph else 'eager']} µs a "
             f"launch{' (inside a CUDA graph)' if p.graph else ''}", ""]
    head = f"{'#':>2}  {'launch':30} {'grid':>12} {'block':>9} {'smem':>6} {'regs':>4} {'blocks':>6} {'/SM':>3} " \
           f"{'SM fill':>7} {'FLOP':>9} {'bytes':>9} {'modeled':>9}  bound"
    lines += [head, "-" * len(head)]
    for i, q in enumerate(p.launches, 1):
        name = q.name if q.kind == "kernel" else f"xp.{q.name} ({q.note})"
        grid = "x".join(map(str, q.grid)) if q.grid else "-"
        block = "x".join(map(str, q.block)) if q.block else "-"
        lines.append(f"{i:>2}  {name[:30]:30} {grid:>12} {block:>9} {q.shared_mem if q.kind == 'kernel' else '-':>6} "
                     f"{q.registers if q.registers is not None else '-':>4} "
                     f"{q.blocks if q.blocks is not None else '-':>6} "
                     f"{q.blocks_per_sm if q.blocks_per_sm is not None else '-':>3} "
                     f"{f'{q.sm_fill:.1%}' if q.sm_fill is not None else '-':>7} {_si(q.flops, ''):>9} "
                     f"{_si(q.bytes, 'B'):>9} {q.modeled_us:>7.2f} µs  {q.bound}")
    kernels = sum(q.kind == "kernel" for q in p.launches)
    K, n = p.steps_per_launch, len(p.launches)
    per = "per step" if K == 1 else f"per {K} steps (fit runs them in one launch: steps_per_launch)"
    lines += ["", f"training step: {p.step}" if p.step else "training step: the numpy backend's own ops",
              f"{per}: {n} launch{'es' if n != 1 else ''} ({kernels} kernel{'s' if kernels != 1 else ''}, "
              f"{n - kernels} array calls)" + (", replayed as one CUDA graph" if p.graph else "")]
    device_step = p.device_us / K
    if p.host_us:
        lines.append(f"  host (measured here, every launch a no-op): {p.host_us:.2f} µs a step = {p.host_units:.1f} "
                     f"np.int32() calls of this host ({p.int32_ns:.0f} ns each), "
                     f"{p.host_units * K / max(1, n):.1f} a launch; CuPy's own cost of each call comes on top on a "
                     f"GPU (not measured here)")
    lines.append(f"  device (modeled): {p.device_us:.1f} µs" + (f" a launch, {device_step:.2f} µs a step" if K > 1 else ""))
    if p.host_us:
        lines.append(f"  bound by the {p.bound}: a step takes at least {max(p.host_us, device_step):.2f} µs "
                     f"(the host's Python and the device run side by side; the slower sets the pace)")
    starved = [q for q in p.launches if q.sm_fill is not None and q.sm_fill < 0.25]
    if starved:
        lines.append(f"  {len(starved)} launch(es) fill under a quarter of the {g['sms']} SMs: "
                     + "; ".join(f"{q.name} {q.blocks} block{'s' if q.blocks != 1 else ''}" for q in starved[:4]))
    return "\n".join(lines)
