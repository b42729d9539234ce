"""The kernel sources ship in the wheel and the sdist, and an installed
gpubp finds them (and the emulator's shim) without the source tree."""
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
KERNELS = sorted(p.name for p in (ROOT / "kernels").glob("*.cu"))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    hatchling_build = pytest.importorskip("hatchling.build")
    out = tmp_path_factory.mktemp("dist")
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        wheel = out / hatchling_build.build_wheel(str(out))
        sdist = out / hatchling_build.build_sdist(str(out))
    finally:
        os.chdir(cwd)
    return wheel, sdist


def test_wheel_and_sdist_hold_the_kernels(built):
    wheel, sdist = built
    assert len(KERNELS) >= 3
    names = zipfile.ZipFile(wheel).namelist()
    for k in KERNELS:
        assert f"gpubp/_kernels/{k}" in names
    assert "gpubp/cuda/emulator/cuda_shim.h" in names and "gpubp/cuda/emulator/runtime.cpp" in names
    with tarfile.open(sdist) as t:
        members = {m.name.split("/", 1)[1] for m in t.getmembers() if "/" in m.name}
    for k in KERNELS:
        assert f"kernels/{k}" in members
    assert "gpubp/cuda/emulator/cuda_shim.h" in members


def test_installed_wheel_finds_and_runs_its_kernels(built, tmp_path):
    wheel, _ = built
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet",
                    "--target", str(target), str(wheel)], check=True)
    code = ("import gpubp, gpubp.cuda.sources as k, numpy as np;"
            "print(gpubp.__file__); print(k.kernel_dir());"
            "from gpubp import MLP;"
            "a = MLP([3, 4, 2], backend='emulated', seed=0).forward(np.ones((2, 3)));"
            "b = MLP([3, 4, 2], backend='numpy', seed=0).forward(np.ones((2, 3)));"
            "print(float(abs(a - b).max()))")
    env = dict(os.environ, PYTHONPATH=str(target))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=tmp_path, env=env).stdout.split("\n")
    assert out[0].startswith(str(target))                        # the installed copy, not the checkout
    assert Path(out[1]) == target / "gpubp" / "_kernels"
    assert sorted(p.name for p in Path(out[1]).glob("*.cu")) == KERNELS
    assert float(out[2]) < 1e-6
