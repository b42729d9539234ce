"""Everything CUDA: the kernel sources, their launchers, the kernel backends,
NVRTC, and the emulated device.  Layered bottom-up, each module importing only
those above it in this list:

    archs       per-architecture limits (threads, registers, shared memory per SM and block)
    sources     where kernels/*.cu live, their tunables, a cached KernelSet per device
    emulator/   an emulated CUDA device: the .cu source compiled for the CPU
    launchers   one validating launcher per kernel (the launch shape lives here)
    nvrtc       compile every family for real GPU architectures, read registers/spills
    backend     the MLP's ops on the kernels: the "emulated" and "cupy" backends

Nothing here is imported by ``import gpubp`` until a kernel backend is asked for.
"""
