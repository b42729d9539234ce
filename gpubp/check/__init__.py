"""``gpubp check``: prove and measure the GPU path (``--gpu``) or the CPU
path (the emulated device, NVRTC) in one offline command, with a report.

    kernels      every kernel, naive and fast, f32 and f64, against the float64
                 reference on the awkward shapes (shared with tests/test_kernels.py)
    fit          fit on a kernel backend against NumPy, per backend option
    sanitizers   compute-sanitizer's tools over the kernel checks, and their counts
    report       check.json and check.md
    run          the parts in order, and the command's exit status

Importing this package imports none of its parts.
"""


def describe(e: BaseException) -> str:
    """An error as one report line: its type and the first line of its message."""
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"
