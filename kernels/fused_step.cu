/*
 * fused_step.cu -- whole SGD training steps of a small sigmoid MLP in one kernel: the gather,
 * the forward pass, BP1, BP2 down to layer 1, and every layer's weight and bias gradient with
 * the SGD update (momentum, weight decay), for K consecutive mini-batches in one launch.
 *
 * Math (batch-first, row-major; layers l = 1 … L, n_l units, n_0 inputs; B = batch; one
 * mini-batch of B_k rows, its rows idx[k·B + r] of X and Y, r < B_k):
 *     a_0[r, :] = X[idx[k·B + r], :]                       (read in place: no copy of x)
 *     a_l = σ(a_{l−1} W_l + b_l)                           l = 1 … L            (forward)
 *     δ_L = ∇_a C ⊙ σ'(z_L) (mse: (a − y) a(1 − a)),  or a − y (cross-entropy)  (BP1)
 *     loss[k·B + r] = C of row r (the per-sample cost, before the update)
 *     δ_l = (δ_{l+1} W_{l+1}ᵀ) ⊙ a_l ⊙ (1 − a_l)            l = L−1 … 1          (BP2)
 *     g  = a_{l−1}ᵀ δ_l / B_k + λ W_l,  vW ← μ vW + g,  W_l ← W_l − η vW   (BP3 + SGD; W −= η g
 *     gb = Σ_r δ_l[r, :] / B_k,         vb ← μ vb + gb, b_l ← b_l − η vb    without momentum)
 * Step k + 1 starts from the weights step k left.  The costs and the update are those of
 * costs.cuh and weight_grad.cu's weight_grad_sgd, term for term.
 *
 * Layout: X is n×n_0, Y is n×n_L, idx holds `total` int64 row numbers (K = ceil(total / B)
 * batches, the last one possibly short), loss has K·B elements (row k·B + r; entries past a
 * short last batch are not written); W_l is n_{l−1}×n_l, b_l has n_l; vW_l, vb_l likewise, or
 * NULL without momentum.  W, b, vW, vb are updated in place; loss is overwritten (NULL: not
 * computed); X, Y, idx are only read.  Layers past L are NULL and their widths 0.
 *
 * Why one block: a step of the seeds' network ([784, 30, 10], batch 10) is about 1 MFLOP,
 * and split into 7-16 kernels it is bound by launch latency (each costs at least ~1.3 µs
 * even inside a CUDA graph), not by arithmetic.  One block can keep every activation and
 * delta of the batch in its shared memory, order the phases with __syncthreads() instead of
 * kernel boundaries, and loop over K batches without returning to the host.  Weights are
 * read from global memory (L2-resident at these sizes) or, when they fit (keep_weights = 1,
 * chosen by the launcher), copied into shared memory once per launch and written back at
 * the end.  gpubp uses it only for nets whose step is small (gpubp.cuda.launchers).
 *
 * The block, phase by phase, for each batch k (FUSED_THREADS threads; every loop below is
 * strided by FUSED_THREADS over its flat index, so any width and batch size works):
 *   1. forward, l = 1 … L: a_l[r, o] for the B_k·n_l pairs (r, o), each a dot product of
 *      length n_{l−1}; layer 1 reads its input row from X through idx.            barrier
 *   2. BP1: one thread per row r writes δ_L[r, :] and the row's cost.              barrier
 *   3. for l = L … 1: BP2 writes δ_{l−1} (reading the old W_l),                    barrier
 *      then the update of W_l and b_l (reading a_{l−1} and δ_l).
 *   4. the batch's end.                                                            barrier
 * A row number outside [0, n) reads no memory: its input row is NaN (so its cost is NaN).
 *
 * Shared memory (dynamic, in elements of T):
 *     acts + deltas:  2 · B · (n_1 + … + n_L)
 *     keep_weights:   + Σ_l (n_{l−1} + 1) · n_l · (1 + [momentum])
 * plus the static tables of layer pointers and widths.  The launcher computes the same sum,
 * raises max_dynamic_shared_size_bytes above 48 KiB, and refuses what the device's
 * per-block ceiling cannot hold (gpubp.cuda.archs).
 *
 * Kernels (T = float _f32, double _f64; the cost by name): fused_step_mse, fused_step_ce.
 *     launch: grid (1,), block (FUSED_THREADS,), shared_mem as above.
 *
 * Indices: a_l, δ_l, W_l, b_l are indexed with 32-bit ints (the launcher requires
 * B·n_l and n_{l−1}·n_l <= 2^31 − 1, which shared memory bounds anyway); rows of X and Y
 * with 64-bit ones.
 */
#include "sigmoid.cuh"    // exp_t, sigmoid
#include "costs.cuh"      // Mse, CrossEntropy
#include "quiet_nan.cuh"  // quiet_nan

#ifndef FUSED_THREADS
#define FUSED_THREADS 256 // threads of the one block
#endif
#define MAX_LAYERS 4      // L <= MAX_LAYERS: one argument slot per layer's W, b, vW, vb
static_assert(FUSED_THREADS >= 32 && FUSED_THREADS <= 1024 && FUSED_THREADS % 32 == 0, "FUSED_THREADS must be a multiple of 32 in 32 .. 1024");

template <typename T>
struct Net {                          // the launch's layers, in shared memory (indexed by l at run time)
    T* W[MAX_LAYERS + 1];             // where each phase reads and updates W_l: global, or the shared copy
    T* b[MAX_LAYERS + 1];
    T* vW[MAX_LAYERS + 1];            // NULL without momentum
    T* vb[MAX_LAYERS + 1];
    T* gW[MAX_LAYERS + 1];            // the global arrays (the shared copies are written back to them)
    T* gb[MAX_LAYERS + 1];
    T* gvW[MAX_LAYERS + 1];
    T* gvb[MAX_LAYERS + 1];
    T* a[MAX_LAYERS + 1];             // a_l of the batch, B × n_l, in shared memory (a[0] unused: X)
    T* delta[MAX_LAYERS + 1];         // δ_l, B × n_l, in shared memory
    int n[MAX_LAYERS + 1];            // widths n_0 … n_L
};

// Copy `count` elements, the block's threads striding over them.
template <typename T>
__device__ inline void block_copy(T* to, const T* from, int count) {
    for (int e = threadIdx.x; e < count; e += FUSED_THREADS) to[e] = from[e];
}

template <typename Cost, typename T>
__device__ void fused_step(const T* X, const T* Y, const long long* idx, T* loss, int n, int total, int B, int L,
                           int n0, int n1, int n2, int n3, int n4,
                           T* W1, T* b1, T* vW1, T* vb1, T* W2, T* b2, T* vW2, T* vb2,
                           T* W3, T* b3, T* vW3, T* vb3, T* W4, T* b4, T* vW4, T* vb4,
                           T eta, T lmbda, T mu, int keep_weights) {
    __shared__ Net<T> net;
    extern __shared__ __align__(16) unsigned char smem_bytes[];
    T* smem = reinterpret_cast<T*>(smem_bytes);
    const int tid = threadIdx.x;

    if (tid == 0) {                   // the tables: widths, layer arrays, the shared activations and deltas
        net.n[0] = n0; net.n[1] = n1; net.n[2] = n2; net.n[3] = n3; net.n[4] = n4;
        net.gW[0] = net.gb[0] = net.gvW[0] = net.gvb[0] = nullptr;   // (spelled out: no local array, no stack)
        net.gW[1] = W1; net.gb[1] = b1; net.gvW[1] = vW1; net.gvb[1] = vb1;
        net.gW[2] = W2; net.gb[2] = b2; net.gvW[2] = vW2; net.gvb[2] = vb2;
        net.gW[3] = W3; net.gb[3] = b3; net.gvW[3] = vW3; net.gvb[3] = vb3;
        net.gW[4] = W4; net.gb[4] = b4; net.gvW[4] = vW4; net.gvb[4] = vb4;
        T* at = smem;
        for (int l = 0; l <= MAX_LAYERS; l++) {
            net.W[l] = net.gW[l]; net.b[l] = net.gb[l]; net.vW[l] = net.gvW[l]; net.vb[l] = net.gvb[l];
            net.a[l] = net.delta[l] = nullptr;
        }
        for (int l = 1; l <= L; l++) { net.a[l] = at; at += B * net.n[l]; }
        for (int l = 1; l <= L; l++) { net.delta[l] = at; at += B * net.n[l]; }
        if (keep_weights) {           // the shared copies follow the deltas
            for (int l = 1; l <= L; l++) {
                const int size = net.n[l - 1] * net.n[l];
                net.W[l] = at; at += size;
                net.b[l] = at; at += net.n[l];
                if (net.gvW[l] != nullptr) { net.vW[l] = at; at += size; net.vb[l] = at; at += net.n[l]; }
            }
        }
    }
    __syncthreads();                  // the tables are written before any thread reads them
    if (keep_weights) {
        for (int l = 1; l <= L; l++) {
            int size = net.n[l - 1] * net.n[l];
            block_copy(net.W[l], net.gW[l], size);
            block_copy(net.b[l], net.gb[l], net.n[l]);
            if (net.vW[l] != nullptr) { block_copy(net.vW[l], net.gvW[l], size); block_copy(net.vb[l], net.gvb[l], net.n[l]); }
        }
        __syncthreads();              // the shared copies are complete before the first forward reads them
    }

    const int steps = (total + B - 1) / B;
    for (int k = 0; k < steps; k++) {
        const long long* rows = idx + (long long)k * B;              // this batch's row numbers
        const int Bk = min(B, total - k * B);
        const T scale = T(1) / T(Bk);

        // 1. forward: a_l = σ(a_{l−1} W_l + b_l); layer 1 reads its input rows of X through idx
        for (int l = 1; l <= L; l++) {
            const int I = net.n[l - 1], O = net.n[l];
            const T* W = net.W[l];
            const T* b = net.b[l];
            const T* a_prev = net.a[l - 1];
            T* a = net.a[l];
            for (int e = tid; e < Bk * O; e += FUSED_THREADS) {
                const int r = e / O, o = e % O;
                T z = b[o];
                if (l == 1) {
                    const long long src = rows[r];
                    if (src >= 0 && src < n) {
                        const T* x = X + src * I;
                        for (int i = 0; i < I; i++) z += x[i] * W[i * O + o];
                    } else {
                        z = quiet_nan(T(0));                          // a bad row number: NaN, no read
                    }
                } else {
                    const T* x = a_prev + r * I;
                    for (int i = 0; i < I; i++) z += x[i] * W[i * O + o];
                }
                a[r * O + o] = sigmoid(z);
            }
            __syncthreads();          // a_l is complete before layer l + 1 (or BP1) reads it
        }

        // 2. BP1 and the per-sample cost: one thread a row
        {
            const int O = net.n[L];
            const T* aL = net.a[L];
            T* dL = net.delta[L];
            for (int r = tid; r < Bk; r += FUSED_THREADS) {
                const long long src = rows[r];
                const bool ok = src >= 0 && src < n;
                T sum = T(0);
                for (int c = 0; c < O; c++) {
                    const T ai = aL[r * O + c], yi = ok ? Y[src * O + c] : quiet_nan(T(0));
                    dL[r * O + c] = Cost::delta(ai, yi);
                    sum += Cost::loss(ai, yi);
                }
                if (loss != nullptr) loss[(long long)k * B + r] = sum;
            }
            __syncthreads();          // δ_L is complete before BP2 and the update of layer L read it
        }

        // 3. for l = L … 1: δ_{l−1} from the old W_l, then W_l's and b_l's update
        for (int l = L; l >= 1; l--) {
            const int I = net.n[l - 1], O = net.n[l];
            T* W = net.W[l];
            T* b = net.b[l];
            T* vW = net.vW[l];
            T* vb = net.vb[l];
            const T* delta = net.delta[l];
            if (l > 1) {              // BP2: δ_{l−1}[r, i] = (Σ_o δ_l[r, o] W_l[i, o]) a_{l−1}(1 − a_{l−1})
                const T* a_prev = net.a[l - 1];
                T* delta_prev = net.delta[l - 1];
                for (int e = tid; e < Bk * I; e += FUSED_THREADS) {
                    const int r = e / I, i = e % I;
                    T g = T(0);
                    for (int o = 0; o < O; o++) g += delta[r * O + o] * W[i * O + o];
                    const T ap = a_prev[r * I + i];
                    delta_prev[r * I + i] = g * ap * (T(1) - ap);
                }
                __syncthreads();      // δ_{l−1} has read every W_l before W_l changes
            }
            // BP3 + SGD: g = scale · a_{l−1}ᵀ δ_l + λ W_l; v ← μ v + g; W_l ← W_l − η v
            for (int e = tid; e < I * O; e += FUSED_THREADS) {
                const int i = e / O, o = e % O;
                T g = T(0);
                if (l == 1) {
                    for (int r = 0; r < Bk; r++) {
                        const long long src = rows[r];
                        const T x = src >= 0 && src < n ? X[src * I + i] : quiet_nan(T(0));
                        g += x * delta[r * O + o];
                    }
                } else {
                    const T* a_prev = net.a[l - 1];
                    for (int r = 0; r < Bk; r++) g += a_prev[r * I + i] * delta[r * O + o];
                }
                g = scale * g + lmbda * W[e];
                if (vW != nullptr) { vW[e] = mu * vW[e] + g; g = vW[e]; }
                W[e] -= eta * g;
            }
            for (int o = tid; o < O; o += FUSED_THREADS) {                  // BP4 + SGD: biases are not decayed
                T gb = T(0);
                for (int r = 0; r < Bk; r++) gb += delta[r * O + o];
                gb = scale * gb;
                if (vb != nullptr) { vb[o] = mu * vb[o] + gb; gb = vb[o]; }
                b[o] -= eta * gb;
            }
            // no barrier here: the next BP2 reads W_{l−1} and δ_{l−1}, which this update does not
            // write, and the update of W_{l−1} waits at that BP2's barrier
        }
        __syncthreads();              // every update is done before the next batch's forward reads W, and
                                      // before it overwrites the a_l and δ_l this batch's updates read
    }

    if (keep_weights) {               // the shared copies go back (the barrier above ordered the last update)
        for (int l = 1; l <= L; l++) {
            int size = net.n[l - 1] * net.n[l];
            block_copy(net.gW[l], net.W[l], size);
            block_copy(net.gb[l], net.b[l], net.n[l]);
            if (net.gvW[l] != nullptr) { block_copy(net.gvW[l], net.vW[l], size); block_copy(net.gvb[l], net.vb[l], net.n[l]); }
        }
    }
}

#define FUSED_STEP_ARGS(T) const T* X, const T* Y, const long long* idx, T* loss, int n, int total, int B, int L, \
    int n0, int n1, int n2, int n3, int n4, T* W1, T* b1, T* vW1, T* vb1, T* W2, T* b2, T* vW2, T* vb2, \
    T* W3, T* b3, T* vW3, T* vb3, T* W4, T* b4, T* vW4, T* vb4, T eta, T lmbda, T mu, int keep_weights
#define FUSED_STEP_CALL X, Y, idx, loss, n, total, B, L, n0, n1, n2, n3, n4, W1, b1, vW1, vb1, W2, b2, vW2, vb2, \
    W3, b3, vW3, vb3, W4, b4, vW4, vb4, eta, lmbda, mu, keep_weights

extern "C" __global__ void __launch_bounds__(FUSED_THREADS) fused_step_mse_f32(FUSED_STEP_ARGS(float)) { fused_step<Mse>(FUSED_STEP_CALL); }
extern "C" __global__ void __launch_bounds__(FUSED_THREADS) fused_step_mse_f64(FUSED_STEP_ARGS(double)) { fused_step<Mse>(FUSED_STEP_CALL); }
extern "C" __global__ void __launch_bounds__(FUSED_THREADS) fused_step_ce_f32(FUSED_STEP_ARGS(float)) { fused_step<CrossEntropy>(FUSED_STEP_CALL); }
extern "C" __global__ void __launch_bounds__(FUSED_THREADS) fused_step_ce_f64(FUSED_STEP_ARGS(double)) { fused_step<CrossEntropy>(FUSED_STEP_CALL); }
