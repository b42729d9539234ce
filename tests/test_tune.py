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
