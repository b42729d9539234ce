// cuda_pipeline_primitives.h for the gpubp emulator: the primitives are in cuda_shim.h,
// so a kernel that includes the real header on a GPU compiles here unchanged.
#pragma once
