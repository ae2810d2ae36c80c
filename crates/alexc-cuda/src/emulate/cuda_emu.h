// The CUDA execution model on the CPU, for running alexc's rendered CUDA C
// without a GPU (crates/alexc-cuda/src/emulate.rs). Compiled as C++17 in
// front of the generated kernels, which it leaves untouched: the CUDA
// keywords become macros, the built-in indices thread-local variables, and
// every thread of a block a fiber (a coroutine with its own stack) on one
// OS thread.
//
// - A block's threads run one after the other, each until it reaches
//   `__syncthreads()` or returns; when all have, the next phase starts. So a
//   barrier is exactly CUDA's: nothing a thread writes before it is missing
//   after it, and `__shared__` memory (one copy per OS thread, hence per
//   running block) is shared by the block's threads.
// - The order of the threads alternates between phases and between blocks
//   (forward, backward). A race inside a phase (one thread reading what
//   another writes before the barrier) therefore shows as a wrong result.
// - A barrier that not every thread of the block reaches (divergent
//   control flow around `__syncthreads()`: a hang or undefined behaviour on
//   a GPU) is an error, reported to the caller; so is `__syncthreads()` in
//   a launch that declared it has none.
//
// Fibers switch with _setjmp/_longjmp (no signal-mask system call; the
// stacks come from makecontext once per fiber), which is why this unit is
// compiled with _FORTIFY_SOURCE off: its longjmp check refuses a jump to
// another stack.
#include <math.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <new>

struct alexc_emu_dim3 {
    unsigned int x, y, z;
};

namespace alexc_emu {

static thread_local alexc_emu_dim3 thread_idx;
static thread_local alexc_emu_dim3 block_idx;
static thread_local alexc_emu_dim3 grid_dim;
static thread_local alexc_emu_dim3 block_dim;

typedef void (*Body)(void* const* args);

enum Status {
    OK = 0,
    // A `__syncthreads()` that some threads of the block reached and
    // others did not (they returned).
    DIVERGENT_BARRIER = 1,
    // `__syncthreads()` in a launch declared without barriers.
    UNEXPECTED_BARRIER = 2,
    // The fiber stacks could not be allocated.
    NO_MEMORY = 3,
};

struct Fiber {
    jmp_buf context;
    ucontext_t start;
    bool started;
    bool done;
};

struct Worker {
    jmp_buf scheduler;
    // The fiber running now; null between fibers and in launches without
    // barriers (whose threads are plain calls).
    Fiber* current;
    Body body;
    void* const* args;
    // `__syncthreads()` was called outside a fiber.
    bool stray_barrier;
};

static thread_local Worker* worker;

// Bytes of stack per thread: generated code keeps per-thread arrays (a
// GEMM's register tile, a flat launch's locals) on it.
static const size_t STACK_BYTES = 512 * 1024;

static void fiber_main() {
    for (;;) {
        Worker* w = worker;
        w->body(w->args);
        w->current->done = true;
        // Parked here until the next block restarts this fiber.
        if (!_setjmp(w->current->context)) {
            _longjmp(w->scheduler, 1);
        }
    }
}

static void syncthreads() {
    Worker* w = worker;
    if (w == nullptr || w->current == nullptr) {
        // A launch without fibers: `launch` reports it.
        if (w != nullptr) {
            w->stray_barrier = true;
        }
        return;
    }
    if (!_setjmp(w->current->context)) {
        _longjmp(w->scheduler, 1);
    }
}

// Runs block `block` of `threads` fibers to completion.
static Status run_block(Worker* w, Fiber* fibers, unsigned threads, unsigned block) {
    block_idx = {block, 0, 0};
    for (unsigned t = 0; t < threads; ++t) {
        fibers[t].done = false;
    }
    for (unsigned phase = 0;; ++phase) {
        bool reverse = ((block + phase) & 1) != 0;
        unsigned finished = 0;
        for (unsigned k = 0; k < threads; ++k) {
            unsigned t = reverse ? threads - 1 - k : k;
            Fiber* f = &fibers[t];
            if (f->done) {
                ++finished;
                continue;
            }
            w->current = f;
            thread_idx = {t, 0, 0};
            if (!_setjmp(w->scheduler)) {
                if (!f->started) {
                    f->started = true;
                    setcontext(&f->start);
                } else {
                    _longjmp(f->context, 1);
                }
            }
            if (f->done) {
                ++finished;
            }
        }
        w->current = nullptr;
        if (finished == threads) {
            return OK;
        }
        if (finished != 0) {
            return DIVERGENT_BARRIER;
        }
    }
}

// Runs blocks `first`, `first + step`, … of a launch of `grid` blocks of
// `block` threads on the calling OS thread. With `barriers == 0` the
// threads are plain calls, in order; otherwise fibers.
static int launch(Body body, void* const* args, unsigned grid, unsigned block, unsigned first,
                  unsigned step, int barriers) {
    grid_dim = {grid, 1, 1};
    block_dim = {block, 1, 1};
    Worker w;
    w.body = body;
    w.args = args;
    w.current = nullptr;
    w.stray_barrier = false;
    worker = &w;
    if (barriers == 0) {
        for (unsigned b = first; b < grid && !w.stray_barrier; b += step) {
            block_idx = {b, 0, 0};
            for (unsigned t = 0; t < block; ++t) {
                thread_idx = {t, 0, 0};
                body(args);
            }
        }
        worker = nullptr;
        return w.stray_barrier ? UNEXPECTED_BARRIER : OK;
    }
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t bytes = (size_t)block * STACK_BYTES;
    char* stacks = (char*)mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                               MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    Fiber* fibers = new (std::nothrow) Fiber[block];
    if (stacks == MAP_FAILED || fibers == nullptr) {
        if (stacks != MAP_FAILED) {
            munmap(stacks, bytes);
        }
        delete[] fibers;
        worker = nullptr;
        return NO_MEMORY;
    }
    for (unsigned t = 0; t < block; ++t) {
        char* stack = stacks + (size_t)t * STACK_BYTES;
        // A guard page under each stack: an overflow faults instead of
        // writing into the neighbour's stack.
        mprotect(stack, page, PROT_NONE);
        Fiber* f = &fibers[t];
        f->started = false;
        f->done = false;
        getcontext(&f->start);
        f->start.uc_stack.ss_sp = stack + page;
        f->start.uc_stack.ss_size = STACK_BYTES - page;
        f->start.uc_link = nullptr;
        makecontext(&f->start, fiber_main, 0);
    }
    int status = OK;
    for (unsigned b = first; b < grid && status == OK; b += step) {
        status = run_block(&w, fibers, block, b);
    }
    worker = nullptr;
    delete[] fibers;
    munmap(stacks, bytes);
    return status;
}

}  // namespace alexc_emu

#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __shared__ static thread_local
#define __syncthreads() alexc_emu::syncthreads()
#define threadIdx (alexc_emu::thread_idx)
#define blockIdx (alexc_emu::block_idx)
#define gridDim (alexc_emu::grid_dim)
#define blockDim (alexc_emu::block_dim)

static inline float __int_as_float(int bits) {
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}
