/*
 * gather.cu -- the mini-batch gather: one launch for the rows of X and of Y a step trains on.
 *
 * Math (batch-first, row-major; n = rows of the data, B = batch, I = inputs, O = outputs):
 *     x[r, :] = X[idx[r], :]      r < B     (the batch's inputs: a_0 of the step)
 *     y[r, :] = Y[idx[r], :]      r < B     (the batch's targets)
 * Two `take`s in one pass: a step makes one launch for its batch instead of two.
 *
 * Layout: X is n×I, Y is n×O, x is B×I, y is B×O, all row-major; idx holds B int64 row
 * numbers.  Outputs: x and y are overwritten; nothing is accumulated.  No output may share
 * memory with an input.
 *
 * Row numbers are checked by the host (the stepper: every index in [0, n)); a row number
 * outside [0, n) here is not read, and its rows of x and y are written NaN, so that a bad
 * index can never read outside X or Y and shows up as a NaN loss.
 *
 * Kernels, each as _f32 (T = float) and _f64 (T = double):
 *   gather_rows_naive  one thread per element of the concatenated B×(I+O) output.
 *       launch: 1-D, any block size, grid = ceil_div(B*(I+O), block).
 *   gather_rows        a block of 32×ROWS threads copies ROWS rows, one warp a row: the
 *       warp's lanes walk the row's I + O columns 32 apart, so every load and store of a
 *       warp touches consecutive addresses.
 *       launch: block (32, ROWS), grid = ceil_div(B, ROWS).
 * Both are bound by memory: per row they read I + O elements and write them, and read one
 * index: 2(I+O)·4 + 8 B a row in f32.
 *
 * Indices are 32-bit: the launcher requires n·I, n·O, B·I and B·O <= 2^31 − 1 (and, naive,
 * B·(I+O) plus one block's overshoot).
 */

#ifndef ROWS
#define ROWS 8      // rows a block of the fast kernel copies (one warp each)
#endif
static_assert(ROWS >= 1 && 32 * ROWS <= 1024, "ROWS (rows per block, a warp each) must be in 1 .. 32");

#include "quiet_nan.cuh"  // quiet_nan: the rows of a row number outside [0, n)

// ---------------------------------------------------------------------------
// naive: one thread per output element; element e of row r is x[r, e] for e < I, else y[r, e − I].
template <typename T>
__device__ void gather_rows_naive(const T* X, const T* Y, const long long* idx, T* x, T* y,
                                  int B, int I, int O, int n) {
    int k = blockIdx.x * blockDim.x + threadIdx.x;   // flat index into the B×(I+O) output
    int width = I + O;
    if (k >= B * width) return;
    int r = k / width, e = k % width;
    long long src = idx[r];
    bool ok = src >= 0 && src < n;
    if (e < I) x[r * I + e] = ok ? X[src * I + e] : quiet_nan(T(0));
    else       y[r * O + (e - I)] = ok ? Y[src * O + (e - I)] : quiet_nan(T(0));
}

// fast: one warp a row, its lanes 32 columns apart (coalesced).
template <typename T>
__device__ void gather_rows_fast(const T* X, const T* Y, const long long* idx, T* x, T* y,
                            int B, int I, int O, int n) {
    int r = blockIdx.x * ROWS + threadIdx.y;        // the row this warp copies
    if (r >= B) return;
    long long src = idx[r];
    bool ok = src >= 0 && src < n;
    const T* from_x = X + (ok ? src * I : 0);
    const T* from_y = Y + (ok ? src * O : 0);
    T nan = quiet_nan(T(0));
    for (int c = threadIdx.x; c < I; c += 32) x[r * I + c] = ok ? from_x[c] : nan;
    for (int c = threadIdx.x; c < O; c += 32) y[r * O + c] = ok ? from_y[c] : nan;
}

extern "C" __global__ void gather_rows_naive_f32(const float* X, const float* Y, const long long* idx, float* x, float* y, int B, int I, int O, int n) { gather_rows_naive(X, Y, idx, x, y, B, I, O, n); }
extern "C" __global__ void gather_rows_naive_f64(const double* X, const double* Y, const long long* idx, double* x, double* y, int B, int I, int O, int n) { gather_rows_naive(X, Y, idx, x, y, B, I, O, n); }
extern "C" __global__ void gather_rows_f32(const float* X, const float* Y, const long long* idx, float* x, float* y, int B, int I, int O, int n) { gather_rows_fast(X, Y, idx, x, y, B, I, O, n); }
extern "C" __global__ void gather_rows_f64(const double* X, const double* Y, const long long* idx, double* x, double* y, int B, int I, int O, int n) { gather_rows_fast(X, Y, idx, x, y, B, I, O, n); }
