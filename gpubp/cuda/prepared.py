"""Prepared training steps: the device work of one step recorded once, as validated
launches, and replayed as raw calls.

Every launcher checks every array on every call (dtypes, shapes, contiguity,
aliasing, 32-bit limits): about 60 µs of Python per launch, which a small net's
step (8 to 16 launches of a few µs each on a GPU) cannot afford.  A kernel
backend therefore records the first step a Stepper (or ``MLP.step``) makes for a
batch size: each op of the step, run as usual, hands its work to the backend
(``KernelBackend._submit``) as one of

    Launch   a kernel launch its launcher validated (``gpubp.cuda.launchers``):
             the raw function, grid, block, shared memory, the argument tuple with
             its scalars already of the C types
    Call     an array-module call writing into arrays it is given
             (``xp.take(X, idx, axis=0, out=x)``, ``xp.matmul(a, W, out=z)``)
    OpCall   a backend op written as array expressions (the unfused update),
             replayed as the op itself

and a later step of the same shape replays the list: one Python call per op.
Validation is exactly as strict as before; it happens where the arrays are
bound.  What changes per step is passed as a *slot*: the recorded run's row
indices (``"idx"``), the caller's X (``"x"``, read in place by ``MLP.step``) and
the row of per-sample costs fit collects (``"loss"``) are found by identity in
every op's arguments and replaced on each replay; the caller checks them in
O(1) (and the indices' range in one reduction).
"""
from __future__ import annotations

import functools
import operator

from .launchers import Launch


class Call:
    """``getattr(backend.xp, name)(*args, **kwargs)``: an array-module call of a step.  The function is
    looked up on every run, so a backend that swaps its array module (the emulated CUDA-graph check's
    recorder) sees every call."""

    __slots__ = ("backend", "name", "args", "kwargs")

    def __init__(self, backend, name, args, kwargs):
        self.backend, self.name, self.args, self.kwargs = backend, name, args, kwargs

    def __call__(self) -> None:
        getattr(self.backend.xp, self.name)(*self.args, **self.kwargs)

    def __repr__(self):
        return f"<Call xp.{self.name}>"


class OpCall:
    """A backend op replayed whole (``fn(*args, **kwargs)``): array expressions with in-place operators
    that no single array-module call holds.  Ops nested inside it are not recorded again."""

    __slots__ = ("fn", "args", "kwargs")

    def __init__(self, fn, args, kwargs):
        self.fn, self.args, self.kwargs = fn, args, kwargs

    def __call__(self) -> None:
        self.fn(*self.args, **self.kwargs)

    def __repr__(self):
        return f"<OpCall {getattr(self.fn, '__name__', self.fn)}>"


def _substituted(by_id, items):
    """The positions (or keyword names) whose argument is a slot, found by identity, with the slot's name."""
    return tuple((k, by_id[id(v)]) for k, v in items if id(v) in by_id)


class PreparedStep:
    """The ops of one recorded step; ``step(values)`` replays them with ``values[name]`` for each slot.

    ``bound`` holds the model's parameter arrays the ops were recorded on (``bound_to`` tells whether the
    model still has those very arrays: a model given new arrays records again)."""

    def __init__(self, ops, slots: dict, bound: tuple = ()):
        self.ops = list(ops)
        self.bound = bound
        self.values = {}                 # the slots' arrays of the replay under way
        by_id = {id(v): name for name, v in slots.items() if v is not None}
        self.slots = tuple(sorted(set(by_id.values())))
        self._runs = tuple(self._compile(op, by_id) for op in self.ops)

    @property
    def launches(self) -> list:
        """The kernel launches among the ops, in order."""
        return [op for op in self.ops if isinstance(op, Launch)]

    def __len__(self):
        return len(self.ops)

    def bound_to(self, params: tuple) -> bool:
        bound = self.bound
        return len(params) == len(bound) and all(map(operator.is_, params, bound))

    def _compile(self, op, by_id):
        """A callable for one op with no arguments: the raw call with its fixed arguments bound, the slot
        arguments read from ``self.values``."""
        if isinstance(op, Launch):
            subs = _substituted(by_id, enumerate(op.args))
            if not subs:                           # the raw call itself (a keyword costs a dict a call)
                if op.shared_mem:
                    return functools.partial(op.fn, op.grid, op.block, op.args, shared_mem=op.shared_mem)
                return functools.partial(op.fn, op.grid, op.block, op.args)
            return functools.partial(_launch_with_slots, self, op, subs)
        subs = _substituted(by_id, enumerate(op.args))
        ksubs = _substituted(by_id, op.kwargs.items())
        if not subs and not ksubs:
            if isinstance(op, Call):               # the module's function looked up on each run, as Call does
                backend, name, args, kwargs = op.backend, op.name, op.args, op.kwargs
                return lambda: getattr(backend.xp, name)(*args, **kwargs)
            return op
        return functools.partial(_call_with_slots, self, op, subs, ksubs)

    def __call__(self, values: dict) -> None:
        self.values = values
        for run in self._runs:
            run()


def _launch_with_slots(step, op, subs):
    args, values = list(op.args), step.values
    for pos, name in subs:
        args[pos] = values[name]
    op.fn(op.grid, op.block, tuple(args), shared_mem=op.shared_mem)


def _call_with_slots(step, op, subs, ksubs):
    args, values = list(op.args), step.values
    for pos, name in subs:
        args[pos] = values[name]
    kwargs = op.kwargs
    if ksubs:
        kwargs = dict(kwargs)
        for key, name in ksubs:
            kwargs[key] = values[name]
    fn = getattr(op.backend.xp, op.name) if isinstance(op, Call) else op.fn
    fn(*args, **kwargs)
