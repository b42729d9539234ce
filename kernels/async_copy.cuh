/*
 * async_copy.cuh -- asynchronous global -> shared copies (sm_80's cp.async), for the main loop of
 * gemm_mainloop.cuh: a chunk's tiles go straight from global to shared memory while the FMAs of the
 * chunk before run, with no registers holding them on the way.  Three calls, per thread:
 *
 *   async_copy<BYTES>(dst, src, src_bytes)   BYTES = 4, 8 or 16; dst (shared) and src (global) aligned
 *       to BYTES.  After the wait, dst[0 .. BYTES) holds src's first src_bytes bytes and zeros after
 *       them (src_bytes = 0 reads nothing: a tile's elements past the matrix are zero-filled).
 *   async_commit()    the copies issued since the last commit form a group.
 *   async_wait_all()  every group this thread committed has landed in shared memory.  Other threads'
 *       copies are visible only after a __syncthreads() that follows their waits.
 *
 * On a GPU these are the PTX instructions themselves (cp.async.{ca,cg}.shared.global with a source
 * size, cp.async.commit_group, cp.async.wait_all), so no CUDA header is needed: CuPy's NVRTC finds
 * cuda_pipeline.h only where a CUDA toolkit or the nvidia-cuda-runtime wheel lies beside it.  The
 * emulated device cannot run PTX: there they are cuda_pipeline.h's __pipeline_memcpy_async (with
 * zfill = BYTES − src_bytes), __pipeline_commit and __pipeline_wait_prior(0), the primitives that
 * header builds from these same instructions, and the emulator lands each copy at the wait, never
 * earlier (a read before it, or of another thread's copy before the barrier, reads NaN).
 * Defined (GPUBP_HAS_ASYNC_COPY = 1) for sm_80 and newer, on a GPU and on the emulated device alike;
 * below sm_80 the callers stage through registers.
 * Inlined into each family's source by gpubp.cuda.sources, as sigmoid.cuh is.
 */
#ifndef GPUBP_ASYNC_COPY_CUH
#define GPUBP_ASYNC_COPY_CUH

#if defined(GPUBP_EMULATOR) && __CUDA_ARCH__ >= 800     // the emulator defines __CUDA_ARCH__ as its target's
#define GPUBP_HAS_ASYNC_COPY 1
template <int BYTES>
__device__ inline void async_copy(void* dst, const void* src, int src_bytes) {
    __pipeline_memcpy_async(dst, src, BYTES, BYTES - src_bytes);
}
__device__ inline void async_commit() { __pipeline_commit(); }
__device__ inline void async_wait_all() { __pipeline_wait_prior(0); }

#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#define GPUBP_HAS_ASYNC_COPY 1
template <int BYTES>
__device__ inline void async_copy(void* dst, const void* src, int src_bytes) {
    static_assert(BYTES == 4 || BYTES == 8 || BYTES == 16, "cp.async copies 4, 8 or 16 bytes");
    const unsigned d = static_cast<unsigned>(__cvta_generic_to_shared(dst));
    if (BYTES == 16)      // .cg: through L2 only (the tile is read once a block)
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" :: "r"(d), "l"(src), "r"(src_bytes) : "memory");
    else                  // .ca: the only form of 4- and 8-byte copies
        asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;\n" :: "r"(d), "l"(src), "n"(BYTES), "r"(src_bytes)
                     : "memory");
}
__device__ inline void async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
__device__ inline void async_wait_all() { asm volatile("cp.async.wait_all;\n" ::: "memory"); }

#else
#define GPUBP_HAS_ASYNC_COPY 0
#endif

#endif  // GPUBP_ASYNC_COPY_CUH
