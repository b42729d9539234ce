"""gpubp tune (issue 21, part 4): the tuner's logic on the CPU with a fake timer (a dry-run backend: the
launch path of the cupy backend, nothing launched), the table's file, the backends reading it (tile set,
split-K, gemm="auto"), and the refusals (the emulated device, no GPU)."""
import json

import numpy as np
import pytest

from gpubp import MLP, InputError
from gpubp import tune as gtune
from gpubp.cli import main
from gpubp.cuda import launchers, nvrtc, tuning
from gpubp.cuda.dryrun import dry_run_backend, entries


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUBP_CACHE_DIR", str(tmp_path))
    return tmp_path / "tune"


def test_a_steps_gemm_shapes():
    assert gtune.gemm_shapes([784, 30, 10], 10) == [
        ("forward_gemm", 10, 30, 784), ("forward_gemm", 10, 10, 30), ("backward_gemm", 10, 30, 10),
        ("weight_grad", 30, 10, 10), ("weight_grad", 784, 30, 10)]


@pytest.mark.skipif(not nvrtc.available()[0], reason="NVRTC is not installed")
@pytest.mark.parametrize("tiles", tuning.TILE_SETS, ids=lambda t: "-".join(f"{k}{v}" for k, v in t.items()))
def test_every_tile_set_the_tuner_tries_compiles_without_spills(tiles):
    for arch in ("sm_75", "sm_90", "sm_120"):
        assert nvrtc.tunable_problems(tiles, arch) == []


def fake_timer(costs):
    """A timer whose answer is costs(what): the tuner's choice is then known in advance."""
    calls = []

    def timer(fn, what):
        fn()                                  # the launch must be callable (a no-op on the dry run)
        calls.append(what)
        return costs(what)
    timer.calls = calls
    return timer


def _costs(what):
    """Own kernels: TILE 32 with 4 splits is fastest for the first forward GEMM, the defaults with 1 split
    elsewhere; cuBLAS beats them on the second forward GEMM only."""
    if what["impl"] == "cublas":
        return 1e-6 if (what["family"], what["N"]) == ("forward_gemm", 10) else 1.0
    first = (what["family"], what["N"], what["K"]) == ("forward_gemm", 30, 784)
    if first:
        return 2e-6 if (what["tiles"]["TILE"], what["splits"]) == (32, 4) else 5e-6
    return 3e-6 if (what["tiles"]["TILE"], what["splits"]) == (64, 1) else 9e-6


def test_the_tuner_keeps_the_fastest_candidate_of_every_shape(cache):
    bk = dry_run_backend([])
    timer = fake_timer(_costs)
    table = gtune.tune(bk, [784, 30, 10], 10, timer=timer, device="Fake GPU 9000", cuda=13020)
    first = table.get("forward_gemm", np.float32, 10, 30, 784)
    assert (first.tiles, first.splits, first.us, first.cublas_us) == ({"TILE": 32, "MICRO": 4}, 4, 2.0, 1e6)
    assert first.own_wins and not table.get("forward_gemm", np.float32, 10, 10, 30).own_wins
    wg = table.get("weight_grad", np.float32, 784, 30, 10)
    assert (wg.tiles["TILE"], wg.splits, wg.cublas_us) == (64, 1, None)           # no cuBLAS twin timed
    assert len(table.entries) == 5
    tried = {tuple(sorted(w["tiles"].items())) for w in timer.calls if w["impl"] == "own"}
    assert tried == {tuple(sorted(t.items())) for t in tuning.TILE_SETS}
    path = table.save()
    assert path == cache / "fake-gpu-9000-cuda13020-gpubp0.1.0.json" and tuning.for_device("Fake GPU 9000", 13020)
    back = tuning.Table.load(path)
    assert back.get("forward_gemm", np.float32, 10, 30, 784) == first and back.device == "Fake GPU 9000"
    assert tuning.for_device("Fake GPU 9000", 12080) is None                     # another CUDA: measure again


def test_the_backend_launches_the_tuned_tiles_and_splits_and_auto_picks_by_them(cache):
    table = gtune.tune(dry_run_backend([]), [784, 30, 10], 10, timer=fake_timer(_costs), device="Fake", cuda=1)
    log = []
    net = MLP([784, 30, 10], backend=dry_run_backend(log, gemm="auto", fused_step=False), seed=0)
    net.backend.tuned = table
    X, Y = net.to_device(np.random.default_rng(0).random((10, 784)), np.arange(10) % 10)
    net.stepper(X, Y, lr=0.1)(np.arange(10))
    launched = entries(log)
    names = [e.name for e in launched]
    # the first forward GEMM on gpubp's kernel (tuned: TILE 32 → 16 threads, 4 splits); the second by cuBLAS
    first = launched[names.index("gemm_bias_sigmoid_f32")]
    assert first.grid == (1, 1, 4) and first.block == (launchers.gemm_threads({"TILE": 32, "MICRO": 4}, 4),)
    assert names.count("gemm_bias_sigmoid_f32") == 1 and "bias_sigmoid_f32" in names     # cuBLAS, then its epilogue
    untuned = MLP([784, 30, 10], backend=dry_run_backend([], gemm="auto", fused_step=False), seed=0)
    assert not untuned.backend._own_gemm("forward_gemm", 10, 30, 784, np.float32)   # nothing measured: cuBLAS


def test_tuning_is_refused_where_it_would_measure_nothing(capsys):
    with pytest.raises(InputError, match="refused on the emulated device: it runs the kernels on the CPU"):
        gtune.tune(MLP([3, 2], backend="emulated").backend, [3, 2], 1)
    with pytest.raises(InputError, match="backend 'numpy' has none"):
        gtune.tune(MLP([3, 2], backend="numpy").backend, [3, 2], 1)
    from gpubp.device import cuda_status
    if not cuda_status()[0]:
        assert main(["tune", "--sizes", "4,3", "--batch", "2"]) == 2
        assert capsys.readouterr().err.startswith("error: ")


def test_a_damaged_table_is_named_and_ignored(cache):
    path = tuning.file_for("Fake", 1)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"device": "Fake", "entries": {}}))
    with pytest.raises(ValueError, match=r"is not a gpubp tuning table .*run gpubp tune again"):
        tuning.Table.load(path)
    with pytest.warns(RuntimeWarning, match="using the default tiles and splits"):
        assert tuning.for_device("Fake", 1) is None


def test_gemm_auto_with_a_cuda_graph_is_refused():
    with pytest.raises(InputError, match="gemm='auto' may pick cuBLAS, which a CUDA graph cannot capture"):
        MLP([3, 2], backend="emulated", backend_options={"gemm": "auto", "cuda_graph": True})


# -- tune="lazy": a shape timed on its first launch -------------------------------------------------------

def test_lazy_tuning_times_each_shape_on_its_first_launch_and_keeps_it(cache):
    """A step on a backend with a LazyTuner (what backend_options={"tune": "lazy"} gives the cupy backend,
    here with a fake timer on a dry run): every GEMM shape of the step is timed once, before its launch,
    which then takes the winner; the table is saved; the next steps time nothing."""
    from gpubp.cuda.tuner import LazyTuner
    log = []
    net = MLP([784, 30, 10], backend=dry_run_backend(log, gemm="auto", fused_step=False), seed=0)
    table = tuning.Table("Fake GPU 9000", 13020)
    timer = fake_timer(_costs)
    said = []
    net.backend.tuned, net.backend.tuner = table, LazyTuner(table, timer, say=said.append)
    X, Y = net.to_device(np.random.default_rng(0).random((20, 784)), np.arange(20) % 10)
    step = net.stepper(X, Y, lr=0.1)
    step(np.arange(10))
    timed = net.backend.tuner.timed
    # the step's GEMMs: two forward, one BP2, two weight gradients (gpubp.tune.gemm_shapes' order)
    assert sorted(timed) == sorted((f, "float32", M, N, K) for f, M, N, K in gtune.gemm_shapes([784, 30, 10], 10))
    first = table.get("forward_gemm", np.float32, 10, 30, 784)
    assert (first.tiles, first.splits) == ({"TILE": 32, "MICRO": 4}, 4)
    assert len(said) == 5 and said[0].startswith("gpubp tune='lazy': forward_gemm float32 M=10 N=30 K=784 timed on "
                                                 "its first launch: TILE=32 MICRO=4 splits=4 2.00 us (cuBLAS")
    assert said[0].endswith(f"kept in {tuning.file_for('Fake GPU 9000', 13020)}")
    saved = tuning.Table.load(tuning.file_for("Fake GPU 9000", 13020))
    assert saved.get("forward_gemm", np.float32, 10, 30, 784) == first and len(saved.entries) == 5
    calls = len(timer.calls)
    log.clear()
    step(np.arange(10, 20))
    step(np.arange(10))
    assert len(timer.calls) == calls and len(timed) == 5          # nothing timed again
    # the steps launch the winners: the first forward GEMM on the 32-tile kernel with 4 splits, the second
    # (cuBLAS faster there) as cuBLAS and its epilogue
    launched = entries(log)
    names = [e.name for e in launched]
    # and nothing of the timing runs (the cuBLAS candidates' epilogues) was recorded into the step
    assert names == 2 * ["gather_rows_f32", "gemm_bias_sigmoid_f32", "bias_sigmoid_f32", "output_delta_mse_f32",
                         "gemm_sigmoid_delta_f32", "weight_grad_sgd_f32", "weight_grad_sgd_f32"]
    assert launched[names.index("gemm_bias_sigmoid_f32")].grid == (1, 1, 4)


def test_lazy_tuning_times_nothing_during_a_capture_and_survives_an_unwritable_cache(tmp_path, monkeypatch, caplog):
    from gpubp.cuda.tuner import LazyTuner
    bk = dry_run_backend([])
    capturing = [True]
    said = []
    lazy = LazyTuner(tuning.Table("Fake", 1), fake_timer(_costs), capturing=lambda: capturing[0], say=said.append)
    assert lazy(bk, "forward_gemm", np.float32, 10, 30, 784) is None and lazy.timed == []
    capturing[0] = False
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("GPUBP_CACHE_DIR", str(blocker))
    with caplog.at_level("WARNING", logger="gpubp.tune"):
        entry = lazy(bk, "forward_gemm", np.float32, 10, 30, 784)
    assert entry.tiles == {"TILE": 32, "MICRO": 4} and lazy.table.get("forward_gemm", np.float32, 10, 30, 784) == entry
    assert "could not keep the tuning table" in caplog.text
    assert len(said) == 1 and "not kept (" in said[0] and said[0].endswith("the next process times it again")


def test_lazy_tuning_is_refused_where_it_would_measure_nothing_or_clash():
    with pytest.raises(InputError, match=r"tune='lazy' is refused on the emulated device: it runs the kernels on the CPU"):
        MLP([3, 2], backend="emulated", backend_options={"tune": "lazy"})
    with pytest.raises(InputError, match=r"backend option tune must be 'lazy' .* or False, got 'eager'"):
        MLP([3, 2], backend="emulated", backend_options={"tune": "eager"})
    with pytest.raises(InputError, match=r"tune='lazy' picks the tiles per shape; defines fixes them"):
        MLP([3, 2], backend="emulated", backend_options={"tune": "lazy", "defines": {"TILE": 32}})


def test_below_sm_80_the_register_staged_schedule_is_not_timed_twice():
    """PIPELINE 3 is PIPELINE 2 where there is no cp.async: on sm_75 the tuner drops that candidate."""
    from gpubp.cuda import tuner
    from gpubp.cuda.dryrun import recording_kernels
    on = {arch: {tuple(sorted(t.items())) for t, _ in tuner.candidates(recording_kernels([], arch=arch),
                                                                        "forward_gemm", 10, 30, 784)}
          for arch in ("sm_75", "sm_90")}
    staged = (("MICRO", 8), ("PIPELINE", 2), ("TILE", 64))
    assert staged in on["sm_90"] and staged not in on["sm_75"] and on["sm_90"] - on["sm_75"] == {staged}


def test_an_interrupted_tune_keeps_the_shapes_it_timed_beside_the_tables_others(cache):
    """Ctrl-C, or SIGTERM as gpubp tune takes it, in the third shape: the two timed before it join the
    device's table (whose other nets' shapes stay) and the file is saved; the caller learns what stopped it."""
    gtune.tune(dry_run_backend([]), [64, 16], 8, timer=fake_timer(_costs), device="Fake", cuda=1).save()
    shapes = []

    def costs(what):
        key = (what["family"], what["M"], what["N"], what["K"])
        if key not in shapes:
            shapes.append(key)
        if len(shapes) == 3:
            raise KeyboardInterrupt("SIGTERM")
        return _costs(what)
    lines = []
    path, timed, interrupted = gtune.tune_and_keep(dry_run_backend([]), [784, 30, 10], 10, timer=fake_timer(costs),
                                                   device="Fake", cuda=1, log=lines.append)
    assert (timed, interrupted, len(lines)) == (2, "SIGTERM", 2)
    kept = tuning.Table.load(path)
    assert sorted(kept.entries) == sorted([tuning.key("forward_gemm", np.float32, 8, 16, 64),
                                           tuning.key("weight_grad", np.float32, 64, 16, 8),
                                           tuning.key("forward_gemm", np.float32, 10, 30, 784),
                                           tuning.key("forward_gemm", np.float32, 10, 10, 30)])
    assert kept.get("forward_gemm", np.float32, 10, 30, 784).tiles == {"TILE": 32, "MICRO": 4}
    # not interrupted: every shape, the same file
    path2, timed, interrupted = gtune.tune_and_keep(dry_run_backend([]), [784, 30, 10], 10,
                                                    timer=fake_timer(_costs), device="Fake", cuda=1)
    assert (path2, timed, interrupted, len(tuning.Table.load(path).entries)) == (path, 5, None, 7)


def test_tune_and_keep_refuses_the_emulated_device_before_touching_the_table(cache):
    from gpubp.backend import get_backend
    from gpubp.cuda.emulator import compiler_available
    if not compiler_available():
        pytest.skip("no C++ compiler for the emulated device")
    with pytest.raises(InputError, match="gpubp tune is refused on the emulated device"):
        gtune.tune_and_keep(get_backend("emulated")[0], [4, 3], 2)
    assert not cache.exists()
