"""How many BLAS threads gpubp's host GEMMs run on (the numpy and emulated backends).

OpenBLAS (NumPy's BLAS) splits a GEMM over all its threads from about 2.6e5
multiply-adds up, and its threads wait for each other by spinning.  For the
small GEMMs of a training step (B = 10 rows) the split buys nothing, and on a
machine whose cores are busy with something else it costs far more than it
buys: a thread that is not scheduled holds up the others at every GEMM.  On
the two-core machine this project is developed on, with one core taken by
another process, a step of [784, 100, 10] at batch 32 took 0.36 ms on one
thread and 29 ms on two (``gpubp bench --groups threads`` measures it).

So each call site that runs a step (``fit``, ``step``, a ``Stepper``,
``backward``) or a forward pass (``forward``, ``evaluate``, ``predict``)
picks the thread count for its net and batch (:func:`threads_for`): one
thread where a step's GEMMs come to fewer than :data:`ONE_THREAD_BELOW`
multiply-adds (:func:`step_macs`), else the count the BLAS had outside gpubp,
and sets it for the duration of the call with threadpoolctl (:func:`limited`),
restoring it after.

``GPUBP_BLAS_THREADS`` overrides the choice: an integer N (every call site
runs on N threads), ``auto`` (the default) or ``off`` (gpubp never touches
the BLAS threads).  Imports nothing of gpubp.
"""
from __future__ import annotations

import contextlib
import os

#: one thread for a step of fewer multiply-adds than this (see the module doc; the figure is from
#: ``gpubp bench --groups threads`` on the machine the README names, where two threads paid from
#: about 2.4e7 up on a quiet machine and nowhere while another process held a core)
ONE_THREAD_BELOW = 2.2e7

ENV = "GPUBP_BLAS_THREADS"

_controllers = None       # (get, set) of each loaded BLAS library's thread count, found once
_why_none = None          # why there are none (threadpoolctl missing, no BLAS found)
_outside = None           # the thread counts the libraries had when gpubp's outermost limit began
_depth = 0                # nesting of limited(): fit's limit around its Stepper's


_info = None              # threadpoolctl's controller of the first BLAS (its name and version)


def _get_set(c):
    """(get, set) of the thread count of threadpoolctl's controller ``c``: for OpenBLAS with its own
    threads, its C functions resolved once (threadpoolctl resolves them on every call, building the
    symbol's name each time: a microsecond and a few small objects a step), else ``c``'s methods."""
    if c.internal_api == "openblas" and c.threading_layer != "openmp":
        try:
            get, set_ = c._get_symbol("openblas_get_num_threads"), c._get_symbol("openblas_set_num_threads")
            if get is not None and set_ is not None:
                return get, set_
        except Exception:        # another threadpoolctl's internals: its public methods then
            pass
    return c.get_num_threads, c.set_num_threads


def _libs():
    """(get, set) for every loaded BLAS (found once: threadpoolctl's search costs ~2 ms)."""
    global _controllers, _why_none, _info
    if _controllers is None:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:
            _controllers, _why_none = [], "threadpoolctl is not installed (pip install threadpoolctl)"
            return _controllers
        import numpy  # noqa: F401  (NumPy's BLAS must be loaded to be found)
        found = [c for c in ThreadpoolController().lib_controllers if c.user_api == "blas"]
        _controllers = [_get_set(c) for c in found]
        ours = [c for c in found if "numpy" in (c.filepath or "")]     # NumPy's own, named first
        _info = (ours or found or [None])[0]
        if not found:
            _why_none = "threadpoolctl finds no BLAS library loaded"
    return _controllers


_setting = None           # GPUBP_BLAS_THREADS as read (once: os.environ costs 2 us a read)


def setting() -> str:
    """``GPUBP_BLAS_THREADS`` as gpubp reads it, the first time it is asked (call :func:`refresh` after
    changing it in a running process): 'auto', 'off' or a positive integer as text."""
    global _setting
    if _setting is None:
        raw = os.environ.get(ENV, "auto")
        value = raw.strip().lower() or "auto"
        if not (value in ("auto", "off") or (value.isdigit() and int(value) > 0)):
            raise ValueError(f"{ENV}={raw!r}: use 'auto', 'off' or a positive number of threads")
        _setting = value
    return _setting


def refresh() -> None:
    """Read ``GPUBP_BLAS_THREADS`` again, and forget the contexts made per net and batch."""
    global _setting
    _setting = None
    _limits.clear()


def default_threads() -> int | None:
    """The BLAS's own thread count now (outside any gpubp limit), or None without a BLAS to control."""
    libs = _libs()
    if not libs:
        return None
    if _depth and _outside:
        return _outside[0]
    return libs[0][0]()


def step_macs(sizes, B) -> int:
    """Multiply-adds of the GEMMs of one training step on B rows: the forward and the weight-gradient
    product of every layer, BP2's of every layer but the first."""
    pairs = [i * o for i, o in zip(sizes[:-1], sizes[1:])]
    return B * (2 * sum(pairs) + sum(pairs[1:]))


def threads_for(sizes, B) -> int | None:
    """The BLAS threads for a step (or forward pass) of ``sizes`` on ``B`` rows: 1 where the step's
    GEMMs come to fewer than ONE_THREAD_BELOW multiply-adds, else None (the count outside gpubp); an
    integer ``GPUBP_BLAS_THREADS`` is used as it is, and 'off' gives None."""
    mode = setting()
    if mode == "off":
        return None
    if mode != "auto":
        return int(mode)
    return 1 if step_macs(sizes, B) < ONE_THREAD_BELOW else None


class limited:
    """``with limited(n):`` the BLAS runs on ``n`` threads (None: the count it had outside gpubp),
    restored on exit.  Costs under a microsecond when nothing changes (fit's limit around its
    steps), a few when it does; does nothing without threadpoolctl.  One object may be entered
    again inside itself (the counts it saved are a stack)."""

    __slots__ = ("n", "saved")

    def __init__(self, n):
        self.n, self.saved = n, []

    def __enter__(self):
        global _depth, _outside
        libs = _controllers if _controllers is not None else _libs()
        now = [get() for get, _ in libs]
        self.saved.append(now)
        if _depth == 0:
            _outside = now
        _depth += 1
        n = self.n
        for (_, set_), before, outside in zip(libs, now, _outside):
            want = outside if n is None else n
            if want != before:
                set_(want)
        return self

    def __exit__(self, *exc):
        global _depth, _outside
        saved, n = self.saved.pop(), self.n
        for (_, set_), before, outside in zip(_controllers, saved, _outside):
            if before != (outside if n is None else n):       # what __enter__ changed, put back
                set_(before)
        _depth -= 1
        if _depth == 0:
            _outside = None
        return False


_pins = 0                 # inside pinned(): gpubp's own choice is off


class pinned(limited):
    """``with pinned(n):`` the BLAS runs on ``n`` threads and gpubp's own choice is off inside
    (:func:`limit_for` changes nothing): how ``gpubp bench`` times a step on a given thread count."""

    __slots__ = ()

    def __enter__(self):
        global _pins
        _pins += 1
        return super().__enter__()

    def __exit__(self, *exc):
        global _pins
        try:
            return super().__exit__(*exc)
        finally:
            _pins -= 1


#: below this many multiply-adds OpenBLAS runs a GEMM on one thread by itself (SMP_THRESHOLD_MIN ·
#: GEMM_MULTITHREAD_THRESHOLD in its interface/gemm.c): a step of only such GEMMs needs no switch
OPENBLAS_ONE_THREAD_UPTO = 65536 * 4

_NOTHING = contextlib.nullcontext()
_limits = {}              # (B, *sizes) -> the context of those steps


def limit_for(sizes, B):
    """The context that sets the BLAS threads for a step (or forward pass) of ``sizes`` on ``B`` rows
    (:func:`threads_for`), made once per net and batch: ``with blas.limit_for(sizes, B): ...``."""
    if _pins:
        return _NOTHING
    key = (B, *sizes)
    ctx = _limits.get(key)
    if ctx is None:
        libs, n = _libs(), threads_for(sizes, B)
        largest = B * max(i * o for i, o in zip(sizes[:-1], sizes[1:]))
        auto_small = setting() == "auto" and largest <= OPENBLAS_ONE_THREAD_UPTO and _info is not None \
            and _info.internal_api == "openblas"
        ctx = _NOTHING if setting() == "off" or auto_small or not libs else limited(n)
        if len(_limits) > 256:
            _limits.clear()
        _limits[key] = ctx
    return ctx


def describe(sizes=None, B=None) -> str:
    """One line for ``gpubp info`` and the train log: the BLAS, its thread count, and what gpubp picks
    (for ``sizes`` and ``B`` when given, else the rule)."""
    libs = _libs()
    if not libs:
        return f"BLAS threads: not controlled ({_why_none})"
    name = f"{_info.internal_api} {_info.version or ''}".strip()
    n = default_threads()
    try:
        mode = setting()
    except ValueError as e:
        return f"BLAS: {name}, {n} thread(s); {e}"
    if mode == "off":
        return f"BLAS: {name}, {n} thread(s); gpubp leaves them alone ({ENV}=off)"
    if mode != "auto":
        return f"BLAS: {name}, {n} thread(s) by default; gpubp runs its GEMMs on {mode} ({ENV}={mode})"
    rule = (f"1 thread for steps of fewer than {ONE_THREAD_BELOW:.2g} multiply-adds, else {n}; {ENV}=N or off "
            f"to override")
    if sizes is None:
        return f"BLAS: {name}, {n} thread(s) by default; gpubp uses {rule}"
    chosen, macs = threads_for(sizes, B), step_macs(sizes, B)
    why = f"a step is {macs:.2g} multiply-adds, {'below' if chosen == 1 else 'not below'} {ONE_THREAD_BELOW:.2g}"
    if limit_for(sizes, B) is _NOTHING and chosen == 1:
        why += "; OpenBLAS keeps GEMMs this small on one thread itself"
    return (f"BLAS: {name}, {chosen or n} thread(s) for the training steps ({why}; {n} by default; "
            f"{ENV}=N or off to override)")
