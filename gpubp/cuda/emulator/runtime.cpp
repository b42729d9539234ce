// runtime.cpp: the emulated device behind gpubp.cuda.emulator.
//
// One launch = gpubp_launch(): copy every array argument into a guarded
// mapping, run the grid block by block, check the canaries, copy the results
// back.  Inside a block every CUDA thread is a fiber on the calling OS thread:
// the scheduler runs each runnable fiber until it reaches __syncthreads(), a
// warp-synchronous primitive (__shfl*_sync, __ballot_sync, __syncwarp, ...)
// or returns.  A warp primitive completes when every lane its mask names has
// arrived at it (each lane is then runnable again); the barrier releases when
// every live thread waits there.  Sweeps over the runnable fibers alternate
// direction, so lanes run in varying order between warp-synchronous points.
// Faults (SIGSEGV/SIGBUS/SIGFPE/SIGILL) raised by kernel code are caught on an
// alternate signal stack and siglongjmp'ed back here; the previous handlers
// and signal stack are restored before gpubp_launch returns, so the host
// process keeps its own fault handling (e.g. Python's faulthandler).
//
// Not thread-safe: the Python side serializes launches with a lock.
// -DGPUBP_FORCE_UCONTEXT selects the portable (slower) fiber switch on x86-64
// too, to test it.
#include "runtime.h"

#include <algorithm>
#include <cerrno>
#include <csetjmp>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <cstdarg>
#include <link.h>
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>
#if !defined(__x86_64__) || defined(GPUBP_FORCE_UCONTEXT)
#include <ucontext.h>
#endif

// ---------------------------------------------------------------- ABI with Python (gpubp/emulator/_module.py)
// Bump GPUBP_ABI_VERSION whenever one of these structs changes.
#define GPUBP_ABI_VERSION 2

struct gpubp_buffer {  // one guarded allocation; arguments that are the same array share one
    void* host;        // NumPy data pointer: copied in before the launch, out after
    int64_t nbytes;
    int32_t copy_out;   // some non-const parameter points at it
    int32_t read_only;  // every parameter that points at it is const: mapped PROT_READ
};

struct gpubp_arg {
    int32_t kind;       // ARG_VALUE, ARG_BUFFER or ARG_NULL
    int32_t buffer;     // index into the buffers, for ARG_BUFFER
    const void* value;  // the scalar's bytes, for ARG_VALUE
};
enum { ARG_VALUE = 0, ARG_BUFFER = 1, ARG_NULL = 2 };

enum {
    E_OK = 0,
    E_FAULT = 1,          // SIGSEGV/SIGBUS: address, buffer, byte_offset, access
    E_BARRIER_EXIT = 2,   // threads returned while the others wait at a barrier
    E_BARRIER_SPLIT = 3,  // threads wait at different __syncthreads() call sites
    E_CANARY = 4,         // bytes before the start of an array were overwritten
    E_STACK = 5,          // a thread overflowed its fiber stack
    E_ARITH = 6,          // SIGFPE (integer division by zero)
    E_ILLEGAL = 7,        // SIGILL
    E_ABORT = 8,          // assert() / __trap() in device code
    E_SYSTEM = 9,         // mmap/mprotect/sigaction failed
    E_CONFIG = 10,        // bad launch configuration (also checked in Python)
    E_WARP = 11,          // a warp primitive broke its rules: message says how
    E_MISALIGNED = 12,    // a vector access or async copy at a misaligned address
    E_ASYNC = 13,         // __pipeline_memcpy_async misused: message says how
    E_SMEM = 14,          // static + dynamic shared memory over the launch's budget (static_smem)
    E_SMEM_CANARY = 15,   // a write past the end of dynamic shared memory (byte_offset)
};
enum { SPACE_UNKNOWN = 0, SPACE_GLOBAL = 1, SPACE_SHARED = 2, SPACE_DYNAMIC_SHARED = 3 };

struct gpubp_shared_cfg {   // the launch's shared memory
    int64_t dynamic_bytes;  // shared_mem of the launch (bytes of the extern __shared__ arrays)
    int64_t static_budget;  // the most static shared memory the launch may have, or -1: not measured
    int32_t nvars;          // static __shared__ variables: (offset in the TLS block, size) pairs
    const int64_t* vars;
};

#define GPUBP_MAX_LISTED 16
struct gpubp_error {
    int32_t code, signo, si_code;
    uint32_t block[3], thread[3];  // where it happened (thread: E_FAULT, E_STACK, E_ARITH, E_ILLEGAL, E_ABORT)
    int32_t buffer;                // buffer index (E_FAULT inside a guard, E_CANARY), else -1
    int32_t access;                // 0 read, 1 write, -1 unknown
    int64_t byte_offset;           // fault address (first corrupted canary byte) minus the data start
    int64_t byte_offset_last;      // E_CANARY: last corrupted byte minus the data start
    uint64_t address;              // fault address
    int32_t line;                  // barrier line where the others wait; assert line
    int32_t n_exited, n_waiting;   // E_BARRIER_EXIT counts
    int32_t n_listed;              // entries below: exited threads (line -1) or one thread per barrier line
    int32_t listed_thread[GPUBP_MAX_LISTED];  // linear thread index in the block
    int32_t listed_line[GPUBP_MAX_LISTED];
    int32_t listed_count[GPUBP_MAX_LISTED];
    int32_t space;                 // E_MISALIGNED: SPACE_* of the address (buffer, byte_offset for global)
    int32_t access_size;           // E_MISALIGNED: bytes of the access
    int64_t static_smem;           // bytes of static __shared__ variables the launch used (when measured)
    char message[512];
};

// ---------------------------------------------------------------- fibers
namespace {

constexpr size_t kStackBytes = 64 * 1024;           // per CUDA thread, below it one guard page
constexpr size_t kGuardBytes = 4 * 1024 * 1024;     // PROT_NONE on each side of every array
constexpr int kMaxThreads = 1024;                   // CUDA's limit on threads per block
// 0xFFFADBAD (little endian): NaN as float32 and as float64 (pairs), and an
// implausible int; used for the canary and for poisoning shared memory.
constexpr unsigned char kPattern[4] = {0xAD, 0xDB, 0xFA, 0xFF};

#if defined(__x86_64__) && !defined(GPUBP_FORCE_UCONTEXT)
// Hand-written switch (callee-saved registers only): swapcontext() would make
// two sigprocmask system calls per switch, ~50x slower.
struct Ctx {
    void* sp;
};
extern "C" void gpubp_ctx_switch(void** save_sp, void* to_sp) GPUBP_HIDDEN;
asm(R"(
    .text
    .p2align 4
    .type gpubp_ctx_switch,@function
gpubp_ctx_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size gpubp_ctx_switch, .-gpubp_ctx_switch
)");
inline void ctx_switch(Ctx* from, Ctx* to) { gpubp_ctx_switch(&from->sp, to->sp); }
void ctx_make(Ctx* c, char* stack_lo, size_t size, void (*entry)()) {
    // Six zeroed callee-saved registers, then `entry` as the return address
    // of the switch, then a fake return address for `entry` itself, so that
    // entry starts with rsp % 16 == 8 as the SysV ABI requires.
    void** top = reinterpret_cast<void**>(stack_lo + size);
    top[-1] = nullptr;
    top[-2] = reinterpret_cast<void*>(entry);
    for (int i = 3; i <= 8; ++i) top[-i] = nullptr;
    c->sp = &top[-8];
}
#else
// Portable fallback: correct, slower.
struct Ctx {
    ucontext_t uc;
};
inline void ctx_switch(Ctx* from, Ctx* to) { swapcontext(&from->uc, &to->uc); }
void ctx_make(Ctx* c, char* stack_lo, size_t size, void (*entry)()) {
    getcontext(&c->uc);
    c->uc.uc_stack.ss_sp = stack_lo;
    c->uc.uc_stack.ss_size = size;
    c->uc.uc_link = nullptr;
    makecontext(&c->uc, entry, 0);
}
#endif

enum FiberState { RUNNABLE, WAITING, DONE, WARP };

constexpr int kMaxPending = 32;  // __pipeline_memcpy_async copies in flight per thread
struct PendingCopy {
    char* dst;
    int size, zfill, group;
    unsigned char data[16];  // the source, read at issue
};

struct Fiber {
    Ctx ctx;
    uint3 tid;
    int state;
    int line;       // barrier or warp-primitive line while WAITING / WARP
    int predicate;  // __syncthreads_count argument
    // warp primitive while WARP
    int wkind, warg, wwidth;
    unsigned wmask;
    unsigned long long wvalue, wresult;
    // asynchronous copies
    int commits, npending;
    PendingCopy pending[kMaxPending];
};

struct Region {  // one guarded allocation: [guard | slack (canary) | data][guard]
    char* base;
    size_t total;
    char* slack;  // start of the accessible pages
    char* data;   // data + nbytes is the start of the trailing guard
    size_t nbytes;
};

struct LaunchState {
    void (*thunk)(void**);
    void** argv;
    Fiber fibers[kMaxThreads];
    int nthreads;
    int cur;  // running fiber
    Ctx sched;
    bool failed;
    int sync_count;
    int warp_waiting;  // fibers in state WARP
    bool released;     // a warp primitive completed during this sweep
    // shared memory: [shared_lo, shared_hi) is the module's TLS block; the
    // dynamic region [dyn_lo, dyn_lo + dyn_capacity) lies inside it, of which
    // the launch uses dyn_bytes.
    char *shared_lo, *shared_hi, *dyn_lo;
    int64_t dyn_capacity, dyn_bytes;
    gpubp_error* err;
    // fault handling
    sigjmp_buf jmp;
    volatile sig_atomic_t in_kernel;
    pthread_t thread;
    int fault_signo, fault_code, fault_access;
    uintptr_t fault_addr;
    struct sigaction old_action[4];
    stack_t old_altstack;
    // memory
    Region* regions;
    int nregions;
};

LaunchState L;
const int kSignals[4] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL};
alignas(16) char g_altstack[128 * 1024];
char* g_stacks = nullptr;  // g_nstacks slots of [guard page | kStackBytes]
int g_nstacks = 0;
size_t g_page = 0;

size_t stack_slot() { return g_page + kStackBytes; }

bool ensure_stacks(int n) {
    if (n <= g_nstacks) return true;
    if (g_stacks) munmap(g_stacks, g_nstacks * stack_slot());
    g_stacks = nullptr;
    g_nstacks = 0;
    void* p = mmap(nullptr, n * stack_slot(), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) return false;
    for (int i = 0; i < n; ++i) {
        if (mprotect(static_cast<char*>(p) + i * stack_slot(), g_page, PROT_NONE) != 0) {
            munmap(p, n * stack_slot());
            return false;
        }
    }
    g_stacks = static_cast<char*>(p);
    g_nstacks = n;
    return true;
}

void fill_pattern(char* lo, char* hi) {
    char* p = lo;
    for (; p < hi && (reinterpret_cast<uintptr_t>(p) & 3); ++p)
        *p = static_cast<char>(kPattern[reinterpret_cast<uintptr_t>(p) & 3]);
    uint32_t word;
    memcpy(&word, kPattern, 4);
    for (; p + 4 <= hi; p += 4) memcpy(p, &word, 4);
    for (; p < hi; ++p) *p = static_cast<char>(kPattern[reinterpret_cast<uintptr_t>(p) & 3]);
}

bool is_pattern(const char* lo, const char* hi) {
    for (const char* p = lo; p < hi; ++p)
        if (static_cast<unsigned char>(*p) != kPattern[reinterpret_cast<uintptr_t>(p) & 3]) return false;
    return true;
}

void record_thread(const Fiber& f) {
    L.err->thread[0] = f.tid.x;
    L.err->thread[1] = f.tid.y;
    L.err->thread[2] = f.tid.z;
}

void fiber_entry() {
    L.thunk(L.argv);
    Fiber& f = L.fibers[L.cur];
    f.state = DONE;
    ctx_switch(&f.ctx, &L.sched);
    __builtin_unreachable();  // the scheduler never resumes a DONE fiber
}

}  // namespace

// __shared__ variables are the module's thread_local variables (see
// cuda_shim.h): shared memory is this module's TLS block of the launching
// thread.  The anchor guarantees the block exists and is allocated.
// Dynamic shared memory (extern __shared__ arrays): one region in the TLS block,
// defined by the generated dynamic_shared.S, every extern __shared__ name of
// the module an alias of it (they all start at the same address, as on a GPU).
extern "C" {
extern thread_local char gpubp_dynamic_shared[] GPUBP_HIDDEN;
extern const long long gpubp_dynamic_shared_capacity GPUBP_HIDDEN;
}

namespace {
thread_local volatile char g_tls_anchor;

struct TlsQuery {
    uintptr_t code;  // an address inside this module
    char* block;
    size_t size;
};

int find_tls(dl_phdr_info* info, size_t, void* data) {
    TlsQuery* q = static_cast<TlsQuery*>(data);
    bool ours = false;
    size_t tls = 0;
    for (int i = 0; i < info->dlpi_phnum; ++i) {
        const ElfW(Phdr)& ph = info->dlpi_phdr[i];
        const uintptr_t lo = info->dlpi_addr + ph.p_vaddr;
        if (ph.p_type == PT_LOAD && q->code >= lo && q->code < lo + ph.p_memsz) ours = true;
        if (ph.p_type == PT_TLS) tls = ph.p_memsz;
    }
    if (!ours) return 0;
    q->block = static_cast<char*>(info->dlpi_tls_data);
    q->size = tls;
    return 1;
}

// This thread's shared memory (the module's TLS block), or false.
bool shared_memory(char** lo, char** hi) {
    g_tls_anchor = 0;  // allocates the block in this thread
    TlsQuery q{reinterpret_cast<uintptr_t>(&find_tls), nullptr, 0};
    dl_iterate_phdr(find_tls, &q);
    if (!q.block || q.size == 0) return false;
    *lo = q.block;
    *hi = q.block + q.size;
    return true;
}
}  // namespace

namespace {
const char* const kWarpNames[] = {"__shfl_sync", "__shfl_up_sync", "__shfl_down_sync", "__shfl_xor_sync",
                                  "__ballot_sync", "__any_sync", "__all_sync", "__syncwarp",
                                  "__reduce_add_sync", "__reduce_min_sync", "__reduce_max_sync",
                                  "__reduce_min_sync", "__reduce_max_sync", "__activemask"};

// Ends the launch with the error already in L.err, blaming the running thread.
[[noreturn]] void fail_current() {
    Fiber& f = L.fibers[L.cur];
    record_thread(f);
    L.failed = true;
    f.state = DONE;
    ctx_switch(&f.ctx, &L.sched);
    __builtin_unreachable();
}

[[noreturn]] __attribute__((format(printf, 2, 3))) void async_fail(int line, const char* fmt, ...) {
    gpubp_error* e = L.err;
    e->code = E_ASYNC;
    e->line = line;
    int n = snprintf(e->message, sizeof e->message, "__pipeline_memcpy_async on line %d: ", line);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message + n, sizeof e->message - n, fmt, ap);
    va_end(ap);
    fail_current();
}

__attribute__((format(printf, 2, 3))) void appendf(gpubp_error* e, const char* fmt, ...) {
    const size_t used = strlen(e->message);
    if (used + 1 >= sizeof e->message) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message + used, sizeof e->message - used, fmt, ap);
    va_end(ap);
}

// The lanes set in `bits` as "0-15", "3, 5, 7-9".
void append_lanes(gpubp_error* e, unsigned bits) {
    bool first = true;
    for (int j = 0; j < 32; ++j) {
        if (!((bits >> j) & 1u)) continue;
        int k = j;
        while (k + 1 < 32 && ((bits >> (k + 1)) & 1u)) ++k;
        appendf(e, k > j ? "%s%d-%d" : "%s%d", first ? "" : ", ", j, k);
        first = false;
        j = k;
    }
}

// Where an address lies: a guarded array argument, static or dynamic shared memory.
void locate(const void* p, gpubp_error* e) {
    const uintptr_t a = reinterpret_cast<uintptr_t>(p);
    e->address = a;
    for (int b = 0; b < L.nregions; ++b) {
        const Region& r = L.regions[b];
        const uintptr_t lo = reinterpret_cast<uintptr_t>(r.base);
        if (a >= lo && a < lo + r.total) {
            e->space = SPACE_GLOBAL;
            e->buffer = b;
            e->byte_offset = static_cast<int64_t>(a - reinterpret_cast<uintptr_t>(r.data));
            return;
        }
    }
    const uintptr_t dl = reinterpret_cast<uintptr_t>(L.dyn_lo);
    if (a >= dl && a < dl + static_cast<uintptr_t>(L.dyn_capacity)) {
        e->space = SPACE_DYNAMIC_SHARED;
        e->byte_offset = static_cast<int64_t>(a - dl);
    } else if (a >= reinterpret_cast<uintptr_t>(L.shared_lo) && a < reinterpret_cast<uintptr_t>(L.shared_hi)) {
        e->space = SPACE_SHARED;
        e->byte_offset = static_cast<int64_t>(a - reinterpret_cast<uintptr_t>(L.shared_lo));
    }
}

bool same_rendezvous(const Fiber& g, int kind, int line, unsigned mask) {
    // __syncwarp() calls at different sites meet (sm_70 and later); other primitives meet at one call site.
    return g.state == WARP && g.wkind == kind && g.wmask == mask && (kind == gpubp::W_SYNCWARP || g.line == line);
}

// The source lane of a shuffle, as PTX's shfl.sync computes it (c = ((32 - width) << 8) | clamp).
int shuffle_source(int kind, int lane, int arg, int width) {
    const int seg = 32 - width;  // the lane bits that select the segment
    const int b = arg & 31;
    const int min_lane = lane & seg;
    const int max_lane = min_lane | ((kind == gpubp::W_SHFL_UP ? 0 : 31) & ~seg);
    int j = lane;
    bool ok = false;
    switch (kind) {
        case gpubp::W_SHFL_UP: j = lane - b; ok = j >= max_lane; break;
        case gpubp::W_SHFL_DOWN: j = lane + b; ok = j <= max_lane; break;
        case gpubp::W_SHFL_XOR: j = lane ^ b; ok = j <= max_lane; break;
        default: j = min_lane | (b & ~seg); ok = j <= max_lane; break;
    }
    return ok ? j : lane;  // out of the segment: the lane's own value
}

// Completes the warp primitive at (kind, line, mask) of the warp starting at
// thread `base` if every lane the mask names waits at it.
void complete_if_arrived(int base, int kind, int line, unsigned mask) {
    const int n = L.nthreads;
    for (int j = 0; j < 32; ++j) {
        if (!((mask >> j) & 1u)) continue;
        if (base + j >= n || !same_rendezvous(L.fibers[base + j], kind, line, mask)) return;
    }
    unsigned long long acc = 0;
    unsigned bits = 0;
    bool first = true;
    for (int j = 0; j < 32; ++j) {
        if (!((mask >> j) & 1u)) continue;
        const unsigned long long v = L.fibers[base + j].wvalue;
        const uint32_t u = static_cast<uint32_t>(v);
        const int32_t i = static_cast<int32_t>(u);
        if (v) bits |= 1u << j;
        switch (kind) {
            case gpubp::W_REDUCE_ADD: acc = static_cast<uint32_t>(acc + u); break;
            case gpubp::W_REDUCE_MIN_U: acc = first || u < acc ? u : acc; break;
            case gpubp::W_REDUCE_MAX_U: acc = first || u > acc ? u : acc; break;
            case gpubp::W_REDUCE_MIN_I:
                acc = first || i < static_cast<int32_t>(acc) ? u : acc; break;
            case gpubp::W_REDUCE_MAX_I:
                acc = first || i > static_cast<int32_t>(acc) ? u : acc; break;
            default: break;
        }
        first = false;
    }
    if (kind == gpubp::W_BALLOT) acc = bits;
    if (kind == gpubp::W_ANY) acc = bits != 0;
    if (kind == gpubp::W_ALL) acc = bits == mask;
    for (int j = 0; j < 32; ++j) {
        if (!((mask >> j) & 1u)) continue;
        Fiber& g = L.fibers[base + j];
        if (kind <= gpubp::W_SHFL_XOR) {
            const int src = shuffle_source(kind, j, g.warg, g.wwidth);
            if (src != j && !((mask >> src) & 1u)) {
                gpubp_error* e = L.err;
                e->code = E_WARP;
                e->line = line;
                snprintf(e->message, sizeof e->message,
                         "%s on line %d (mask 0x%08x): lane %d reads lane %d, which is outside the mask%s (its value "
                         "is undefined on a GPU)", kWarpNames[kind], line, mask, j, src,
                         base + src >= n ? " and does not exist (a partial warp)" : "");
                record_thread(g);
                L.failed = true;
                return;
            }
            g.wresult = L.fibers[base + src].wvalue;
        } else {
            g.wresult = acc;
        }
    }
    for (int j = 0; j < 32; ++j) {
        if (!((mask >> j) & 1u)) continue;
        L.fibers[base + j].state = RUNNABLE;
        --L.warp_waiting;
    }
    L.released = true;
}

// __activemask(): when no thread of the block can run, the lanes of a warp that
// wait at the same __activemask() call get the mask of each other (the lanes a
// GPU would find converged there); false if none waits at one.
bool resolve_activemask() {
    bool any = false;
    for (int t = 0; t < L.nthreads; ++t) {
        const Fiber& f = L.fibers[t];
        if (f.state != WARP || f.wkind != gpubp::W_ACTIVEMASK) continue;
        const int base = t & ~31;
        unsigned m = 0;
        for (int j = 0; j < 32 && base + j < L.nthreads; ++j) {
            const Fiber& g = L.fibers[base + j];
            if (g.state == WARP && g.wkind == gpubp::W_ACTIVEMASK && g.line == f.line) m |= 1u << j;
        }
        for (int j = 0; j < 32; ++j) {
            if (!((m >> j) & 1u)) continue;
            Fiber& g = L.fibers[base + j];
            g.wresult = m;
            g.state = RUNNABLE;
            --L.warp_waiting;
        }
        any = true;
    }
    return any;
}

// No thread can run and a warp primitive waits: say which named lanes never came, and why.
void warp_stuck_error() {
    const int n = L.nthreads;
    int t = 0;
    while (L.fibers[t].state != WARP) ++t;
    const Fiber& f = L.fibers[t];
    const int base = t & ~31;
    const unsigned mask = f.wmask;
    unsigned there = 0, exited = 0, absent = 0, at_barrier = 0, elsewhere = 0, other_mask = 0;
    int barrier_line = 0, else_kind = 0, else_line = 0;
    unsigned else_mask = 0;
    for (int j = 0; j < 32; ++j) {
        if (!((mask >> j) & 1u)) continue;
        const unsigned bit = 1u << j;
        if (base + j >= n) {
            absent |= bit;
            continue;
        }
        const Fiber& g = L.fibers[base + j];
        if (g.state == DONE) {
            exited |= bit;
        } else if (g.state == WAITING) {
            if (!at_barrier) barrier_line = g.line;
            at_barrier |= bit;
        } else if (same_rendezvous(g, f.wkind, f.line, mask)) {
            there |= bit;
        } else if (g.wkind == f.wkind && (g.line == f.line || f.wkind == gpubp::W_SYNCWARP)) {
            if (!other_mask) else_mask = g.wmask;
            other_mask |= bit;
        } else {
            if (!elsewhere) {
                else_kind = g.wkind;
                else_line = g.line;
            }
            elsewhere |= bit;
        }
    }
    gpubp_error* e = L.err;
    e->code = E_WARP;
    e->line = f.line;
    snprintf(e->message, sizeof e->message, "%s (mask 0x%08x) on line %d never completes in warp %d: lane(s) ",
             kWarpNames[f.wkind], mask, f.line, base / 32);
    append_lanes(e, there);
    appendf(e, " wait there");
    if (exited) {
        appendf(e, "; lane(s) ");
        append_lanes(e, exited);
        appendf(e, " exited (returned) without calling it");
    }
    if (absent) {
        appendf(e, "; lane(s) ");
        append_lanes(e, absent);
        appendf(e, " do not exist (the block has %d threads)", n);
    }
    if (at_barrier) {
        appendf(e, "; lane(s) ");
        append_lanes(e, at_barrier);
        appendf(e, " wait at __syncthreads() on line %d", barrier_line);
    }
    if (elsewhere) {
        appendf(e, "; lane(s) ");
        append_lanes(e, elsewhere);
        appendf(e, " wait at %s on line %d", kWarpNames[else_kind], else_line);
    }
    if (other_mask) {
        appendf(e, "; lane(s) ");
        append_lanes(e, other_mask);
        appendf(e, " call it with mask 0x%08x", else_mask);
    }
    appendf(e, ". Every lane a mask names must reach the same call with the same mask (a hang or undefined "
               "values on a GPU)");
    record_thread(f);
    L.failed = true;
}
}  // namespace

namespace gpubp {
uint3 thread_idx;
uint3 block_idx;
dim3 block_dim;
dim3 grid_dim;

void syncthreads(int line) {
    Fiber& f = L.fibers[L.cur];
    f.state = WAITING;
    f.line = line;
    f.predicate = 0;
    ctx_switch(&f.ctx, &L.sched);
}

int syncthreads_count(int line, int predicate) {
    Fiber& f = L.fibers[L.cur];
    f.state = WAITING;
    f.line = line;
    f.predicate = predicate != 0;
    ctx_switch(&f.ctx, &L.sched);
    return L.sync_count;
}

void device_abort(const char* what, const char* file, int line) {
    L.err->code = E_ABORT;
    L.err->line = line;
    snprintf(L.err->message, sizeof L.err->message, "%s:%d: %s", file, line, what);
    fail_current();
}

unsigned long long warp_op(int kind, int line, unsigned mask, unsigned long long value, int arg, int width) {
    const int t = L.cur;
    Fiber& f = L.fibers[t];
    const int lane = t & 31;
    gpubp_error* e = L.err;
    if (kind != W_ACTIVEMASK && !((mask >> lane) & 1u)) {
        e->code = E_WARP;
        e->line = line;
        snprintf(e->message, sizeof e->message,
                 "lane %d calls %s on line %d with mask 0x%08x, which leaves out the calling lane (undefined on a "
                 "GPU: the mask must name every lane that executes the call, the caller included)",
                 lane, kWarpNames[kind], line, mask);
        fail_current();
    }
    if (kind <= W_SHFL_XOR && (width < 1 || width > 32 || (width & (width - 1)) != 0)) {
        e->code = E_WARP;
        e->line = line;
        snprintf(e->message, sizeof e->message,
                 "%s on line %d: width %d is not a power of 2 from 1 to 32 (undefined on a GPU)", kWarpNames[kind],
                 line, width);
        fail_current();
    }
    f.state = WARP;
    f.line = line;
    f.wkind = kind;
    f.wmask = mask;
    f.wvalue = value;
    f.warg = arg;
    f.wwidth = width;
    ++L.warp_waiting;
    if (kind != W_ACTIVEMASK) complete_if_arrived(t - lane, kind, line, mask);
    ctx_switch(&f.ctx, &L.sched);
    return f.wresult;
}

void misaligned(const void* p, int size, int write, const char* type) {
    gpubp_error* e = L.err;
    e->code = E_MISALIGNED;
    e->access = write;
    e->access_size = size;
    snprintf(e->message, sizeof e->message, "%s", type);
    locate(p, e);
    fail_current();
}

void pipeline_memcpy_async(void* dst, const void* src, unsigned long size, unsigned long zfill, int line) {
    Fiber& f = L.fibers[L.cur];
    char* d = static_cast<char*>(dst);
    const char* s = static_cast<const char*>(src);
    if (size != 4 && size != 8 && size != 16) {
        async_fail(line, "size_and_align must be 4, 8 or 16 bytes, got %lu", size);
    }
    if (zfill > size) async_fail(line, "zfill (%lu bytes) exceeds size_and_align (%lu bytes)", zfill, size);
    if (reinterpret_cast<uintptr_t>(d) % size) misaligned(d, static_cast<int>(size), 1, "__pipeline_memcpy_async destination");
    if (reinterpret_cast<uintptr_t>(s) % size) misaligned(s, static_cast<int>(size), 0, "__pipeline_memcpy_async source");
    const bool in_dynamic_capacity = d >= L.dyn_lo && d < L.dyn_lo + L.dyn_capacity;
    const bool in_dynamic = in_dynamic_capacity && d + size <= L.dyn_lo + L.dyn_bytes;
    const bool in_static = !in_dynamic_capacity && d >= L.shared_lo && d + size <= L.shared_hi;
    if (!in_dynamic && !in_static) {
        if (in_dynamic_capacity)
            async_fail(line, "the destination (dynamic shared memory byte %lld) lies past the end of the launch's "
                       "%lld bytes of dynamic shared memory (shared_mem)", static_cast<long long>(d - L.dyn_lo),
                       static_cast<long long>(L.dyn_bytes));
        async_fail(line, "the destination %p is not shared memory: cp.async copies global -> shared", dst);
    }
    if (s >= L.shared_lo && s < L.shared_hi)
        async_fail(line, "the source %p is shared memory: cp.async copies global -> shared", src);
    if (f.npending == kMaxPending)
        async_fail(line, "more than %d copies in flight in one thread (the emulator's limit): __pipeline_commit() "
                   "and __pipeline_wait_prior() before issuing more", kMaxPending);
    PendingCopy& c = f.pending[f.npending];
    memcpy(c.data, s, size - zfill);  // the source is read now, so a bad one faults naming this thread
    ++f.npending;
    c.dst = d;
    c.size = static_cast<int>(size);
    c.zfill = static_cast<int>(zfill);
    c.group = f.commits;
    fill_pattern(d, d + size);  // the destination is garbage until the wait lands the copy
}

void pipeline_commit() { ++L.fibers[L.cur].commits; }

void pipeline_wait_prior(unsigned long prior) {
    Fiber& f = L.fibers[L.cur];
    if (prior > 8) prior = 8;  // cuda_pipeline.h: at most 8 stages are told apart
    const int landed_below = f.commits - static_cast<int>(prior);  // these committed groups are complete
    int k = 0;
    for (int i = 0; i < f.npending; ++i) {
        PendingCopy& c = f.pending[i];
        if (c.group < landed_below) {
            memcpy(c.dst, c.data, c.size - c.zfill);
            memset(c.dst + c.size - c.zfill, 0, c.zfill);
        } else {
            f.pending[k++] = c;
        }
    }
    f.npending = k;
}
}  // namespace gpubp

namespace {

// Runs the block gpubp::block_idx.  Each sweep runs every runnable thread until
// it blocks (barrier, warp primitive) or returns, in index order, reversed on
// every other sweep and block, so that a missing barrier or __syncwarp() shows
// up whichever direction the data flows between threads.  A kernel without
// warp primitives has one sweep per barrier phase.
void run_block(unsigned long long block_linear) {
    const int n = L.nthreads;
    for (int t = 0; t < n; ++t) {
        Fiber& f = L.fibers[t];
        f.state = RUNNABLE;
        f.commits = 0;
        f.npending = 0;
        ctx_make(&f.ctx, g_stacks + t * stack_slot() + g_page, kStackBytes, fiber_entry);
    }
    L.warp_waiting = 0;
    for (unsigned long long sweep = 0;; ++sweep) {
        const bool reverse = ((block_linear + sweep) & 1) != 0;
        L.released = false;
        for (int k = 0; k < n; ++k) {
            const int t = reverse ? n - 1 - k : k;
            Fiber& f = L.fibers[t];
            if (f.state != RUNNABLE) continue;
            L.cur = t;
            gpubp::thread_idx = f.tid;
            ctx_switch(&L.sched, &f.ctx);
            if (L.failed) return;
        }
        if (L.released) {  // a warp primitive completed: its lanes may run on
            bool runnable = false;
            for (int t = 0; t < n && !runnable; ++t) runnable = L.fibers[t].state == RUNNABLE;
            if (runnable) continue;
        }
        if (L.warp_waiting > 0) {
            if (resolve_activemask()) continue;
            warp_stuck_error();
            return;
        }
        int waiting = 0, done = 0, count = 0;
        for (int t = 0; t < n; ++t) {
            if (L.fibers[t].state == WAITING) {
                ++waiting;
                count += L.fibers[t].predicate;
            } else {
                ++done;
            }
        }
        if (waiting == 0) return;
        gpubp_error* e = L.err;
        if (done > 0) {  // some threads skipped a barrier that the rest reached
            e->code = E_BARRIER_EXIT;
            e->n_exited = done;
            e->n_waiting = waiting;
            for (int t = 0; t < n; ++t) {
                const Fiber& f = L.fibers[t];
                if (f.state == WAITING && e->line == 0) e->line = f.line;
                if (f.state == DONE && e->n_listed < GPUBP_MAX_LISTED) {
                    e->listed_thread[e->n_listed] = t;
                    e->listed_line[e->n_listed] = -1;
                    e->listed_count[e->n_listed++] = 1;
                }
            }
            L.failed = true;
            return;
        }
        for (int t = 0; t < n; ++t) {  // one listed thread (and a count) per barrier call site
            const int line = L.fibers[t].line;
            int j = 0;
            while (j < e->n_listed && e->listed_line[j] != line) ++j;
            if (j < e->n_listed) {
                ++e->listed_count[j];
            } else if (j < GPUBP_MAX_LISTED) {
                e->listed_thread[j] = t;
                e->listed_line[j] = line;
                e->listed_count[j] = 1;
                e->n_listed = j + 1;
            }
        }
        if (e->n_listed > 1) {
            e->code = E_BARRIER_SPLIT;
            L.failed = true;
            return;
        }
        e->n_listed = 0;
        L.sync_count = count;
        for (int t = 0; t < n; ++t) L.fibers[t].state = RUNNABLE;
    }
}

// Shared memory starts each block as garbage, as on a GPU: the static part of
// the TLS block and the launch's share of the dynamic region are poisoned.
void poison_shared() {
    fill_pattern(L.shared_lo, L.dyn_lo);
    fill_pattern(L.dyn_lo + L.dyn_capacity, L.shared_hi);
    fill_pattern(L.dyn_lo, L.dyn_lo + L.dyn_bytes);
}

// touched (one flag per static variable of cfg, or null): set for each
// variable some block wrote, so that the launch learns how much static shared
// memory the kernel uses (the module's variables are those of all its kernels).
// The order a grid's blocks run in.  A GPU runs them in any order, many at once; the emulator runs them
// one after another, by default in index order (x fastest, then y, then z).  GPUBP_EMULATOR_BLOCK_ORDER
// ("reverse", or "shuffle:SEED": the k-th block run is (a·k + c) mod n, a coprime with n, both drawn from
// SEED) runs them otherwise, so that a result that must not depend on which block comes last (split-K's
// fix-up: the last block of a tile sums its partials) can be shown not to.  Checked by the Python side.
struct BlockOrder {
    unsigned long long n, a = 1, c = 0;
    bool reverse = false;

    static unsigned long long mix(unsigned long long x) {  // splitmix64
        x += 0x9E3779B97F4A7C15ull;
        x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
        x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
        return x ^ (x >> 31);
    }
    static unsigned long long gcd(unsigned long long p, unsigned long long q) {
        while (q) { const unsigned long long t = p % q; p = q; q = t; }
        return p;
    }
    explicit BlockOrder(unsigned long long blocks) : n(blocks) {
        const char* s = getenv("GPUBP_EMULATOR_BLOCK_ORDER");
        if (!s || n < 2) return;
        if (!strcmp(s, "reverse")) {
            reverse = true;
        } else if (!strncmp(s, "shuffle:", 8)) {
            const unsigned long long h = mix(strtoull(s + 8, nullptr, 10));
            c = h % n;
            a = 1 + mix(h) % (n - 1);
            while (gcd(a, n) != 1) a = a % (n - 1) + 1;  // 1 is coprime with every n
        }
    }
    unsigned long long operator()(unsigned long long k) const {
        if (reverse) return n - 1 - k;
        return static_cast<unsigned long long>((static_cast<unsigned __int128>(a) * k + c) % n);  // n < 2^64
    }
};

void run_grid(const unsigned grid[3], const gpubp_shared_cfg* cfg, char* touched) {
    const unsigned long long n = 1ull * grid[0] * grid[1] * grid[2];
    const BlockOrder order(n);
    for (unsigned long long k = 0; k < n; ++k) {
        const unsigned long long linear = order(k);
        const unsigned x = static_cast<unsigned>(linear % grid[0]);
        const unsigned y = static_cast<unsigned>(linear / grid[0] % grid[1]);
        const unsigned z = static_cast<unsigned>(linear / grid[0] / grid[1]);
        gpubp::block_idx = uint3{x, y, z};
        poison_shared();
        run_block(linear);
        if (L.failed) {
            L.err->block[0] = x;
            L.err->block[1] = y;
            L.err->block[2] = z;
            return;
        }
        for (int v = 0; touched && v < cfg->nvars; ++v) {
            char* lo = L.shared_lo + cfg->vars[2 * v];
            if (!touched[v] && !is_pattern(lo, lo + cfg->vars[2 * v + 1])) touched[v] = 1;
        }
    }
}

void on_fault(int sig, siginfo_t* info, void* uctx) {
    if (!L.in_kernel || !pthread_equal(pthread_self(), L.thread)) {
        // Not ours: put the previous handler back and let the fault recur there.
        for (int i = 0; i < 4; ++i)
            if (kSignals[i] == sig) sigaction(sig, &L.old_action[i], nullptr);
        return;
    }
    L.fault_signo = sig;
    L.fault_code = info->si_code;
    L.fault_addr = reinterpret_cast<uintptr_t>(info->si_addr);
    L.fault_access = -1;
#if defined(__x86_64__) && defined(REG_ERR)
    // Page-fault error code: bit 1 is set for a write.
    if (sig == SIGSEGV)
        L.fault_access = (static_cast<ucontext_t*>(uctx)->uc_mcontext.gregs[REG_ERR] & 2) ? 1 : 0;
#else
    (void)uctx;
#endif
    L.in_kernel = 0;
    siglongjmp(L.jmp, 1);
}

// Fills L.err for the fault the handler recorded.
void classify_fault() {
    gpubp_error* e = L.err;
    record_thread(L.fibers[L.cur]);
    e->signo = L.fault_signo;
    e->si_code = L.fault_code;
    e->address = L.fault_addr;
    e->access = L.fault_access;
    L.failed = true;
    if (L.fault_signo == SIGFPE) {
        e->code = E_ARITH;
        return;
    }
    if (L.fault_signo == SIGILL) {
        e->code = E_ILLEGAL;
        return;
    }
    e->code = E_FAULT;
    const uintptr_t a = L.fault_addr;
    for (int b = 0; b < L.nregions; ++b) {
        const Region& r = L.regions[b];
        const uintptr_t lo = reinterpret_cast<uintptr_t>(r.base);
        if (a >= lo && a < lo + r.total) {
            e->buffer = b;
            e->byte_offset = static_cast<int64_t>(a - reinterpret_cast<uintptr_t>(r.data));
            return;
        }
    }
    const uintptr_t s = reinterpret_cast<uintptr_t>(g_stacks);
    if (a >= s && a < s + g_nstacks * stack_slot() && (a - s) % stack_slot() < g_page) e->code = E_STACK;
}

bool map_region(Region& r, const gpubp_buffer& b) {
    r.base = nullptr;
    const size_t rounded = (static_cast<size_t>(b.nbytes) + g_page - 1) / g_page * g_page;
    r.total = kGuardBytes + rounded + kGuardBytes;
    void* p = mmap(nullptr, r.total, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) return false;
    r.base = static_cast<char*>(p);
    r.slack = r.base + kGuardBytes;
    r.nbytes = static_cast<size_t>(b.nbytes);
    r.data = r.slack + rounded - r.nbytes;  // the data ends exactly at the trailing guard
    if (rounded == 0) return true;
    if (mprotect(r.slack, rounded, PROT_READ | PROT_WRITE) != 0) return false;
    fill_pattern(r.slack, r.data);
    if (r.nbytes) memcpy(r.data, b.host, r.nbytes);
    if (b.read_only && mprotect(r.slack, rounded, PROT_READ) != 0) return false;
    return true;
}

bool check_canary(const Region& r, int b, gpubp_error* e) {
    char* first = nullptr;
    char* last = nullptr;
    for (char* p = r.slack; p < r.data; ++p) {
        if (static_cast<unsigned char>(*p) != kPattern[reinterpret_cast<uintptr_t>(p) & 3]) {
            if (!first) first = p;
            last = p;
        }
    }
    if (!first) return true;
    e->code = E_CANARY;
    e->buffer = b;
    e->byte_offset = first - r.data;
    e->byte_offset_last = last - r.data;
    return false;
}

bool install_handlers() {
    stack_t ss{};
    ss.ss_sp = g_altstack;
    ss.ss_size = sizeof g_altstack;
    if (sigaltstack(&ss, &L.old_altstack) != 0) return false;
    struct sigaction sa{};
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    for (int i = 0; i < 4; ++i)
        if (sigaction(kSignals[i], &sa, &L.old_action[i]) != 0) return false;
    return true;
}

void restore_handlers() {
    for (int i = 0; i < 4; ++i) sigaction(kSignals[i], &L.old_action[i], nullptr);
    sigaltstack(&L.old_altstack, nullptr);
}

void set_system_error(gpubp_error* e, const char* what) {
    e->code = E_SYSTEM;
    snprintf(e->message, sizeof e->message, "%s failed: %s", what, strerror(errno));
}

}  // namespace

extern "C" GPUBP_EXPORT int gpubp_abi_version() { return GPUBP_ABI_VERSION; }
extern "C" GPUBP_EXPORT int gpubp_sizeof_error() { return sizeof(gpubp_error); }
// Static shared memory of all kernels of the module together (plus a byte).
extern "C" GPUBP_EXPORT long long gpubp_shared_bytes() {
    char *lo, *hi;
    return shared_memory(&lo, &hi) ? hi - lo : -1;
}

extern "C" GPUBP_EXPORT long long gpubp_dynamic_shared_bytes() { return gpubp_dynamic_shared_capacity; }

// Runs thunk(argv) on every thread of grid x block with `shared` (dynamic
// shared memory, static budget).  Returns err->code (E_OK on success); the
// arrays behind `buffers` receive the results only on success.
extern "C" GPUBP_EXPORT int gpubp_launch(void (*thunk)(void**), const unsigned grid[3], const unsigned block[3],
                                         const gpubp_shared_cfg* shared, int nbuffers, const gpubp_buffer* buffers,
                                         int nargs, const gpubp_arg* args, gpubp_error* err) {
    memset(err, 0, sizeof *err);
    err->buffer = -1;
    err->access = -1;
    if (!g_page) g_page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    const unsigned long long nthreads = 1ull * block[0] * block[1] * block[2];
    if (nthreads == 0 || nthreads > kMaxThreads || grid[0] == 0 || grid[1] == 0 || grid[2] == 0 || nargs > 256 ||
        shared->dynamic_bytes < 0 || shared->dynamic_bytes > gpubp_dynamic_shared_capacity) {
        err->code = E_CONFIG;
        return err->code;
    }
    if (!ensure_stacks(static_cast<int>(nthreads))) {
        set_system_error(err, "mmap of the fiber stacks");
        return err->code;
    }

    Region regions[256];
    void* pointers[256];
    void* argv[256];
    if (nbuffers > 256) {
        err->code = E_CONFIG;
        return err->code;
    }
    char* shared_lo = nullptr;
    char* shared_hi = nullptr;
    int mapped = 0;
    bool ok = true;
    for (; mapped < nbuffers && ok; ++mapped) ok = map_region(regions[mapped], buffers[mapped]);
    if (!ok) set_system_error(err, "mmap/mprotect of a guarded buffer");
    for (int i = 0; ok && i < nargs; ++i) {
        if (args[i].kind == ARG_VALUE) {
            argv[i] = const_cast<void*>(args[i].value);
        } else {
            pointers[i] = args[i].kind == ARG_BUFFER ? regions[args[i].buffer].data : nullptr;
            argv[i] = &pointers[i];
        }
    }

    if (ok) {
        L.thunk = thunk;
        L.argv = argv;
        L.nthreads = static_cast<int>(nthreads);
        L.failed = false;
        L.err = err;
        L.regions = regions;
        L.nregions = nbuffers;
        L.thread = pthread_self();
        gpubp::grid_dim = dim3(grid[0], grid[1], grid[2]);
        gpubp::block_dim = dim3(block[0], block[1], block[2]);
        for (int t = 0; t < L.nthreads; ++t)
            L.fibers[t].tid = uint3{t % block[0], (t / block[0]) % block[1], t / (block[0] * block[1])};
        if (!shared_memory(&shared_lo, &shared_hi)) {
            err->code = E_SYSTEM;
            snprintf(err->message, sizeof err->message, "cannot locate the module's TLS block (shared memory)");
            ok = false;
        } else {
            L.shared_lo = shared_lo;
            L.shared_hi = shared_hi;
            L.dyn_lo = gpubp_dynamic_shared;
            L.dyn_capacity = gpubp_dynamic_shared_capacity;
            L.dyn_bytes = shared->dynamic_bytes;
            if (L.dyn_lo < shared_lo || L.dyn_lo + L.dyn_capacity > shared_hi) {
                err->code = E_SYSTEM;
                snprintf(err->message, sizeof err->message, "dynamic shared memory lies outside the TLS block");
                ok = false;
            }
        }
    }
    if (ok) {
        if (!install_handlers()) {
            set_system_error(err, "sigaction/sigaltstack");
            restore_handlers();
            ok = false;
        }
    }
    const bool measure = ok && shared->static_budget >= 0 && shared->nvars > 0;
    char* touched = measure ? new char[shared->nvars]() : nullptr;
    if (ok) {
        // The dynamic region past the launch's share is a canary, checked after the launch.
        fill_pattern(L.dyn_lo + L.dyn_bytes, L.dyn_lo + L.dyn_capacity);
        if (sigsetjmp(L.jmp, 1) == 0) {
            L.in_kernel = 1;
            run_grid(grid, shared, touched);
            L.in_kernel = 0;
        } else {
            classify_fault();
            L.err->block[0] = gpubp::block_idx.x;
            L.err->block[1] = gpubp::block_idx.y;
            L.err->block[2] = gpubp::block_idx.z;
        }
        restore_handlers();
        ok = !L.failed;
        if (ok && measure) {
            for (int v = 0; v < shared->nvars; ++v)
                if (touched[v]) err->static_smem += shared->vars[2 * v + 1];
            if (err->static_smem > shared->static_budget) {
                err->code = E_SMEM;
                ok = false;
            }
        }
        if (ok) {
            const char* tail = L.dyn_lo + L.dyn_bytes;
            for (const char* p = tail; p < L.dyn_lo + L.dyn_capacity; ++p) {
                if (static_cast<unsigned char>(*p) != kPattern[reinterpret_cast<uintptr_t>(p) & 3]) {
                    err->code = E_SMEM_CANARY;
                    err->byte_offset = p - L.dyn_lo;
                    ok = false;
                    break;
                }
            }
        }
        for (int b = 0; ok && b < nbuffers; ++b) ok = check_canary(regions[b], b, err);
        for (int b = 0; ok && b < nbuffers; ++b)
            if (buffers[b].copy_out && regions[b].nbytes) memcpy(buffers[b].host, regions[b].data, regions[b].nbytes);
    }
    for (int b = 0; b < mapped; ++b)
        if (regions[b].base) munmap(regions[b].base, regions[b].total);
    delete[] touched;
    L.regions = nullptr;
    L.nregions = 0;
    return err->code;
}
