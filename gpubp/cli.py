"""The ``gpubp`` command.

    gpubp bench --quick                   the benchmark suite (the main job)
    gpubp train --dataset digits          train and report test accuracy
    gpubp check [--gpu] --out DIR         prove the GPU (or the emulated) path, with a report
    gpubp plan --sizes 784,30,10          what one step launches on a GPU, and where its time goes
    gpubp tune --sizes 784,30,10          time the GEMM kernels' tiles and splits on this GPU, keep the fastest
    gpubp gradcheck                       backprop against finite differences
    gpubp info                            version, backends, CUDA devices, NVRTC
"""
from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import signal
import sys
import tempfile
import time

import numpy as np

from ._version import __version__

# Per data set: the network and schedule that reach the accuracy the README promises.
TRAIN_DEFAULTS = {
    "digits": dict(hidden=[64], loss="cross_entropy", epochs=30, batch_size=10, lr=1.0),
    "mnist5k": dict(hidden=[30], loss="cross_entropy", epochs=30, batch_size=10, lr=0.5),
    "mnist": dict(hidden=[30], loss="cross_entropy", epochs=30, batch_size=10, lr=0.5),
    None: dict(hidden=[30], loss="cross_entropy", epochs=30, batch_size=10, lr=0.5),
}


def _int_list(text):
    try:
        values = [int(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError:
        values = None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers like 64,64,10, got {text!r}")
    return values


def _int_at_least(lowest: int, words: str):
    """An argparse type: an int >= ``lowest``, else the error 'expected <words>, got …'."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = lowest - 1
        if value < lowest:
            raise argparse.ArgumentTypeError(f"expected {words}, got {text!r}")
        return value
    return parse


_positive_int = _int_at_least(1, "a positive integer")
_seed = _int_at_least(0, "a non-negative integer")


def _save_uninterrupted(model, path):
    """model.save(path) with Ctrl-C held off: a second Ctrl-C must not abort the save it asked for."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        model.save(path)
    finally:
        signal.signal(signal.SIGINT, previous)


def _save_or_keep(model, path) -> bool:
    """Save to ``path``; if that fails (a full disk, a folder gone), save to a fallback file in the
    current folder, else the temp folder, and say where.  True if ``path`` was written."""
    try:
        _save_uninterrupted(model, path)
        return True
    except OSError as e:
        failure = e
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for folder in (os.getcwd(), tempfile.gettempdir()):
        fallback = os.path.join(folder, f"gpubp-unsaved-model-{stamp}-{os.getpid()}.npz")
        try:
            _save_uninterrupted(model, fallback)
        except OSError:
            continue
        print(f"error: {failure}; the trained model is kept in {fallback} instead (move it where you meant it, "
              f"or load it with MLP.load)", file=sys.stderr)
        return False
    print(f"error: {failure}, and no fallback file could be written in {os.getcwd()} or {tempfile.gettempdir()}: "
          f"the trained model is lost", file=sys.stderr)
    return False


def _check_output_file(flag, path, example):
    """Refuse an output file that cannot be written (``flag``: the option naming it), before training,
    not after it: no name, a folder, a missing folder, a folder that cannot be written."""
    from .validation import InputError

    if not path:
        raise InputError(f"{flag} needs a file name, e.g. {flag} {example}; got ''")
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise InputError(f"{flag} {path} is a folder; give a file name, e.g. {flag} {os.path.join(path, example)}")
    if not os.path.isdir(folder):
        raise InputError(f"{flag} {path}: the folder {folder} does not exist; create it first (mkdir -p {folder})")
    problem = _unwritable_folder(folder)
    if problem:
        raise InputError(f"{flag} {path}: the folder {folder}: {problem}; choose another place")


def _check_save_path(path):
    _check_output_file("--save", path, "model.npz")


def _unwritable_folder(path) -> str | None:
    """Why results cannot be written into folder ``path`` (checked before anything runs), or None."""
    if not path:
        return "give a folder name"
    if os.path.exists(path) and not os.path.isdir(path):
        return "it is a file, not a folder"
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        return f"cannot write there ({e.strerror or e})"
    return None


def _train_setup(args, comm):
    """Everything ``train`` checks and builds before the first step: the output files, the data,
    the network.  (data, sizes, model, epochs, B, lr); raises InputError & co."""
    from . import datasets, parallel
    from .mlp import MLP
    from .validation import InputError

    if args.data_dir is not None and args.dataset != "mnist":
        raise InputError(f"--data-dir is for --dataset mnist (the folder of its IDX files); {args.dataset!r} "
                         f"does not read it: drop --data-dir, or use --dataset mnist")
    if args.download and args.dataset != "mnist":
        raise InputError(f"--download fetches the full MNIST (--dataset mnist); {args.dataset!r} needs no download: "
                         f"drop --download")
    if args.save is not None:
        _check_save_path(args.save)
    if args.plot is not None:
        args.plot = _check_plot_path(args.plot, args.save)
    data = datasets.load(args.dataset, seed=args.seed, data_dir=args.data_dir, download=args.download)
    d = TRAIN_DEFAULTS.get(args.dataset, TRAIN_DEFAULTS[None])
    n_out = data.n_classes
    if args.sizes is None and data.n_labels is not None and n_out > max(2 * data.n_labels, data.n_labels + 10):
        raise InputError(f"the labels of {args.dataset} run to {n_out - 1} but only {data.n_labels} distinct "
                         f"classes appear, which would build a {n_out}-unit output layer; relabel them "
                         f"0..{data.n_labels - 1} (np.unique(y, return_inverse=True)), or pass --sizes ending in "
                         f"{n_out} if that is meant")
    sizes = args.sizes or [data.n_features, *d["hidden"], n_out]
    if sizes[0] != data.n_features or sizes[-1] != n_out:
        raise InputError(f"--sizes {sizes} does not fit the data: it has {data.n_features} features and "
                         f"{n_out} output(s); use --sizes {data.n_features},...,{n_out}")
    if comm is not None:
        parallel.use_own_gpu(comm, args.backend)
    model = MLP(sizes, loss=args.loss or d["loss"], backend=args.backend, seed=args.seed,
                dtype=np.float64 if args.float64 else np.float32)
    epochs = d["epochs"] if args.epochs is None else args.epochs
    B = d["batch_size"] if args.batch_size is None else args.batch_size
    lr = args.lr if args.lr is not None else d["lr"]
    return data, sizes, model, epochs, B, lr


def cmd_train(args) -> int:
    from . import parallel

    comm = None
    if parallel.launched_by_mpi():           # under mpiexec: one rank of a data-parallel fit
        comm = parallel.communicator(parallel.world())
    if comm is None and args.allreduce is not None:
        print("warning: --allreduce only applies to a data-parallel run (mpiexec -n N gpubp train, N > 1); "
              "this run has one process, so it is ignored", file=sys.stderr)
    rank = 0 if comm is None else comm.Get_rank()
    say = print if rank == 0 else (lambda *a, **k: None)     # only rank 0 speaks and saves
    try:
        setup, error = _train_setup(args, comm), None
    except Exception as e:
        if comm is None:
            raise
        setup, error = None, e
    if comm is not None:                     # every rank's setup, agreed on: a failure on one stops all
        parallel.agree(comm, {}, error, where="while setting up gpubp train")
    data, sizes, model, epochs, B, lr = setup
    say(f"gpubp {__version__}: {data.description}")
    from .device import for_command_line
    say(f"network {sizes}, loss {model.cost.name}, backend {for_command_line(model.backend_reason)}, "
        f"{model.dtype.name}")
    say(f"SGD: {epochs} epochs, batch {B}, lr {lr:g}, momentum {args.momentum:g}, weight decay {args.weight_decay:g}")
    if model.backend.xp is np:               # the host's BLAS does the GEMMs: how many threads, and why
        from . import blas
        say(blas.describe(sizes, min(B, len(data.X_train))))
    t0 = time.perf_counter()
    try:
        # one process: SIGTERM (a scheduler's time limit) saves the model as Ctrl-C does; under MPI the
        # launcher's signal handling stands (a rank must not leave the job for a signal the others missed)
        with _sigterm_as_ctrl_c() if comm is None else contextlib.nullcontext():
            hist = model.fit(data.X_train, data.y_train, epochs=epochs, batch_size=B, lr=lr,
                             momentum=args.momentum, weight_decay=args.weight_decay,
                             test_data=(data.X_test, data.y_test),
                             progress=not args.quiet, comm=comm, allreduce=args.allreduce or "auto")
    except KeyboardInterrupt:
        if args.save and rank == 0:          # Ctrl-C keeps what was trained so far
            if _save_or_keep(model, args.save):
                print(f"saved the model as trained so far to {args.save}", file=sys.stderr)
        raise
    seconds = time.perf_counter() - t0
    if model.parallel_reason:
        say(f"data-parallel: {model.parallel_reason}")
    accuracy, n_train = hist.test_accuracy[-1], len(data.X_train)
    say(f"test accuracy {100 * accuracy:.2f}% ({len(data.X_test):,} samples), test loss {hist.test_loss[-1]:.4f}")
    say(f"trained {len(hist.loss)} epochs in {seconds:.2f}s wall time: {len(hist.loss) * n_train / seconds:,.0f} "
          f"samples/s")
    if rank != 0:
        return 0
    status = 0
    if args.save:                            # the model first: nothing written after it can cost it
        if _save_or_keep(model, args.save):
            say(f"model saved to {args.save}")
        else:
            status = 1
    if args.plot:
        try:
            _plot_history(hist, args.plot, f"{args.dataset} {sizes} {model.cost.name}, batch {B}, lr {lr:g}")
        except Exception as e:
            kept = f"the model is saved in {args.save}" if args.save and status == 0 else \
                "the model was not saved (no --save)" if not args.save else "see above for the model"
            print(f"error: the loss and accuracy curves could not be written to {args.plot} "
                  f"({type(e).__name__}: {e}); {kept}", file=sys.stderr)
            return 1
        say(f"loss and accuracy curves: {args.plot}")
    return status


def _check_plot_path(path, save=None) -> str:
    """--plot needs matplotlib, a format it writes (judged by the extension; none means .png, as
    matplotlib appends it) and a writable path that is not --save's: checked before training, not
    after it.  Returns the path the plot will have."""
    from .validation import InputError

    try:
        import matplotlib
        matplotlib.use("Agg")
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise InputError("--plot needs matplotlib, which is not installed: pip install 'gpubp[bench]'") from None
    if path:
        ext = os.path.splitext(path)[1].lower().lstrip(".")
        formats = FigureCanvasAgg(Figure()).get_supported_filetypes()
        if not ext:
            path = f"{path}.{matplotlib.rcParams['savefig.format']}"     # what savefig would write
        if save and os.path.realpath(path) == os.path.realpath(save):
            raise InputError(f"--plot {path} is the file --save writes the model to; give the curves their own "
                             f"file, e.g. --plot curves.png")
        if ext and ext not in formats:
            raise InputError(f"--plot {path}: matplotlib cannot write .{ext} files; use one of "
                             f"{', '.join('.' + f for f in ('png', 'pdf', 'svg'))} (all: "
                             f"{', '.join(sorted(formats))})")
    _check_output_file("--plot", path, "curves.png")
    return path


def _plot_history(hist, path, title):
    """The loss (training and test) and the test accuracy per epoch."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    epochs = np.arange(1, len(hist.loss) + 1)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 4), dpi=110)
    ax.plot(epochs, hist.loss, "o-", label="training")
    ax.plot(epochs, hist.test_loss, "s-", label="test")
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean cost per sample")
    ax.set_title("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    ax2.plot(epochs, 100 * np.asarray(hist.test_accuracy), "o-", color="tab:green")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("test accuracy (%)")
    ax2.set_title(f"test accuracy (last: {100 * hist.test_accuracy[-1]:.2f}%)")
    ax2.set_ylim(max(0.0, 100 * min(hist.test_accuracy) - 5), 100.5)
    ax2.grid(alpha=0.3)
    for a in (ax, ax2):
        a.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def cmd_gradcheck(args) -> int:
    from .gradcheck import gradcheck

    losses = ["mse", "cross_entropy"] if args.loss == "both" else [args.loss]
    ok = True
    for loss in losses:
        result = gradcheck(args.sizes, loss=loss, batch=args.batch, seed=args.seed, backend=args.backend)
        print(result)
        ok &= result.passed
    return 0 if ok else 1


def cmd_info(args) -> int:
    from .device import cuda_status

    print(f"gpubp {__version__}")
    print(f"python {platform.python_version()} on {platform.machine()}, numpy {np.__version__}")
    ok, why = cuda_status()
    print("backend numpy: available")
    cxx = shutil.which("g++") or shutil.which("c++")
    print(f"backend emulated: {'available (C++ compiler ' + cxx + ')' if cxx else 'unavailable: no C++ compiler (apt-get install g++)'}")
    from .device import for_command_line
    print(f"backend cupy: {'available' if ok else 'unavailable'}: {for_command_line(why)}")
    from .device import notes
    for note in notes:
        print(f"note: {note}")
    try:
        import cupy
        print(f"cupy {cupy.__version__}, CUDA runtime {cupy.cuda.runtime.runtimeGetVersion()}")
    except Exception:
        pass
    try:
        from .cuda import nvrtc
        print(f"NVRTC {'.'.join(map(str, nvrtc.version()))} from {nvrtc.library_path()} (kernels compile for {', '.join(nvrtc.ARCHS)})")
    except Exception as e:
        print(f"NVRTC: unavailable: {e}")
    from .backend import get_backend
    print(f"backend='auto' picks: {for_command_line(get_backend('auto')[1])}")
    from . import blas
    print(blas.describe())
    from .parallel import mpi_library
    mpi = mpi_library()
    print(f"MPI: {mpi}" if mpi else "MPI: mpi4py is not installed (pip install 'gpubp[mpi]' for mpiexec -n N gpubp train)")
    return 0


@contextlib.contextmanager
def _sigterm_as_ctrl_c():
    """While the block runs, SIGTERM (a time limit's, a scheduler's) raises KeyboardInterrupt("SIGTERM"), as
    Ctrl-C does, so that long work (bench, tune, check) keeps what it finished and says where it stopped."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def cmd_bench(args) -> int:
    from . import bench
    from .device import cuda_status

    ok, why = cuda_status()
    backends = [b for b in args.backend.split(",") if b] if args.backend else None
    for b in backends or ():
        if b not in ("numpy", "cupy"):
            print(f"error: bench times the numpy and cupy backends, not {b!r}"
                  + (" (the emulated device is for correctness: it runs every CUDA thread as a fiber)"
                     if b == "emulated" else ""), file=sys.stderr)
            return 2
    try:
        nets = bench.parse_sizes(args.sizes) if args.sizes is not None else None
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    groups = [g.strip() for g in args.groups.split(",") if g.strip()]
    unknown = sorted(set(groups) - set(bench.GROUPS)) if groups else ["(none)"]
    if unknown:
        print(f"error: --groups {args.groups!r}: unknown group(s) {', '.join(unknown)}; the groups are "
              f"{','.join(bench.GROUPS)}", file=sys.stderr)
        return 2
    problem = _unwritable_folder(args.out)
    if problem:
        print(f"error: --out {args.out}: {problem}; nothing was timed", file=sys.stderr)
        return 2
    from .bench.report import fit_lines
    from .device import for_command_line

    def say(text):                          # every line within 200 characters, the fixes as flags
        print(fit_lines(for_command_line(text)), flush=True)
    say(f"gpubp {__version__} benchmark suite{' (quick)' if args.quick else ''}")
    say(f"GPU: {why}" if ok else f"GPU rows are empty: {why}")
    t0 = time.perf_counter()
    with _sigterm_as_ctrl_c():              # interrupted, it returns the rows timed so far
        report = bench.run(backends=backends, nets=nets, quick=args.quick, groups=groups, log=say)
    interrupted = report.machine.get("interrupted")
    if not interrupted:
        print()
        say(bench.terminal(report, said=() if ok else (why,)))
    paths = bench.write(report, args.out)
    files = ", ".join(v for k, v in paths.items() if k != "note")
    if interrupted:
        print(f"{interrupted}: the rows timed are in {files}", file=sys.stderr)
        return 130
    say(f"\nfull detail (bytes, flops, GB/s, spread, every round's time) in {files}; "
        f"{time.perf_counter() - t0:.0f}s")
    if "note" in paths:
        print(paths["note"])
    failed = bench.failures(report)
    if failed:
        print(f"\n{len(failed)} case(s) FAILED (listed above, with the reason; their rows are not timed)",
              file=sys.stderr)
        return 1
    return 0


def _backend_options(text):
    """--backend-options: JSON ('{"gemm": "own"}') or key=value pairs ('gemm=own,cuda_graph=true')."""
    import json
    text = text.strip()
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as e:
            raise argparse.ArgumentTypeError(f"not valid JSON ({e.msg}): {text!r}") from None
        if not isinstance(value, dict):
            raise argparse.ArgumentTypeError(f"expected a JSON object like '{{\"gemm\": \"own\"}}', got {text!r}")
        return value
    options = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        key, eq, raw = part.partition("=")
        if not eq or not key.strip():
            raise argparse.ArgumentTypeError(f"expected key=value pairs like gemm=own,cuda_graph=true, got {part!r}")
        raw = raw.strip()
        low = raw.lower()
        options[key.strip()] = True if low == "true" else False if low == "false" else \
            int(raw) if raw.lstrip("-").isdigit() else raw
    return options


def cmd_plan(args) -> int:
    from . import plan

    result = plan.plan(args.sizes, args.batch, loss=args.loss, options=args.backend_options, device=args.device,
                       dtype=np.float64 if args.float64 else np.float32)
    if args.json:
        import json
        print(json.dumps(result.as_dict(), indent=1))
    else:
        print(plan.render(result))
    return 0


def _net_arguments(parser, float64_help: str) -> None:
    """--sizes, --batch, --float64: the net and step that gpubp plan and gpubp tune look at."""
    parser.add_argument("--sizes", type=_int_list, default=[784, 30, 10], help="layer widths (default 784,30,10)")
    parser.add_argument("--batch", type=_positive_int, default=10, help="mini-batch size (default 10)")
    parser.add_argument("--float64", action="store_true", help=float64_help)


def cmd_tune(args) -> int:
    from . import tune
    from .backend import get_backend

    bk, _ = get_backend("cupy")                 # DeviceUnavailable (exit 2) names why, and no_device_fix what to do
    dtype = np.float64 if args.float64 else np.float32
    print(f"gpubp tune: the GEMM launches of a step of {args.sizes}, batch {args.batch}, {np.dtype(dtype).name}")
    with _sigterm_as_ctrl_c():              # interrupted, it keeps the shapes timed so far
        path, timed, interrupted = tune.tune_and_keep(bk, args.sizes, args.batch, dtype,
                                                      log=lambda line: print(line, flush=True))
    if interrupted:
        print(f"interrupted by {interrupted}: the {timed} shape(s) timed before it are kept in {path}; run gpubp "
              f"tune again for the rest", file=sys.stderr)
        return 130
    print(f"kept in {path} (read by the cupy backend; gemm='auto' picks own or cuBLAS by it)")
    return 0


def cmd_check(args) -> int:
    from .check.run import PARTS, run

    parts = [p.strip() for p in args.part.split(",") if p.strip()] if args.part is not None else list(PARTS)
    if not parts:
        print(f"error: --part {args.part!r} names no part; give one or more of {', '.join(PARTS)} (or leave "
              f"--part out to run them all)", file=sys.stderr)
        return 2
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        print(f"error: unknown --part {', '.join(unknown)}; the parts are {', '.join(PARTS)}", file=sys.stderr)
        return 2
    problem = _unwritable_folder(args.out)
    if problem:
        print(f"error: --out {args.out}: {problem}", file=sys.stderr)
        return 2
    log = (lambda line: None) if args.quiet else (lambda line: print(line, flush=True))
    try:
        with _sigterm_as_ctrl_c():          # interrupted, the report names the part it hit
            result = run(args.gpu, args.out, parts=parts, log=log)
    except KeyboardInterrupt:
        print(f"interrupted; the report of the parts so far: {os.path.join(args.out, 'check.md')}", file=sys.stderr)
        return 130
    if not args.quiet or not result["passed"]:
        print(f"\ngpubp check{' --gpu' if args.gpu else ''}: {'PASS' if result['passed'] else 'FAIL'} "
              f"in {result['seconds']:.0f} s")
        for part in result["parts"]:
            text = part.get("why") or part.get("summary") or ""
            print(f"  {part['name']:12} {part['status']:8} {text if len(text) < 160 else text[:157] + '...'}")
        print(f"report: {result['paths']['md']}, {result['paths']['json']}")
    env = next((p for p in result["parts"] if p["name"] == "environment"), None)
    if args.gpu and env is not None and env["status"] == "FAIL":
        print(f"error: {env['why']}", file=sys.stderr)
    return 0 if result["passed"] else 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gpubp", description="Backpropagation for sigmoid MLPs on NumPy and CUDA.")
    p.add_argument("--version", action="version", version=f"gpubp {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a network on a data set and report test accuracy")
    t.add_argument("--dataset", default="digits",
                   help="digits (default), mnist5k, mnist (the full 60k/10k), or a path to an .npz with X and y")
    t.add_argument("--data-dir", metavar="DIR", help="mnist: the folder with its four IDX files (default: $GPUBP_DATA)")
    t.add_argument("--download", action="store_true",
                   help="mnist: fetch OpenML's mnist_784 with scikit-learn when the IDX files are not found")
    t.add_argument("--plot", metavar="FILE.png", help="draw the loss and accuracy curves per epoch")
    t.add_argument("--allreduce", default=None, choices=["auto", "host", "pinned", "nccl", "cuda-aware"],
                   help="under mpiexec: how the ranks' gradients are summed (default auto: NCCL when every rank "
                        "has its own GPU and NCCL is installed, else MPI; cuda-aware only if your MPI is)")
    t.add_argument("--sizes", type=_int_list, help="layer widths, e.g. 64,64,10 (default: per data set)")
    t.add_argument("--loss", choices=["mse", "cross_entropy"],
                   help="cost (default here: cross_entropy, which learns faster with sigmoid outputs; MLP()'s "
                        "default in Python is mse, as Nielsen's network.py)")
    t.add_argument("--epochs", type=_positive_int)
    t.add_argument("--batch-size", type=_positive_int)
    t.add_argument("--lr", type=float, help="learning rate η")
    t.add_argument("--momentum", type=float, default=0.0)
    t.add_argument("--weight-decay", type=float, default=0.0, help="L2 weight decay λ")
    t.add_argument("--backend", default="auto", choices=["auto", "numpy", "emulated", "cupy"])
    t.add_argument("--float64", action="store_true", help="train in float64 (default float32)")
    t.add_argument("--seed", type=_seed, default=0)
    t.add_argument("--save", metavar="PATH", help="write the trained model to PATH (.npz)")
    t.add_argument("--quiet", action="store_true", help="no per-epoch lines or progress bar")
    t.set_defaults(func=cmd_train)

    g = sub.add_parser("gradcheck", help="check backprop against central finite differences (float64)")
    g.add_argument("--sizes", type=_int_list, default=[3, 4, 2])
    g.add_argument("--loss", choices=["mse", "cross_entropy", "both"], default="both")
    g.add_argument("--batch", type=_positive_int, default=5)
    g.add_argument("--seed", type=_seed, default=0)
    g.add_argument("--backend", default="numpy", choices=["numpy", "emulated"])
    g.set_defaults(func=cmd_gradcheck)

    b = sub.add_parser("bench", help="the benchmark suite: CPU against GPU, kernels against unfused, steps against the GEMM floor")
    b.add_argument("--backend", help="comma-separated gpubp backends to time (default: numpy, and cupy if a GPU answers)")
    b.add_argument("--sizes", help="nets as 'w0,w1,...:batch' separated by ';' (default: "
                   "784,30,10:10;784,256,256,10:128;784,1024,1024,10:512)")
    b.add_argument("--groups", default="step,kernel,e2e,threads,dp,host",
                   help="which groups of cases (default: all: step,kernel,e2e,threads,dp,host)")
    b.add_argument("--quick", action="store_true", help="shorter timing (about a minute on 2 CPU cores: 50 s "
                   "on this project's machine, 2026-12-02)")
    b.add_argument("--out", default="bench-out", help="folder for bench.json, bench.md, bench.png (default: bench-out)")
    b.set_defaults(func=cmd_bench)

    pl = sub.add_parser("plan", help="what one training step launches on a GPU and where its time goes (no GPU needed)",
                        description="Runs one training step on a dry-run kernel backend (the cupy backend's launch "
                                    "path, kernels that only write themselves down) and lists every launch: grid, "
                                    "block, shared memory, registers (NVRTC), FLOPs and bytes, blocks per SM and "
                                    "the share of the SMs filled, a modeled time; then the step's host cost "
                                    "(measured here) against its modeled device time.")
    _net_arguments(pl, "a float64 step (default float32)")
    pl.add_argument("--loss", choices=["mse", "cross_entropy"], default="cross_entropy")
    pl.add_argument("--backend-options", type=_backend_options, default={}, metavar="OPTIONS",
                    help="kernel backend options: gemm=own,cuda_graph=true or JSON")
    modeled = ["h100", "h200", "a100", "l4", "rtx4090"]                 # plan.GPUS (a test keeps them one list)
    pl.add_argument("--device", default="h100", choices=[*modeled, "current"],
                    help="the GPU whose public figures the model uses (current: this machine's device 0)")
    pl.add_argument("--json", action="store_true", help="the plan as JSON")
    pl.set_defaults(func=cmd_plan, no_device_fix=f"name the GPU to model instead (--device {', '.join(modeled)})")

    tu = sub.add_parser("tune", help="time the GEMM kernels' tile sets and splits on this GPU and keep the fastest",
                        description="Times gpubp's GEMM kernels (every tile set and split-K) and cuBLAS on the "
                                    "GEMM shapes of one training step of the net, with CUDA events, and keeps the "
                                    "winners in a table per device, CUDA version and gpubp version, which the cupy "
                                    "backend then uses (and gemm='auto' to pick gpubp's kernel or cuBLAS). Needs a "
                                    "GPU; refused on the emulated device.")
    _net_arguments(tu, "tune the float64 kernels (default float32)")
    tu.set_defaults(func=cmd_tune, no_device_fix="run gpubp tune where there is a GPU (it times the kernels with "
                                                 "CUDA events); on this machine, gpubp plan models the same "
                                                 "step's launches")

    c = sub.add_parser("check", help="prove the GPU path (--gpu) or the CPU/emulated path, and write a report",
                       description="One offline command: environment, every kernel against its float64 reference, "
                                   "fit parity against NumPy, NVRTC budgets; with --gpu also pytest -m gpu, "
                                   "compute-sanitizer and the quick benchmark. Runs from a source checkout with "
                                   "PYTHONPATH=. and nothing to install.")
    c.add_argument("--gpu", action="store_true", help="check the cupy backend on this machine's CUDA device")
    c.add_argument("--out", default="check-out", help="folder for check.json, check.md (default: check-out)")
    from .check.run import PARTS
    c.add_argument("--part", help=f"comma-separated parts to run, in the order given (environment always first; "
                                  f"with a time limit, what matters most first); default: all, {','.join(PARTS)}")
    c.add_argument("--quiet", action="store_true", help="no progress lines; the summary only if something failed")
    c.set_defaults(func=cmd_check)

    i = sub.add_parser("info", help="version, available backends, CUDA devices, NVRTC")
    i.set_defaults(func=cmd_info)
    return p


def main(argv=None) -> int:
    from .datasets import DatasetUnavailable
    from .device import DeviceUnavailable
    from .mlp import TrainingDiverged
    from .validation import InputError

    from .parallel import RankFailed, reporter_of, this_rank

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (InputError, DatasetUnavailable, DeviceUnavailable, TrainingDiverged, RankFailed) as e:
        reporter = reporter_of(e)            # raised alike on every rank of an MPI job: one rank prints it
        if reporter is None or reporter == this_rank():
            from .device import for_command_line
            fix = getattr(args, "no_device_fix", None)         # a command without --backend says its own fix
            print(f"error: {for_command_line(str(e), *([fix] if fix else []))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
