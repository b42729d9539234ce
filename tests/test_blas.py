"""The BLAS threads gpubp's host GEMMs run on: one thread for small steps, the BLAS's own count for
large ones, set per call and restored after, overridable, pinned by the bench.  (Where threads pay
is measured by `gpubp bench --groups threads`, never asserted here.)"""
import numpy as np
import pytest

from gpubp import MLP, blas
from gpubp.bench import step_flops

pytestmark = pytest.mark.skipif(not blas._libs(), reason="threadpoolctl finds no BLAS to control here")

SMALL, BIG = ([784, 30, 10], 10), ([784, 1024, 1024, 10], 512)


def threads_now():
    return blas._libs()[0][0]()


@pytest.fixture
def two_threads():
    """The BLAS on 2 threads outside gpubp (as on this project's machine), whatever it had before."""
    get, set_ = blas._libs()[0]
    before = get()
    set_(2)
    yield 2
    set_(before)


@pytest.fixture
def env(monkeypatch):
    def setenv(value):
        if value is None:
            monkeypatch.delenv(blas.ENV, raising=False)
        else:
            monkeypatch.setenv(blas.ENV, value)
        blas.refresh()
    yield setenv
    monkeypatch.delenv(blas.ENV, raising=False)
    blas.refresh()


def test_step_macs_are_the_steps_gemms():
    for sizes, B in (SMALL, BIG, ([5, 1], 3)):
        assert 2 * blas.step_macs(sizes, B) == step_flops(sizes, B)


def test_one_thread_below_the_threshold_the_default_above(env):
    env(None)
    assert blas.threads_for(*SMALL) == 1 and blas.threads_for(*BIG) is None
    assert blas.threads_for([784, 100, 10], 10) == 1          # the 99 s epoch: one thread
    env("3")
    assert blas.threads_for(*SMALL) == 3 and blas.threads_for(*BIG) == 3
    env("off")
    assert blas.threads_for(*SMALL) is None
    env("many")
    with pytest.raises(ValueError, match="GPUBP_BLAS_THREADS='many': use 'auto', 'off' or a positive number"):
        blas.threads_for(*SMALL)


def _threads_in_gemms(net, call):
    """The BLAS thread count each GEMM of ``call`` ran on (a spy on the backend's matmul)."""
    seen, matmul = [], net.backend.matmul

    def spy(*a, **k):
        seen.append(threads_now())
        return matmul(*a, **k)
    net.backend.matmul = spy
    call()
    return seen


def test_fit_step_and_forward_run_small_gemms_on_one_thread_and_restore(two_threads, env, rng):
    env(None)
    net = MLP([784, 100, 10], backend="numpy", seed=0)        # B = 32: 5.1e6 multiply-adds, threaded by OpenBLAS
    X, y = rng.random((64, 784)), rng.integers(0, 10, 64)
    for call in (lambda: net.fit(X, y, epochs=1, batch_size=32, lr=0.1, progress=False),
                 lambda: net.step(X[:32].astype(np.float32), y[:32], lr=0.1),
                 lambda: net.backward(X[:32], y[:32]),
                 lambda: net.stepper(*net.to_device(X, y), lr=0.1)(np.arange(32))):
        seen = _threads_in_gemms(net, call)
        assert seen and set(seen) == {1}
        assert threads_now() == 2                              # the process's own count, back


def test_a_large_step_keeps_the_blas_threads(two_threads, env, rng):
    env(None)
    net = MLP([784, 512, 512, 10], backend="numpy", seed=0)   # B = 128: 1.2e8 multiply-adds
    X, y = rng.random((128, 784)).astype(np.float32), rng.integers(0, 10, 128)
    assert set(_threads_in_gemms(net, lambda: net.step(X, y, lr=0.1))) == {2}


def test_the_override_sets_every_call_site(two_threads, env, rng):
    env("1")
    net = MLP([784, 512, 512, 10], backend="numpy", seed=0)
    X, y = rng.random((128, 784)).astype(np.float32), rng.integers(0, 10, 128)
    assert set(_threads_in_gemms(net, lambda: net.step(X, y, lr=0.1))) == {1}
    env("off")
    net2 = MLP([784, 100, 10], backend="numpy", seed=0)
    assert set(_threads_in_gemms(net2, lambda: net2.step(X[:32], y[:32], lr=0.1))) == {2}


def test_limits_nest_and_restore_and_pinned_turns_gpubps_choice_off(two_threads, env):
    env(None)
    with blas.limited(1):
        assert threads_now() == 1
        with blas.limited(None):                      # None: the count outside gpubp
            assert threads_now() == 2
        assert threads_now() == 1
    assert threads_now() == 2
    ctx = blas.limit_for([784, 100, 10], 32)
    with ctx, ctx:                                    # one object, entered twice (fit around its Stepper)
        assert threads_now() == 1
    assert threads_now() == 2
    with blas.pinned(2):
        with blas.limit_for([784, 100, 10], 32):     # the bench's pin holds
            assert threads_now() == 2
    with pytest.raises(RuntimeError):
        with blas.limited(1):
            raise RuntimeError("a step failed")
    assert threads_now() == 2                        # restored on the way out of an error too


def test_describe_says_what_was_chosen_and_why(two_threads, env):
    env(None)
    mid = blas.describe([784, 100, 10], 32)
    assert "1 thread(s) for the training steps (a step is 5.1e+06 multiply-adds, below 2.2e+07; 2 by default" in mid
    assert blas.describe(*SMALL).endswith("below 2.2e+07; OpenBLAS keeps GEMMs this small on one thread itself; "
                                          "2 by default; GPUBP_BLAS_THREADS=N or off to override)")
    assert "2 thread(s) for the training steps (a step is 2.4e+09 multiply-adds, not below" in blas.describe(*BIG)
    env("3")
    assert blas.describe().endswith("gpubp runs its GEMMs on 3 (GPUBP_BLAS_THREADS=3)")
