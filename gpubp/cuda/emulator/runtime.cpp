// runtime.cpp: the emulated device behind gpubp.cuda.emulator.
//
// One launch = gpubp_launch(): copy every array argument into a guarded
// mapping, run the grid block by block, check the canaries, copy the results
// back.  Inside a block every CUDA thread is a fiber on the calling OS thread:
// the scheduler runs each runnable fiber until it reaches __syncthreads() or
// returns, then releases the barrier when every live thread waits there.
// Faults (SIGSEGV/SIGBUS/SIGFPE/SIGILL) raised by kernel code are caught on an
// alternate signal stack and siglongjmp'ed back here; the previous handlers
// and signal stack are restored before gpubp_launch returns, so the host
// process keeps its own fault handling (e.g. Python's faulthandler).
//
// Not thread-safe: the Python side serializes launches with a lock.
// -DGPUBP_FORCE_UCONTEXT selects the portable (slower) fiber switch on x86-64
// too, to test it.
#include "runtime.h"

#include <cerrno>
#include <csetjmp>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <link.h>
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>
#if !defined(__x86_64__) || defined(GPUBP_FORCE_UCONTEXT)
#include <ucontext.h>
#endif

// ---------------------------------------------------------------- ABI with Python (gpubp/emulator/_module.py)
// Bump GPUBP_ABI_VERSION whenever one of these structs changes.
#define GPUBP_ABI_VERSION 1

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
    char message[256];
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

enum FiberState { RUNNABLE, WAITING, DONE };

struct Fiber {
    Ctx ctx;
    uint3 tid;
    int state;
    int line;       // barrier line while WAITING
    int predicate;  // __syncthreads_count argument
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
    for (char* p = lo; p < hi; ++p) *p = static_cast<char>(kPattern[reinterpret_cast<uintptr_t>(p) & 3]);
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
    Fiber& f = L.fibers[L.cur];
    L.err->code = E_ABORT;
    L.err->line = line;
    snprintf(L.err->message, sizeof L.err->message, "%s:%d: %s", file, line, what);
    record_thread(f);
    L.failed = true;
    f.state = DONE;
    ctx_switch(&f.ctx, &L.sched);
    __builtin_unreachable();
}
}  // namespace gpubp

namespace {

// Runs the block gpubp::block_idx.  Threads run in index order, reversed on
// every other phase and block, so that a missing barrier shows up whichever
// direction the data flows between threads.
void run_block(unsigned long long block_linear) {
    const int n = L.nthreads;
    for (int t = 0; t < n; ++t) {
        Fiber& f = L.fibers[t];
        f.state = RUNNABLE;
        ctx_make(&f.ctx, g_stacks + t * stack_slot() + g_page, kStackBytes, fiber_entry);
    }
    for (unsigned long long phase = 0;; ++phase) {
        const bool reverse = ((block_linear + phase) & 1) != 0;
        for (int k = 0; k < n; ++k) {
            const int t = reverse ? n - 1 - k : k;
            Fiber& f = L.fibers[t];
            if (f.state != RUNNABLE) continue;
            L.cur = t;
            gpubp::thread_idx = f.tid;
            ctx_switch(&L.sched, &f.ctx);
            if (L.failed) return;
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

void run_grid(const unsigned grid[3], char* shared_lo, char* shared_hi) {
    unsigned long long linear = 0;
    for (unsigned z = 0; z < grid[2]; ++z)
        for (unsigned y = 0; y < grid[1]; ++y)
            for (unsigned x = 0; x < grid[0]; ++x, ++linear) {
                gpubp::block_idx = uint3{x, y, z};
                // shared memory starts each block as garbage, as on a GPU
                fill_pattern(shared_lo, shared_hi);
                run_block(linear);
                if (L.failed) {
                    L.err->block[0] = x;
                    L.err->block[1] = y;
                    L.err->block[2] = z;
                    return;
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

// Runs thunk(argv) on every thread of grid x block.  Returns err->code (E_OK
// on success); the arrays behind `buffers` receive the results only on success.
extern "C" GPUBP_EXPORT int gpubp_launch(void (*thunk)(void**), const unsigned grid[3], const unsigned block[3],
                                         int nbuffers, const gpubp_buffer* buffers, int nargs,
                                         const gpubp_arg* args, gpubp_error* err) {
    memset(err, 0, sizeof *err);
    err->buffer = -1;
    err->access = -1;
    if (!g_page) g_page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    const unsigned long long nthreads = 1ull * block[0] * block[1] * block[2];
    if (nthreads == 0 || nthreads > kMaxThreads || grid[0] == 0 || grid[1] == 0 || grid[2] == 0 || nargs > 256) {
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
        }
    }
    if (ok) {
        if (!install_handlers()) {
            set_system_error(err, "sigaction/sigaltstack");
            restore_handlers();
            ok = false;
        }
    }
    if (ok) {
        if (sigsetjmp(L.jmp, 1) == 0) {
            L.in_kernel = 1;
            run_grid(grid, shared_lo, shared_hi);
            L.in_kernel = 0;
        } else {
            classify_fault();
            L.err->block[0] = gpubp::block_idx.x;
            L.err->block[1] = gpubp::block_idx.y;
            L.err->block[2] = gpubp::block_idx.z;
        }
        restore_handlers();
        ok = !L.failed;
        for (int b = 0; ok && b < nbuffers; ++b) ok = check_canary(regions[b], b, err);
        for (int b = 0; ok && b < nbuffers; ++b)
            if (buffers[b].copy_out && regions[b].nbytes) memcpy(buffers[b].host, regions[b].data, regions[b].nbytes);
    }
    for (int b = 0; b < mapped; ++b)
        if (regions[b].base) munmap(regions[b].base, regions[b].total);
    L.regions = nullptr;
    L.nregions = 0;
    return err->code;
}
