"""Turning the runtime's error record into an EmulatedDeviceError with a useful message.

The message names the kernel and module, the block and thread (as CUDA
``(x, y, z)`` indices), and for memory errors the parameter, its element
index, which side of the array and whether it was a read or a write.
"""
from __future__ import annotations

from . import _abi
from ._abi import (E_ABORT, E_ARITH, E_ASYNC, E_BARRIER_EXIT, E_BARRIER_SPLIT, E_CANARY, E_FAULT, E_ILLEGAL,
                   E_MISALIGNED, E_SMEM_CANARY, E_STACK, E_WARP, SI_KERNEL, SPACE_DYNAMIC_SHARED, SPACE_GLOBAL,
                   SPACE_SHARED, STACK_KIB)
from ._errors import EmulatedDeviceError


def device_error(kernel: str, module: str, params, e: _abi.Error, block3, args, buffers,
                 shared_mem: int = 0) -> EmulatedDeviceError:
    """The exception for a failed launch: ``params`` are the kernel's parameters
    (name, ctype), ``args`` the launch arguments, ``buffers`` the guarded
    buffers as (pointer, nbytes, [indices of the parameters using it]),
    ``shared_mem`` the launch's dynamic shared memory."""
    where = f"kernel {kernel} ({module})"
    blk = tuple(e.block)
    thr = tuple(e.thread)

    def tid(linear: int) -> tuple[int, int, int]:
        return (linear % block3[0], linear // block3[0] % block3[1], linear // (block3[0] * block3[1]))

    at = f"in block {blk}, thread {thr}"
    if e.code in (E_WARP, E_ASYNC):
        return EmulatedDeviceError(f"{where}: {e.message.decode()} ({at})", kernel=kernel, block=blk, thread=thr)
    if e.code == E_SMEM_CANARY:
        return EmulatedDeviceError(
            f"{where}: write past the end of dynamic shared memory: byte {e.byte_offset} of the extern __shared__ "
            f"arrays was written, and the launch has shared_mem={shared_mem} bytes (found after the launch, so the "
            f"writing block and thread are unknown)", kernel=kernel, index=e.byte_offset, access="write")
    if e.code == E_MISALIGNED:
        access = {0: "read", 1: "write"}.get(e.access, "access")
        size, what = e.access_size, e.message.decode()
        param = index = None
        if e.space == SPACE_GLOBAL and e.buffer >= 0:
            users = buffers[e.buffer][2]
            p = params[users[0]]
            itemsize = args[users[0]].itemsize
            param, index = p.name, e.byte_offset // itemsize
            names = " (the same array as " + ", ".join(repr(params[i].name) for i in users[1:]) + ")" \
                if len(users) > 1 else ""
            loc = (f"parameter {p.name!r}{names} ({p.ctype}, {args[users[0]].size} elements) at byte offset "
                   f"{e.byte_offset} (element index {index})")
        elif e.space == SPACE_DYNAMIC_SHARED:
            loc = f"dynamic shared memory (extern __shared__) at byte offset {e.byte_offset}"
        elif e.space == SPACE_SHARED:
            loc = f"static shared memory at byte {e.byte_offset} of the module's __shared__ variables"
        else:
            loc = f"address {e.address:#x}"
        return EmulatedDeviceError(
            f"{where}: misaligned address: a {size}-byte {what} {access} of {loc}, {e.address % size} bytes past a "
            f"multiple of {size}, {at} (a GPU faults with 'misaligned address'; vector loads and stores need an "
            f"address aligned to their size)", kernel=kernel, block=blk, thread=thr, param=param, index=index,
            access=access)
    if e.code in (E_FAULT, E_CANARY) and e.buffer >= 0:
        users = buffers[e.buffer][2]
        p = params[users[0]]
        names = " (the same array as " + ", ".join(repr(params[i].name) for i in users[1:]) + ")" \
            if len(users) > 1 else ""
        itemsize = args[users[0]].itemsize
        n = args[users[0]].size
        index = e.byte_offset // itemsize
        desc = f"parameter {p.name!r}{names} ({p.ctype}, {n} elements)"
        if e.code == E_CANARY:
            last = e.byte_offset_last // itemsize
            return EmulatedDeviceError(
                f"{where}: write before the start of {desc}: element index {index}"
                + (f" to {last}" if last != index else "") + " was overwritten (found by a canary after the "
                "launch, so the writing block and thread are unknown)", kernel=kernel, param=p.name,
                index=index, access="write")
        access = {0: "read", 1: "write"}.get(e.access)
        if 0 <= e.byte_offset < args[users[0]].nbytes:
            return EmulatedDeviceError(f"{where}: write to {desc} at element index {index}, which is const "
                                       f"(read-only) {at}", kernel=kernel, block=blk, thread=thr,
                                       param=p.name, index=index, access="write")
        side = "before the start" if e.byte_offset < 0 else "past the end"
        return EmulatedDeviceError(f"{where}: out-of-bounds {access or 'access'} of {desc} at element index "
                                   f"{index} ({side}) {at}", kernel=kernel, block=blk, thread=thr,
                                   param=p.name, index=index, access=access)
    if e.code == E_FAULT:
        access = {0: "read", 1: "write"}.get(e.access)
        nulls = [p.name for p, a in zip(params, args) if p.pointer and a is None]
        if e.si_code == SI_KERNEL:  # x86-64 general protection fault: no address
            what = ("general protection fault: a misaligned vector access (float4/double2 at an address that "
                    "is not 16-byte aligned) or a non-canonical wild pointer")
        elif e.address < 65536:
            what = "NULL pointer dereference" + (f" (passed None: {', '.join(nulls)})" if nulls else "")
        else:
            what = f"invalid address {e.address:#x}, outside every array argument and its guard pages"
        return EmulatedDeviceError(f"{where}: {access or 'access'} fault: {what} {at}", kernel=kernel,
                                   block=blk, thread=thr, access=access)
    if e.code == E_STACK:
        return EmulatedDeviceError(f"{where}: stack overflow (each thread has {STACK_KIB} KiB: large local "
                                   f"arrays or recursion) {at}", kernel=kernel, block=blk, thread=thr)
    if e.code == E_ARITH:
        return EmulatedDeviceError(f"{where}: arithmetic exception (integer division by zero, or INT_MIN / -1) "
                                   f"{at}", kernel=kernel, block=blk, thread=thr)
    if e.code == E_ILLEGAL:
        return EmulatedDeviceError(f"{where}: illegal instruction {at}", kernel=kernel, block=blk, thread=thr)
    if e.code == E_ABORT:
        return EmulatedDeviceError(f"{where}: device-side assert triggered {at}: {e.message.decode()}",
                                   kernel=kernel, block=blk, thread=thr)
    if e.code == E_BARRIER_EXIT:
        listed = [tid(e.listed_thread[j]) for j in range(min(e.n_listed, 4))]
        more = f" and {e.n_exited - len(listed)} more" if e.n_exited > len(listed) else ""
        return EmulatedDeviceError(
            f"{where}: in block {blk}, {e.n_exited} thread(s) returned while {e.n_waiting} other(s) wait at "
            f"__syncthreads() on line {e.line}: thread(s) {', '.join(map(str, listed))}{more} skipped a barrier "
            f"their block reaches (undefined on a GPU: a hang or stale shared memory). Every thread of a block "
            f"must reach each __syncthreads(): guard the work, not the barrier",
            kernel=kernel, block=blk, thread=listed[0] if listed else None)
    if e.code == E_BARRIER_SPLIT:
        sites = "; ".join(f"line {e.listed_line[j]} (thread {tid(e.listed_thread[j])}"
                          + (f" and {e.listed_count[j] - 1} more)" if e.listed_count[j] > 1 else ")")
                          for j in range(e.n_listed))
        return EmulatedDeviceError(f"{where}: threads of block {blk} wait at different __syncthreads() call "
                                   f"sites (a divergent barrier, undefined on a GPU): {sites}",
                                   kernel=kernel, block=blk, thread=tid(e.listed_thread[0]))
    return EmulatedDeviceError(f"{where}: launch failed (code {e.code}): {e.message.decode()}",
                               kernel=kernel)
