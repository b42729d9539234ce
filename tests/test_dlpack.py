"""Arrays from other libraries through DLPack (PyTorch, JAX, CuPy: anything with ``__dlpack__`` and
``__dlpack_device__``): seen in place where they already live where the model computes, converted once
otherwise, refused with the fix where the model cannot read them.

``HostTensor`` stands for another library's array in host memory: it has DLPack and nothing else (no
``__array__``), so only the DLPack path can read it.  ``DeviceTensor`` says it lives on a GPU (kDLCUDA):
it tests gpubp's own device check on the host backends, which must refuse it before touching its data.
The PyTorch tests run where torch is installed (CI's torch pass), the CuPy ones on a GPU (-m gpu)."""
import numpy as np
import pytest

from gpubp import MLP, InputError
from gpubp.device import cuda_status


class HostTensor:
    """Another library's array in host memory: DLPack only."""

    def __init__(self, a):
        self._a = a
        self.dtype, self.shape, self.ndim = a.dtype, a.shape, a.ndim

    def __dlpack__(self, **kwargs):
        return self._a.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._a.__dlpack_device__()


class DeviceTensor:
    """An array that says it lives on GPU ``index`` (DLPack device type ``kind``, 2 = kDLCUDA)."""

    def __init__(self, shape, kind=2, index=0):
        self.shape, self.ndim, self.dtype, self._device = shape, len(shape), np.dtype(np.float32), (kind, index)

    def __dlpack__(self, **kwargs):
        raise AssertionError("gpubp read a device tensor's data on a host backend")

    def __dlpack_device__(self):
        return self._device


@pytest.fixture
def data(rng):
    X = rng.random((24, 5), dtype=np.float32)
    return X, rng.integers(0, 3, 24)


def test_host_tensor_is_taken_in_place(data):
    X, y = data
    net = MLP([5, 4, 3], backend="numpy", seed=0)
    Xd, Yd = net.to_device(HostTensor(X), HostTensor(y))
    assert np.shares_memory(Xd, X)                                  # float32, C-contiguous: no copy
    np.testing.assert_array_equal(Yd, np.eye(3, dtype=np.float32)[y])
    assert net._fast_batch(net.backend.from_dlpack(HostTensor(X)), y) is not None    # step's fast path


def test_host_tensor_trains_as_numpy_does(data):
    X, y = data
    nets = [MLP([5, 4, 3], loss="cross_entropy", backend="numpy", seed=1) for _ in range(2)]
    losses = [nets[0].step(X, y, lr=0.5), nets[1].step(HostTensor(X), HostTensor(y), lr=0.5)]
    assert losses[0] == losses[1]
    hists = [nets[0].fit(X, y, epochs=2, batch_size=6, progress=False),
             nets[1].fit(HostTensor(X), HostTensor(y), epochs=2, batch_size=6, progress=False,
                         test_data=(HostTensor(X), HostTensor(y)))]
    assert hists[0].loss == hists[1].loss
    for w0, w1 in zip(nets[0].weights, nets[1].weights):
        np.testing.assert_array_equal(w0, w1)
    np.testing.assert_array_equal(nets[1].forward(HostTensor(X)), nets[0].forward(X))
    np.testing.assert_array_equal(nets[1].predict(HostTensor(X)), nets[0].predict(X))
    assert nets[1].evaluate(HostTensor(X), HostTensor(y)) == nets[0].evaluate(X, y)


def test_host_tensor_of_another_dtype_is_converted_once(data):
    X, y = data
    X64 = X.astype(np.float64)
    net = MLP([5, 4, 3], backend="numpy", seed=0)
    Xd, _ = net.to_device(HostTensor(X64), y)
    assert Xd.dtype == np.float32 and not np.shares_memory(Xd, X64)
    np.testing.assert_array_equal(Xd, X)
    Xt, _ = net.to_device(HostTensor(np.asfortranarray(X)), y)      # a strided view: made contiguous once
    assert Xt.flags.c_contiguous and np.array_equal(Xt, X)


@pytest.mark.parametrize("backend", ["numpy", "emulated"])
def test_gpu_tensor_on_a_host_backend_is_refused_naming_the_fix(data, backend):
    X, y = data
    if backend == "emulated":
        from gpubp.cuda.emulator import compiler_available
        if not compiler_available():
            pytest.skip("the emulator needs a C++ compiler (g++)")
    net = MLP([5, 4, 3], backend=backend, seed=0)
    message = (r"X is a test_dlpack.DeviceTensor on CUDA device 0 \(DLPack device \(2, 0\)\), but this model "
               r"computes in host memory \(the numpy and emulated backends\): copy it to the host with its "
               r"library's copy to the host \(PyTorch: X.cpu\(\)\), or build the model with backend='cupy'")
    gpu_X = DeviceTensor(X.shape)
    for call in (lambda: net.fit(gpu_X, y, progress=False), lambda: net.step(gpu_X, y, lr=0.1),
                 lambda: net.predict(gpu_X), lambda: net.forward(gpu_X), lambda: net.evaluate(gpu_X, y),
                 lambda: net.to_device(gpu_X)):
        with pytest.raises(InputError, match=message):
            call()
    with pytest.raises(InputError, match=r"y is a test_dlpack.DeviceTensor on CUDA device 0"):
        net.fit(X, DeviceTensor(y.shape), progress=False)


def test_other_devices_and_broken_exports_are_refused(data):
    X, y = data
    net = MLP([5, 4, 3], backend="numpy", seed=0)
    with pytest.raises(InputError, match=r"X is a test_dlpack.DeviceTensor on ROCm device 1 \(DLPack device \(10, 1\)\)"):
        net.fit(DeviceTensor(X.shape, kind=10, index=1), y, progress=False)

    class Broken(HostTensor):
        def __dlpack__(self, **kwargs):
            raise BufferError("bfloat16 cannot be exported")
    with pytest.raises(InputError, match=r"X \(test_dlpack.Broken on CPU, dtype float32\) cannot be read through "
                                         r"DLPack: BufferError: bfloat16 cannot be exported; pass a float32 or"):
        net.fit(Broken(X), y, progress=False)

    class NoDevice(HostTensor):
        def __dlpack_device__(self):
            raise RuntimeError("no device")
    with pytest.raises(InputError, match=r"says it exports DLPack but __dlpack_device__\(\) failed \(no device\)"):
        net.predict(NoDevice(X))


# -- PyTorch (CI installs the CPU wheel in a pass of its own) -----------------------------------------------

def _torch():
    return pytest.importorskip("torch", reason="PyTorch is not installed (CI's torch pass installs torch==2.13.0)")


def test_torch_cpu_tensors_in_place_and_back(data):
    torch = _torch()
    X, y = data
    tX, ty = torch.from_numpy(X.copy()), torch.from_numpy(y.copy())
    net = MLP([5, 4, 3], loss="cross_entropy", backend="numpy", seed=2)
    ref = MLP([5, 4, 3], loss="cross_entropy", backend="numpy", seed=2)
    Xd, _ = net.to_device(tX, ty)
    assert np.shares_memory(Xd, tX.numpy())                        # the tensor's own memory
    assert net.step(tX, ty, lr=0.5) == ref.step(X, y, lr=0.5)
    net.fit(tX, ty, epochs=2, batch_size=5, progress=False)
    ref.fit(X, y, epochs=2, batch_size=5, progress=False)
    out = torch.from_dlpack(net.forward(tX))                      # the way back: a tensor on the same memory
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    np.testing.assert_array_equal(out.numpy(), ref.forward(X))
    np.testing.assert_array_equal(net.predict(tX.double().T.contiguous().T), ref.predict(X))   # float64, strided


def test_torch_tensors_dlpack_cannot_export_are_refused(data):
    torch = _torch()
    X, y = data
    net = MLP([5, 4, 3], backend="numpy", seed=0)
    with pytest.raises(InputError, match=r"X \(torch.Tensor on CPU, dtype torch.float32\) cannot be read through "
                                         r"DLPack: .*detach.*; pass a float32 or float64 array \(for PyTorch: "
                                         r"X.detach\(\).float\(\)\)"):
        net.fit(torch.from_numpy(X).requires_grad_(), y, progress=False)
    with pytest.raises(InputError, match=r"X \(torch.Tensor on CPU, dtype torch.bfloat16\) cannot be read"):
        net.predict(torch.from_numpy(X).to(torch.bfloat16))


@pytest.mark.filterwarnings("ignore:Stochastic Optimizer")
def test_torch_tensors_in_the_scikit_learn_estimator(data):
    torch = _torch()
    pytest.importorskip("sklearn")
    from gpubp.sklearn import MLPClassifier
    X, y = data
    kw = dict(hidden_layer_sizes=(4,), max_iter=3, batch_size=6, random_state=0, backend="numpy")
    a = MLPClassifier(**kw).fit(torch.from_numpy(X), torch.from_numpy(y))
    b = MLPClassifier(**kw).fit(X, y)
    np.testing.assert_array_equal(a.predict_proba(torch.from_numpy(X)), b.predict_proba(X))


# -- CuPy on a GPU -----------------------------------------------------------------------------------------

@pytest.mark.gpu
def test_cupy_backend_takes_device_tensors_in_place(data):
    ok, why = cuda_status()
    if not ok:
        pytest.skip(f"no CUDA device: {why}")
    import cupy
    X, y = data
    Xg = cupy.asarray(X)
    net = MLP([5, 4, 3], backend="cupy", seed=0)
    ref = MLP([5, 4, 3], backend="numpy", seed=0)

    class CudaTensor(HostTensor):                     # another library's CUDA array: DLPack only
        pass
    for given in (Xg, CudaTensor(Xg)):
        Xd, _ = net.to_device(given, y)
        assert isinstance(Xd, cupy.ndarray) and Xd.data.ptr == Xg.data.ptr      # no copy
    net.fit(CudaTensor(Xg), y, epochs=2, batch_size=6, shuffle=False, progress=False)
    ref.fit(X, y, epochs=2, batch_size=6, shuffle=False, progress=False)
    np.testing.assert_allclose(cupy.asnumpy(net.forward(CudaTensor(Xg))), ref.forward(X), rtol=1e-4, atol=1e-5)
    with pytest.raises(InputError, match=r"X is on CUDA device 1 but this model is on device 0"):
        net.backend.from_dlpack(DeviceTensor(X.shape, kind=2, index=1), "X")
