"""The gpubp command, run in-process and as `python -m gpubp`."""
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from gpubp import MLP
from gpubp.cli import main


def test_train_digits_reaches_97_percent_and_saves(tmp_path, capsys):
    path = tmp_path / "digits.npz"
    assert main(["train", "--dataset", "digits", "--quiet", "--save", str(path)]) == 0
    out = capsys.readouterr().out
    acc = float(re.search(r"test accuracy ([\d.]+)%", out).group(1))
    assert acc >= 97.0, out
    assert "network [64, 64, 10], loss cross_entropy, backend auto: picked" in out
    # what the train log says of the BLAS threads: digits' steps (10 x 64-64-10) are small, so one thread
    assert re.search(r"^BLAS: .*, 1 thread\(s\) for the training steps \(a step is 1e\+05 multiply-adds, below "
                     r"2\.2e\+07", out, re.M), out
    from gpubp import datasets
    d = datasets.digits()
    model = MLP.load(path, backend="numpy")
    assert model.evaluate(d.X_test, d.y_test)["accuracy"] == pytest.approx(acc / 100, abs=1e-4)


def test_train_user_npz(tmp_path, capsys, rng):
    X = rng.random((200, 3))
    y = (X[:, 0] + X[:, 1] > 1).astype(int)
    np.savez(tmp_path / "xor.npz", X=X, y=y)
    assert main(["train", "--dataset", str(tmp_path / "xor.npz"), "--epochs", "60", "--lr", "2", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "network [3, 30, 1]" in out
    assert float(re.search(r"test accuracy ([\d.]+)%", out).group(1)) >= 85


def test_train_errors_are_one_line_with_the_fix(tmp_path, capsys):
    assert main(["train", "--dataset", "cifar"]) == 2
    assert "unknown data set 'cifar'; use 'digits', 'mnist5k'" in capsys.readouterr().err
    np.savez(tmp_path / "bad.npz", A=np.zeros(3))
    assert main(["train", "--dataset", str(tmp_path / "bad.npz")]) == 2
    assert "needs X and y" in capsys.readouterr().err
    assert main(["train", "--dataset", "digits", "--sizes", "10,5,10"]) == 2
    assert "--sizes [10, 5, 10] does not fit the data: it has 64 features" in capsys.readouterr().err


def test_cupy_backend_without_a_device_is_a_one_line_error_with_the_fix(capsys):
    from gpubp.device import cuda_status

    ok, why = cuda_status()
    if ok:
        pytest.skip(f"a CUDA device is here ({why})")
    assert main(["train", "--dataset", "digits", "--backend", "cupy", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err
    # the reason, and what to do instead, as a flag of this command (not the Python API's backend='numpy')
    assert "--backend numpy (or emulated)" in err and "backend='numpy'" not in err
    from gpubp.device import for_command_line
    assert for_command_line(why) in err


@pytest.mark.parametrize("argv, fix", [
    (["tune", "--sizes", "784,30,10"], "run gpubp tune where there is a GPU"),
    (["plan", "--device", "current"], "name the GPU to model instead (--device h100, h200, a100, l4, rtx4090)"),
])
def test_a_command_without_backend_flag_says_its_own_fix_when_there_is_no_gpu(argv, fix, capsys):
    from gpubp.device import cuda_status
    ok, why = cuda_status()
    if ok:
        pytest.skip(f"a CUDA device is here ({why})")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err
    assert "--backend" not in err and "backend='numpy'" not in err          # neither command has --backend
    assert fix in err and why.split(";")[0] in err                          # the fix, and the reason itself


def test_plan_models_every_gpu_the_command_line_offers():
    from gpubp import plan
    from gpubp.cli import build_parser
    sub = next(a for a in build_parser()._actions if a.dest == "command" or getattr(a, "choices", None) and "plan" in a.choices)
    device = next(a for a in sub.choices["plan"]._actions if a.dest == "device")
    assert sorted(device.choices) == sorted([*plan.GPUS, "current"])


def test_the_python_api_keeps_the_python_spelling_of_the_fix():
    from gpubp.device import DeviceUnavailable, cuda_status
    ok, why = cuda_status()
    if ok:
        pytest.skip(f"a CUDA device is here ({why})")
    with pytest.raises(DeviceUnavailable, match="use backend='numpy'"):
        MLP([2, 2], backend="cupy")


def test_unwritable_save_path_is_refused_before_training(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(MLP, "fit", lambda *a, **k: pytest.fail("trained before checking --save"))
    missing = tmp_path / "no" / "such" / "m.npz"
    assert main(["train", "--dataset", "digits", "--save", str(missing)]) == 2
    assert f"the folder {missing.parent} does not exist; create it first" in capsys.readouterr().err
    assert main(["train", "--dataset", "digits", "--save", str(tmp_path)]) == 2
    assert "is a folder; give a file name" in capsys.readouterr().err


def test_ctrl_c_during_training_saves_the_model_so_far(tmp_path, capsys, monkeypatch):
    path = tmp_path / "m.npz"
    steps = []
    from gpubp.mlp import Stepper
    one_step = Stepper.__call__

    def interrupted(self, *a, **k):
        steps.append(1)
        if len(steps) == 50:
            raise KeyboardInterrupt
        return one_step(self, *a, **k)
    monkeypatch.setattr(Stepper, "__call__", interrupted)
    assert main(["train", "--dataset", "digits", "--quiet", "--save", str(path)]) == 130
    err = capsys.readouterr().err
    assert f"saved the model as trained so far to {path}" in err and "interrupted" in err
    net = MLP.load(path, backend="numpy")
    assert net.sizes == [64, 64, 10] and np.isfinite(net.weights[0]).all()
    assert not np.allclose(net.weights[0], MLP([64, 64, 10], backend="numpy", seed=0).weights[0])  # it trained


def test_sigterm_during_training_saves_the_model_so_far(tmp_path):
    """A scheduler's time limit (SIGTERM) is taken as Ctrl-C: the model as trained so far is saved, exit 130."""
    path = tmp_path / "m.npz"
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, "-m", "gpubp", "train", "--dataset", "digits", "--epochs", "100000",
                             "--save", str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(root)))
    for line in proc.stdout:                  # training has begun once its settings are printed
        if line.startswith("SGD: "):
            break
    time.sleep(1.0)
    proc.terminate()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out + err
    assert f"saved the model as trained so far to {path}" in err and "Traceback" not in err
    net = MLP.load(path, backend="numpy")
    assert net.sizes == [64, 64, 10] and np.isfinite(net.weights[0]).all()


def test_missing_dataset_package_names_install_command(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "sklearn", None)           # as if scikit-learn were absent
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    assert main(["train", "--dataset", "digits"]) == 2
    assert "pip install 'gpubp[datasets]'" in capsys.readouterr().err


def test_train_stops_with_epoch_and_step_when_loss_turns_nan(capsys):
    # an absurd learning rate overflows the weights into NaN within the first epochs
    assert main(["train", "--dataset", "digits", "--lr", "1e38", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert re.search(r"the training loss became nan at epoch \d+, step \d+ of 144", err), err


def test_gradcheck_command(capsys):
    assert main(["gradcheck", "--sizes", "3,4,2"]) == 0
    out = capsys.readouterr().out
    assert out.count("PASS") == 2 and "loss=mse" in out and "loss=cross_entropy" in out
    rel = [float(x) for x in re.findall(r"max relative error ([\d.e+-]+)", out)]
    assert len(rel) == 2 and max(rel) < 1e-6


def test_info_and_module_entry_point():
    out = subprocess.run([sys.executable, "-m", "gpubp", "info"], capture_output=True, text=True, check=True).stdout
    assert out.startswith("gpubp 0.1.0")
    assert "backend numpy: available" in out
    assert re.search(r"backend cupy: (available|unavailable): ", out)
    assert "backend='auto' picks: auto: picked" in out
    from gpubp import blas
    assert re.search(r"^BLAS: \S+ .*, \d+ thread\(s\) by default; gpubp uses 1 thread for steps of fewer than "
                     r"2\.2e\+07 multiply-adds", out, re.M) or "BLAS threads: not controlled" in out
    assert f"{blas.ONE_THREAD_BELOW:.2g}" in out or "not controlled" in out
