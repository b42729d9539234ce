"""ctypes mirror of the ABI of runtime.cpp (structs and codes); keep the two in step.

``ABI_VERSION`` and the size of the error struct are checked when a library
is loaded, so a mismatch fails loudly instead of misreading memory.
"""
import ctypes

ABI_VERSION = 2
E_OK, E_FAULT, E_BARRIER_EXIT, E_BARRIER_SPLIT, E_CANARY, E_STACK, E_ARITH, E_ILLEGAL, E_ABORT, E_SYSTEM, \
    E_CONFIG, E_WARP, E_MISALIGNED, E_ASYNC, E_SMEM, E_SMEM_CANARY = range(16)
SPACE_UNKNOWN, SPACE_GLOBAL, SPACE_SHARED, SPACE_DYNAMIC_SHARED = range(4)
ARG_VALUE, ARG_BUFFER, ARG_NULL = range(3)
MAX_LISTED = 16
SI_KERNEL = 0x80  # siginfo si_code of a fault without an address
MAX_ARGS = 256
STACK_KIB = 64


class Buffer(ctypes.Structure):
    _fields_ = [("host", ctypes.c_void_p), ("nbytes", ctypes.c_int64),
                ("copy_out", ctypes.c_int32), ("read_only", ctypes.c_int32)]


class Arg(ctypes.Structure):
    _fields_ = [("kind", ctypes.c_int32), ("buffer", ctypes.c_int32), ("value", ctypes.c_void_p)]


class Error(ctypes.Structure):
    _fields_ = [("code", ctypes.c_int32), ("signo", ctypes.c_int32), ("si_code", ctypes.c_int32),
                ("block", ctypes.c_uint32 * 3), ("thread", ctypes.c_uint32 * 3),
                ("buffer", ctypes.c_int32), ("access", ctypes.c_int32),
                ("byte_offset", ctypes.c_int64), ("byte_offset_last", ctypes.c_int64),
                ("address", ctypes.c_uint64), ("line", ctypes.c_int32),
                ("n_exited", ctypes.c_int32), ("n_waiting", ctypes.c_int32), ("n_listed", ctypes.c_int32),
                ("listed_thread", ctypes.c_int32 * MAX_LISTED), ("listed_line", ctypes.c_int32 * MAX_LISTED),
                ("listed_count", ctypes.c_int32 * MAX_LISTED), ("space", ctypes.c_int32),
                ("access_size", ctypes.c_int32), ("static_smem", ctypes.c_int64), ("message", ctypes.c_char * 512)]


class SharedCfg(ctypes.Structure):
    _fields_ = [("dynamic_bytes", ctypes.c_int64), ("static_budget", ctypes.c_int64),
                ("nvars", ctypes.c_int32), ("vars", ctypes.POINTER(ctypes.c_int64))]


class ParamDesc(ctypes.Structure):
    _fields_ = [("pointer", ctypes.c_int), ("const_pointee", ctypes.c_int),
                ("category", ctypes.c_int), ("size", ctypes.c_int)]
