"""The full MNIST from its standard IDX files (generated here, small: a network
download is never part of the tests), and what train prints and plots."""
import gzip
import sys

import numpy as np
import pytest

from gpubp import InputError, datasets
from gpubp.cli import main


def write_idx(path, array, compress=False):
    array = np.asarray(array, dtype=np.uint8)
    header = (0x0800 | array.ndim).to_bytes(4, "big") + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    data = header + array.tobytes()
    (gzip.open if compress else open)(path, "wb").write(data)


def fake_mnist(folder, n_train=40, n_test=10, compress=False, seed=0):
    """MNIST-shaped IDX files: each digit a bright stripe at its own row, so that it can be learnt."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if compress else ""
    out = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        y = rng.integers(0, 10, n)
        X = rng.integers(0, 40, (n, 28, 28))
        X[np.arange(n), 2 + 2 * y, :] = 255
        write_idx(folder / f"{split}-images-idx3-ubyte{suffix}", X, compress)
        write_idx(folder / f"{split}-labels-idx1-ubyte{suffix}", y, compress)
        out[split] = (X, y)
    return out


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gz"])
def test_mnist_reads_the_four_idx_files(tmp_path, compress):
    made = fake_mnist(tmp_path, compress=compress)
    d = datasets.load("mnist", data_dir=str(tmp_path))
    assert d.X_train.shape == (40, 784) and d.X_test.shape == (10, 784) and d.n_classes == 10
    assert d.X_train.dtype == np.float32 and d.X_train.max() == 1.0
    np.testing.assert_array_equal(d.y_test, made["t10k"][1])
    np.testing.assert_allclose(d.X_train[3], made["train"][0][3].reshape(-1) / 255.0, rtol=1e-6)


def test_mnist_from_gpubp_data_and_its_mnist_subfolder(tmp_path, monkeypatch):
    fake_mnist(tmp_path / "mnist")
    monkeypatch.setenv("GPUBP_DATA", str(tmp_path))
    assert datasets.load("mnist").X_train.shape == (40, 784)


def test_mnist_without_its_files_says_where_to_put_them(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("GPUBP_DATA", raising=False)
    with pytest.raises(datasets.DatasetUnavailable, match=r"no folder was given .* pass --data-dir DIR \(or set "
                                                          r"GPUBP_DATA=DIR\), or pass --download"):
        datasets.load("mnist")
    assert main(["train", "--dataset", "mnist", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path} (or {tmp_path / 'mnist'}) lacks train-images-idx3-ubyte, train-labels-idx1-ubyte" in err
    fake_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    assert main(["train", "--dataset", "mnist", "--data-dir", str(tmp_path)]) == 2
    assert "lacks t10k-labels-idx1-ubyte. Put them" in capsys.readouterr().err         # only the one missing


def test_a_missing_data_dir_is_said_to_be_missing(tmp_path, capsys):
    assert main(["train", "--dataset", "mnist", "--data-dir", str(tmp_path / "nope")]) == 2
    assert f"the MNIST folder {tmp_path / 'nope'} does not exist (--data-dir); create it" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert main(["train", "--dataset", "mnist", "--data-dir", str(tmp_path / "file")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def test_data_dir_expands_the_home_folder(tmp_path, monkeypatch):
    fake_mnist(tmp_path / "data")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert datasets.load("mnist", data_dir="~/data").X_train.shape == (40, 784)


def test_idx_header_sizes_do_not_wrap_and_zero_images_are_refused(tmp_path):
    huge = tmp_path / "huge"
    huge.write_bytes((0x803).to_bytes(4, "big") + (2**31).to_bytes(4, "big") * 2 + (4).to_bytes(4, "big"))
    with pytest.raises(InputError, match=r"is 16 bytes but its header says \[2147483648, 2147483648, 4\] "
                                         r"\(18,446,744,073,709,551,632 bytes\): the file is truncated"):
        datasets.read_idx(huge, 3)
    empty = tmp_path / "empty"
    empty.write_bytes((0x803).to_bytes(4, "big") + (0).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2)
    with pytest.raises(InputError, match=r"holds 0 images \(its header says \[0, 28, 28\]\); the file is empty"):
        datasets.read_idx(empty, 3)


def test_zero_images_from_the_command_line_is_a_clear_error(tmp_path, capsys):
    fake_mnist(tmp_path)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((0, 28, 28), np.uint8))
    assert main(["train", "--dataset", "mnist", "--data-dir", str(tmp_path)]) == 2
    assert "holds 0 images" in capsys.readouterr().err


def test_gzip_without_gz_is_read_and_a_folder_in_place_of_a_file_is_named(tmp_path):
    import gzip
    made = fake_mnist(tmp_path)
    labels = tmp_path / "train-labels-idx1-ubyte"
    labels.write_bytes(gzip.compress(labels.read_bytes()))     # compressed, but no .gz in the name
    np.testing.assert_array_equal(datasets.load("mnist", data_dir=str(tmp_path)).y_train, made["train"][1])
    images = tmp_path / "train-images-idx3-ubyte"
    images.unlink()
    images.mkdir()
    with pytest.raises(InputError, match=r"train-images-idx3-ubyte is a folder, not an IDX file"):
        datasets.load("mnist", data_dir=str(tmp_path))


def test_download_without_scikit_learn_names_the_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(datasets.DatasetUnavailable, match=r"--download fetches MNIST with scikit-learn, which is "
                                                          r"not installed: pip install 'gpubp\[datasets\]'"):
        datasets.load("mnist", data_dir=str(tmp_path), download=True)


@pytest.mark.parametrize("damage, message", [
    ("truncate", r"is 2,\d+ bytes but its header says \[40, 28, 28\] .* the file is truncated"),
    ("magic", r"starts with 0x00000801, not the IDX magic 0x00000803 .* not an MNIST image file"),
    ("count", r"40 train images but 39 train labels"),
    ("gz", r"is gzip-compressed but cannot be decompressed"),
])
def test_damaged_idx_files_are_refused_with_the_reason(tmp_path, damage, message):
    made = fake_mnist(tmp_path)
    images = tmp_path / "train-images-idx3-ubyte"
    if damage == "truncate":
        images.write_bytes(images.read_bytes()[:2000])
    elif damage == "magic":
        write_idx(images, made["train"][1])                     # a label file where the images belong
    elif damage == "count":
        write_idx(tmp_path / "train-labels-idx1-ubyte", made["train"][1][:39])
    else:
        images.unlink()
        (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(InputError, match=message):
        datasets.load("mnist", data_dir=str(tmp_path))


def test_train_on_mnist_prints_what_users_look_for_and_plots(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    fake_mnist(tmp_path / "data", n_train=200, n_test=50)
    png, model = tmp_path / "curves.png", tmp_path / "m.npz"
    assert main(["train", "--dataset", "mnist", "--data-dir", str(tmp_path / "data"), "--epochs", "3", "--quiet",
                 "--plot", str(png), "--save", str(model)]) == 0
    out = capsys.readouterr().out
    assert f"the IDX files in {tmp_path / 'data'}: 200 train / 50 test" in out
    accuracy = float(out.split("test accuracy ")[1].split("%")[0])
    assert accuracy >= 90.0                                  # the stripes are learnt
    assert "trained 3 epochs in " in out and "samples/s" in out
    assert f"loss and accuracy curves: {png}" in out and f"model saved to {model}" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_plot_is_checked_before_training(tmp_path, capsys):
    assert main(["train", "--plot", str(tmp_path / "no" / "such" / "dir" / "c.png")]) == 2
    assert "does not exist; create it first" in capsys.readouterr().err
