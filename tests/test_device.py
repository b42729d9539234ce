"""The CUDA probe's answers that a CPU machine can check: the driver against
CuPy's CUDA version, and CuPy's kernel cache folder (CuPy 14 fails its own
import when that folder cannot be made)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gpubp.device import cupy_cache_dir, driver_advice

ROOT = Path(__file__).resolve().parents[1]


def test_driver_advice():
    assert driver_advice(13020, 13020) is None
    assert driver_advice(13000, 13020) is None            # minor-version compatibility within a major
    assert driver_advice(14000, 13020) is None
    old = driver_advice(12040, 13020)
    assert "supports CUDA 12.4 but this CuPy is built for CUDA 13.2" in old and "install cupy-cuda12x" in old
    assert "no NVIDIA driver is loaded" in driver_advice(0, 13020)


def test_cupy_cache_dir_falls_back_when_the_folder_cannot_be_made(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    folder, why = cupy_cache_dir({"CUPY_CACHE_DIR": str(blocker / "cache")})
    assert folder and os.path.isdir(folder) and os.access(folder, os.W_OK)
    assert why.startswith(f"CUPY_CACHE_DIR {blocker / 'cache'} cannot be written, so CUPY_CACHE_DIR={folder}")
    assert cupy_cache_dir({"CUPY_CACHE_DIR": str(tmp_path / "fine")}) == (None, None)


def test_cupy_imports_with_an_unusable_home_and_says_what_it_did(tmp_path):
    pytest.importorskip("cupy", reason="CuPy is not installed (CI's second pass installs it)")
    home = tmp_path / "home-is-a-file"
    home.write_text("")
    env = {k: v for k, v in os.environ.items() if k != "CUPY_CACHE_DIR"}
    env.update(HOME=str(home), PYTHONPATH=str(ROOT))
    code = "from gpubp.device import cuda_status, notes; ok, why = cuda_status(); print(why); print(notes)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert "CuPy failed to import" not in out           # CuPy alone fails: NotADirectoryError on ~/.cupy
    assert f"CuPy's default kernel cache {home}/.cupy/kernel_cache cannot be written, so CUPY_CACHE_DIR=" in out


def test_null_pointers_travel_as_an_8_byte_zero():
    """CuPy 13 turns a None kernel argument into a garbage pointer (cupy/cupy#9046, fixed in 14.0 by
    cupy/cupy#9525); gpubp's RawModule wrapper hands the kernel an 8-byte 0 instead, on both."""
    import numpy as np
    from gpubp.cuda.sources import _CupyModule
    handed = []

    class RawModule:                # stands in for cupy.RawModule: records what the wrapper passes on
        def get_function(self, name):
            return lambda grid, block, args, shared_mem=0: handed.append(args)
    _CupyModule(RawModule()).get_function("weight_grad_f32")((1,), (1,), (None, np.int32(3), None))
    null, n, null2 = handed[0]
    assert null == 0 and null.dtype == np.uint64 and null.nbytes == 8 and null2 == 0 and n == 3


def test_gpu_name_reads_bytes_and_str():
    from gpubp.device import gpu_name
    assert gpu_name({"name": b"NVIDIA H100 80GB HBM3"}) == gpu_name({"name": "NVIDIA H100 80GB HBM3"}) == \
        "NVIDIA H100 80GB HBM3"
