/*
 * gemm_mainloop.cuh -- the tiled main loop of the three GEMM-shaped families (forward_gemm.cu,
 * backward_gemm.cu, weight_grad.cu), written once: acc = A·B over a range of k for one TILE×TILE
 * tile of the output, each thread holding a TM×TM micro-tile in registers.  The families differ
 * only in where A and B come from and in the epilogue they apply to acc (bias + σ; the σ'
 * product; scale, bias gradient and SGD update).  Inlined into each family's source by
 * gpubp.cuda.sources, as sigmoid.cuh is.
 *
 * Math: acc[i][j] = Σ_{k_begin <= k < k_end} A[m0 + tm0 + i, k] · B[k, n0 + tn0 + j]
 *
 * Operands, row-major in memory as the MLP holds them (ld = the stored row's length):
 *   A is M×K:  A_KMAJOR = false: A[m, k] at A[m·lda + k]   (a_prev, delta_next)
 *              A_KMAJOR = true:  A[m, k] at A[k·lda + m]   (a_prevᵀ of the weight gradient)
 *   B is K×N:  B_KMAJOR = true:  B[k, n] at B[k·ldb + n]   (W, delta)
 *              B_KMAJOR = false: B[k, n] at B[n·ldb + k]   (W_nextᵀ of BP2, read in place)
 *
 * The block: GEMM_THREADS(T) = (TILE/TM)² threads in one dimension, TM = MICRO in f32 and
 * MICRO/2 in f64 (a double takes two registers: the same register budget).  Thread t holds the
 * rows tm0 = (t / (TILE/TM))·TM … +TM and the columns tn0 = (t % (TILE/TM))·TM … +TM: contiguous,
 * so each k's fragment of A and of B is read from shared memory with TM/V loads of 16 bytes
 * (V = 16 / sizeof(T)), and the TM² FMAs of a k cost 2·TM/V shared loads: with MICRO = 8, 16
 * FFMA per shared load instruction in f32 (the old 4×4 tile, read element by element: 2).
 *
 * Shared memory: STAGES (two; one under PIPELINE 1) stages of As[BK][TILE + V] and Bs[BK][TILE + V],
 * both k-major (As[k][m] = A[m0 + m, k0 + k]): STAGES·2·BK·(TILE + V)·sizeof(T) bytes, 4.25 KiB (f32)
 * and 8.25 KiB (f64) at the defaults (BK = 4).  The V elements of padding keep every row 16-byte aligned and
 * put the rows a transposing store writes (k and k + V) in different banks.
 *
 * The loop, a chunk of BK at a time, one of three schedules (the tunable PIPELINE; each is a step
 * of the ladder the kernel bench times side by side):
 *   PIPELINE 1: one stage, v1's schedule: load, barrier, FMAs, barrier; nothing overlaps.
 *   PIPELINE 2: two stages, register double buffering: the next chunk's global loads are issued
 *     into registers before the current chunk's FMAs and stored into the other stage after them.
 *     One barrier a chunk, at its end: it follows every thread's stores (and, under PIPELINE 3, its
 *     wait for its copies) of the next chunk, and every thread's reads of the stage that the chunk
 *     after overwrites.  (With the barrier at the chunk's start instead, ptxas gave BP2 130
 *     registers on sm_90, 127 this way: over 128, 6 blocks of 64 threads an SM instead of 8.)
 *   PIPELINE 3 (the default): as 2, but an operand stored k-major (A_KMAJOR, B_KMAJOR: W, delta, and
 *     a_prevᵀ) goes to its stage by asynchronous copies (async_copy.cuh: cp.async, sm_80 and newer;
 *     below sm_80 PIPELINE 3 is 2): issued before the current chunk's FMAs, landing while they run,
 *     through no registers.  A copy cannot transpose, so an operand staged transposed stays on
 *     registers (element-wise copies would issue 4 times the requests of its 16-byte loads).
 * A global load is V elements wide where the operand allows it (vec_a, vec_b:
 * its pointer 16-byte aligned and its ld a multiple of V, decided by the launcher per launch
 * from the real addresses; step() reads the caller's X where it lies) and the V elements lie
 * inside the matrix (a 16-byte copy zero-fills what lies past M or N); element by element,
 * zero-filled past M, N or k_end, otherwise.  The tile
 * coordinates of a thread's loads are fixed for the launch; each chunk adds BK to one of them.
 *
 * Split-K (split_fixup): where a launch's output tiles alone would leave most SMs idle, the launcher
 * splits each tile's reduction over gridDim.z blocks; each writes its partial sums to a workspace and
 * the last of a tile's blocks to finish (an int counter a tile) adds them in a fixed order and applies
 * the epilogue once.
 *
 * Indices are 32-bit: the launchers require M·K, K·N and splits·M·N <= 2^31 − 1 and k_end + BK,
 * M + TILE, N + TILE below 2^31.
 */
#ifndef GPUBP_GEMM_MAINLOOP_CUH
#define GPUBP_GEMM_MAINLOOP_CUH

#ifndef TILE
#define TILE 64     // edge of the output tile one block computes
#endif
#ifndef MICRO
#define MICRO 8     // edge of the micro-tile one thread computes in f32 (f64: MICRO / 2)
#endif
#ifndef BK
#define BK 4        // k staged in shared memory per chunk (8 spills the f32 tile on sm_100)
#endif
#ifndef PIPELINE
#define PIPELINE 3  // 3: cp.async double buffering (sm_80+, else 2); 2: register double buffering; 1: one stage
#endif

#include "async_copy.cuh"  // async_copy, async_commit, async_wait_all; GPUBP_HAS_ASYNC_COPY

#define GEMM_ASYNC (PIPELINE == 3 && GPUBP_HAS_ASYNC_COPY)   // this arch's schedule copies asynchronously

// The chunk's copies form a group; wait for this thread's groups (nothing where there are no copies).
__device__ inline void copies_commit() {
#if GEMM_ASYNC
    async_commit();
#endif
}
__device__ inline void copies_wait() {
#if GEMM_ASYNC
    async_wait_all();
#endif
}

// 16 bytes of T, and how they unpack into registers.
template <typename T> struct Vec;
template <> struct Vec<float> { using type = float4; static constexpr int n = 4; };
template <> struct Vec<double> { using type = double2; static constexpr int n = 2; };
__device__ inline void unpack(float* r, const float4& v) { r[0] = v.x; r[1] = v.y; r[2] = v.z; r[3] = v.w; }
__device__ inline void unpack(double* r, const double2& v) { r[0] = v.x; r[1] = v.y; }
__device__ inline float4 pack(const float* r) { return make_float4(r[0], r[1], r[2], r[3]); }
__device__ inline double2 pack(const double* r) { return make_double2(r[0], r[1]); }

// The tile's shape for T, from the tunables.
template <typename T>
struct Gemm {
    static constexpr int TM = sizeof(T) == 4 ? MICRO : (MICRO / 2 > 0 ? MICRO / 2 : 1);  // micro-tile edge
    static constexpr int EDGE = TILE / TM;                   // threads along m, and along n
    static constexpr int THREADS = EDGE * EDGE;
    static constexpr int V = (TILE % Vec<T>::n == 0 && BK % Vec<T>::n == 0) ? Vec<T>::n : 1;  // a global load
    static constexpr int LD = TILE + V;                      // a row of a shared stage
    static constexpr int SLOTS = TILE * BK / V;              // V-wide loads a stage of one operand
    static constexpr int PER_THREAD = (SLOTS + THREADS - 1) / THREADS;
    static constexpr bool VEC_FRAGMENT = TM % Vec<T>::n == 0 && V == Vec<T>::n;   // 16-byte shared loads
};
constexpr int GEMM_THREADS_F32 = Gemm<float>::THREADS;      // (named, not macros: __launch_bounds__ takes them)
constexpr int GEMM_THREADS_F64 = Gemm<double>::THREADS;

static_assert(TILE % MICRO == 0 && MICRO >= 1, "TILE must be a multiple of MICRO");
static_assert(PIPELINE >= 1 && PIPELINE <= 3, "PIPELINE is 1 (one stage), 2 (register double buffering) or 3 (cp.async)");
constexpr int STAGES = PIPELINE == 1 ? 1 : 2;              // shared stages of each operand
static_assert(GEMM_THREADS_F32 <= 1024 && GEMM_THREADS_F64 <= 1024,
              "(TILE / MICRO)^2 threads (and (TILE / (MICRO/2))^2 in f64) must be at most 1024 per block");
static_assert(2 * 2 * BK * (TILE + 2) * sizeof(double) <= 48 * 1024,
              "the two stages of the f64 tiles, 4*BK*(TILE+2) doubles, must fit CUDA's 48 KiB of static shared "
              "memory per block");

// One operand's stage loads: the V-wide loads of this thread, into registers, then into shared memory.
//   CONTIG_X: the stored rows run along the tile's m (or n), i.e. k-major (A_KMAJOR, B_KMAJOR);
//   else along k (the tile is transposed while staged).
template <typename T, bool CONTIG_X>
struct Operand {
    using G = Gemm<T>;
    static constexpr bool ASYNC = GEMM_ASYNC && CONTIG_X;   // staged by cp.async (a copy cannot transpose)
    const T* p;            // the matrix
    int ld;                // its stored row's length
    int rows_x;            // M (or N): the tile's x past it is zero
    bool vec;              // V-wide loads allowed (aligned pointer and ld)
    int kk[G::PER_THREAD], xx[G::PER_THREAD];     // this thread's slots: tile coordinates of their first element
    T r[ASYNC ? 1 : G::PER_THREAD][G::V];         // a chunk's loads between fetch and put (register staging)

    __device__ void init(const T* p_, int ld_, int rows_x_, bool vec_) {
        p = p_; ld = ld_; rows_x = rows_x_; vec = vec_;
        const int tid = threadIdx.x;
#pragma unroll
        for (int q = 0; q < G::PER_THREAD; q++) {
            const int s = tid + q * G::THREADS;                      // slot number (may be past SLOTS)
            if (CONTIG_X) { kk[q] = s / (TILE / G::V); xx[q] = (s % (TILE / G::V)) * G::V; }
            else          { xx[q] = s / (BK / G::V);   kk[q] = (s % (BK / G::V)) * G::V; }
        }
    }

    // Whether this thread has slot q (the last slots of a stage may be fewer than the threads).
    __device__ bool has(int q) const { return G::SLOTS % G::THREADS == 0 || threadIdx.x + q * G::THREADS < G::SLOTS; }

    // Where slot q's elements lie for the chunk at k0 (k < k_end) of the tile at x0: element j is (x + j, k)
    // if CONTIG_X, else (x, k + j), stored at s·ld + c + j, inside the matrix while s < s_lim, c + j < c_lim.
    struct Place { int s, c, s_lim, c_lim; };
    __device__ Place place(int q, int x0, int k0, int k_end) const {
        const int x = x0 + xx[q], k = k0 + kk[q];
        return CONTIG_X ? Place{k, x, k_end, rows_x} : Place{x, k, rows_x, k_end};
    }

    // Global -> registers: the chunk at k0 (k < k_end), of the tile at x0.
    template <int Q>
    __device__ void load(T (&r)[Q][G::V], int x0, int k0, int k_end) const {
#pragma unroll
        for (int q = 0; q < G::PER_THREAD; q++) {
            if (!has(q)) continue;
            const Place e = place(q, x0, k0, k_end);
            if (G::V > 1 && vec && e.s < e.s_lim && e.c + G::V <= e.c_lim) {
                unpack(r[q], *reinterpret_cast<const typename Vec<T>::type*>(p + e.s * ld + e.c));
            } else {
#pragma unroll
                for (int j = 0; j < G::V; j++)
                    r[q][j] = (e.s < e.s_lim && e.c + j < e.c_lim) ? p[e.s * ld + e.c + j] : T(0);
            }
        }
    }

    // Registers -> a shared stage, k-major: stage[k][x].
    template <int Q>
    __device__ void store(const T (&r)[Q][G::V], T (*stage)[G::LD]) const {
#pragma unroll
        for (int q = 0; q < G::PER_THREAD; q++) {
            if (!has(q)) continue;
            if (CONTIG_X) {
                if (G::V > 1) *reinterpret_cast<typename Vec<T>::type*>(&stage[kk[q]][xx[q]]) = pack(r[q]);
                else stage[kk[q]][xx[q]] = r[q][0];
            } else {
#pragma unroll
                for (int j = 0; j < G::V; j++) stage[kk[q] + j][xx[q]] = r[q][j];     // transposed
            }
        }
    }

#if GEMM_ASYNC
    // Global -> a shared stage, k-major (CONTIG_X), by asynchronous copies (they land at async_wait_all):
    // the chunk at k0 of the tile at x0, zero past rows_x and k_end.  A copy that reads nothing is given
    // the matrix's own (aligned) pointer, never an address past it.
    __device__ void copy_async(T (*stage)[G::LD], int x0, int k0, int k_end) const {
#pragma unroll
        for (int q = 0; q < G::PER_THREAD; q++) {
            if (!has(q)) continue;
            const Place e = place(q, x0, k0, k_end);
            if (G::V > 1 && vec) {                 // 16 bytes: the elements before c_lim, zeros after
                const int n = e.s < e.s_lim ? min(G::V, max(e.c_lim - e.c, 0)) : 0;
                async_copy<16>(&stage[kk[q]][xx[q]], n > 0 ? p + e.s * ld + e.c : p, n * int(sizeof(T)));
            } else {
#pragma unroll
                for (int j = 0; j < G::V; j++) {   // element by element
                    const bool in = e.s < e.s_lim && e.c + j < e.c_lim;
                    async_copy<sizeof(T)>(&stage[kk[q]][xx[q] + j], in ? p + e.s * ld + e.c + j : p,
                                          in ? int(sizeof(T)) : 0);
                }
            }
        }
    }
#endif

    // A chunk into a stage in two halves, so that the FMAs of the chunk before can run between them:
    // fetch issues it (the copies, or the global loads into r), put completes it (r into the stage).
    __device__ void fetch(T (*stage)[G::LD], int x0, int k0, int k_end) {
#if GEMM_ASYNC
        if (ASYNC) { copy_async(stage, x0, k0, k_end); return; }
#endif
        load(r, x0, k0, k_end);
    }
    __device__ void put(T (*stage)[G::LD]) const {
        if (!ASYNC) store(r, stage);
    }
};

// TM consecutive elements of a shared row into registers (16 bytes at a time where aligned).
template <typename T>
__device__ inline void load_fragment(T* f, const T* row) {
    using G = Gemm<T>;
    if (G::VEC_FRAGMENT) {
#pragma unroll
        for (int q = 0; q < G::TM / Vec<T>::n; q++)
            unpack(f + q * Vec<T>::n, reinterpret_cast<const typename Vec<T>::type*>(row)[q]);
    } else {
#pragma unroll
        for (int i = 0; i < G::TM; i++) f[i] = row[i];
    }
}

// The main loop: acc (this thread's TM×TM micro-tile, rows m0 + tm0 + i, columns n0 + tn0 + j) =
// Σ over k in [k_begin, k_end) of A[m, k] B[k, n].  Every thread of the block calls it (barriers).
template <typename T, bool A_KMAJOR, bool B_KMAJOR>
__device__ void gemm_mainloop(const T* A, int lda, bool vec_a, const T* Bm, int ldb, bool vec_b,
                              int M, int N, int k_begin, int k_end, int m0, int n0,
                              T (&acc)[Gemm<T>::TM][Gemm<T>::TM]) {
    using G = Gemm<T>;
    __shared__ __align__(16) T As[STAGES][BK][G::LD];     // As[s][k][m] = A[m0 + m, k0 + k] of stage s
    __shared__ __align__(16) T Bs[STAGES][BK][G::LD];     // Bs[s][k][n] = B[k0 + k, n0 + n]
    const int tm0 = (threadIdx.x / G::EDGE) * G::TM, tn0 = (threadIdx.x % G::EDGE) * G::TM;
#pragma unroll
    for (int i = 0; i < G::TM; i++)
#pragma unroll
        for (int j = 0; j < G::TM; j++) acc[i][j] = T(0);

    Operand<T, A_KMAJOR> a;
    Operand<T, B_KMAJOR> b;
    a.init(A, lda, M, vec_a);
    b.init(Bm, ldb, N, vec_b);
    const int chunks = k_end > k_begin ? (k_end - k_begin + BK - 1) / BK : 0;
    // this thread's TM² FMAs of one chunk, from stage s
    auto fmas = [&](int s) {
#pragma unroll
        for (int k = 0; k < BK; k++) {
            T fa[G::TM], fb[G::TM];
            load_fragment(fa, &As[s][k][tm0]);
            load_fragment(fb, &Bs[s][k][tn0]);
#pragma unroll
            for (int i = 0; i < G::TM; i++)
#pragma unroll
                for (int j = 0; j < G::TM; j++) acc[i][j] += fa[i] * fb[j];
        }
    };
#if PIPELINE == 1
    for (int t = 0; t < chunks; t++) {
        a.load(a.r, m0, k_begin + t * BK, k_end);
        b.load(b.r, n0, k_begin + t * BK, k_end);
        a.store(a.r, As[0]);
        b.store(b.r, Bs[0]);
        __syncthreads();              // the stage is staged before any thread reads it
        fmas(0);
        __syncthreads();              // every thread is done reading it before the next chunk overwrites it
    }
#else
    // Each operand is fetched (cp.async issued, or loaded into registers) into the other stage before
    // this chunk's FMAs and put (its registers stored) after them.
    constexpr bool COPIES = Operand<T, A_KMAJOR>::ASYNC || Operand<T, B_KMAJOR>::ASYNC;
    if (chunks > 0) {
        a.fetch(As[0], m0, k_begin, k_end);
        b.fetch(Bs[0], n0, k_begin, k_end);
        a.put(As[0]);
        b.put(Bs[0]);
        if (COPIES) { copies_commit(); copies_wait(); }
    }
    __syncthreads();                  // stage 0 is staged, every thread's part, before any thread reads it
    for (int t = 0; t < chunks; t++) {
        const int s = t & 1;
        const bool next = t + 1 < chunks;
        if (next) {                   // the next chunk, in flight during this chunk's FMAs
            a.fetch(As[s ^ 1], m0, k_begin + (t + 1) * BK, k_end);
            b.fetch(Bs[s ^ 1], n0, k_begin + (t + 1) * BK, k_end);
            if (COPIES) copies_commit();
        }
        fmas(s);
        if (next) {                   // the other stage: its last readers passed the previous barrier
            a.put(As[s ^ 1]);
            b.put(Bs[s ^ 1]);
            if (COPIES) copies_wait();   // this thread's copies of the next chunk have landed
        }
        __syncthreads();              // stage s^1 is staged, every thread's part; every thread is done reading stage s
    }
#endif
}

// Split-K (blockIdx.z of gridDim.z = splits): where a launch has too few output tiles to fill the GPU, each
// tile's reduction is split into `splits` ranges of split_chunk(K, splits) (a multiple of BK), one block
// each.  The k-range of this block:
__device__ inline int split_chunk(int K, int splits) { return ((K + splits - 1) / splits + BK - 1) / BK * BK; }

// After the main loop of a split block: its partial sums go to partial[z][r][c] (rows M, columns N); the
// last block of the tile to arrive (an int counter a tile, counters[tile], zero between launches) sums
// the `splits` partials of every element of the tile in the order z = 0, 1, … into partial[0] (its
// threads striding over the tile: few registers live), whichever block arrived last, so the result has
// the same bits every run (no float atomics); it reloads its micro-tile from there, resets the counter
// and returns true: it applies the epilogue.  The others return false.  Every thread of the block calls
// it (barriers).
template <typename T>
__device__ bool split_fixup(T (&acc)[Gemm<T>::TM][Gemm<T>::TM], T* partial, int* counters, int M, int N,
                            int m0, int n0, int splits) {
    using G = Gemm<T>;
    __shared__ int last;
    const int rm = m0 + (threadIdx.x / G::EDGE) * G::TM, cn = n0 + (threadIdx.x % G::EDGE) * G::TM;
    T* mine = partial + blockIdx.z * M * N;
#pragma unroll
    for (int i = 0; i < G::TM; i++)
#pragma unroll
        for (int j = 0; j < G::TM; j++)
            if (rm + i < M && cn + j < N) mine[(rm + i) * N + cn + j] = acc[i][j];
    __threadfence();                  // this block's partials are visible to the block that sums them
    __syncthreads();                  // ... every thread's, before thread 0 counts the block in
    if (threadIdx.x == 0) {
        int* counter = counters + blockIdx.y * gridDim.x + blockIdx.x;
        last = atomicAdd(counter, 1) == splits - 1;
        if (last) *counter = 0;       // ready for the next launch (every other block has counted)
    }
    __syncthreads();                  // `last` is written before any thread reads it
    if (!last) return false;
    __threadfence();                  // the other blocks' partials, as they made them visible
    for (int e = threadIdx.x; e < TILE * TILE; e += G::THREADS) {
        const int r = m0 + e / TILE, c = n0 + e % TILE;
        if (r >= M || c >= N) continue;
        T sum = partial[r * N + c];
        for (int z = 1; z < splits; z++) sum += partial[(z * M + r) * N + c];
        partial[r * N + c] = sum;
    }
    __syncthreads();                  // the tile's sums are in partial[0] before any thread reloads its own
#pragma unroll
    for (int i = 0; i < G::TM; i++)
#pragma unroll
        for (int j = 0; j < G::TM; j++)
            acc[i][j] = rm + i < M && cn + j < N ? partial[(rm + i) * N + cn + j] : T(0);
    return true;
}

// Where this thread's micro-tile starts within the block's tile.
template <typename T>
__device__ inline int micro_row0() { return (threadIdx.x / Gemm<T>::EDGE) * Gemm<T>::TM; }
template <typename T>
__device__ inline int micro_col0() { return (threadIdx.x % Gemm<T>::EDGE) * Gemm<T>::TM; }

#endif  // GPUBP_GEMM_MAINLOOP_CUH
