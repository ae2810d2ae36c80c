//! The runtime side of `Parallel` loops: `alexc_parallel_for`, which
//! generated code calls with an outlined loop body, and the global thread
//! count.
//!
//! `0..n` is split into `min(threads, n)` contiguous chunks of nearly equal
//! size; chunk 0 runs on the calling thread, the others on scoped threads
//! (spawned per call: simple, and cheap next to the conv/matmul kernels that
//! are parallelized; a persistent pool can replace it behind the same
//! symbol). A parallel loop nested inside a worker runs serially on that
//! worker, so nesting never oversubscribes. If a thread cannot be spawned its
//! chunk runs on the calling thread: the call never fails and never unwinds
//! into generated code.

// Calling the outlined body through its function pointer is `unsafe`.
#![allow(unsafe_code)]

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// 0 means "all cores" (`std::thread::available_parallelism`).
static THREADS: AtomicUsize = AtomicUsize::new(0);

/// Worker stack size: locals (register tiles, packed panels) live on the stack.
const WORKER_STACK: usize = 32 << 20;

thread_local! {
    static IN_WORKER: Cell<bool> = const { Cell::new(false) };
}

/// Sets how many threads a parallel loop uses (0: all cores).
pub fn set_threads(n: usize) {
    THREADS.store(n, Ordering::Relaxed);
}

/// How many threads a parallel loop uses.
pub fn threads() -> usize {
    match THREADS.load(Ordering::Relaxed) {
        0 => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        n => n,
    }
}

/// An outlined loop body: runs iterations `begin..end` with captures `ctx`.
pub(crate) type BodyFn = unsafe extern "C" fn(ctx: *mut u8, begin: i64, end: i64);

/// The signature of [`alexc_parallel_for`] itself.
pub(crate) type PforFn = unsafe extern "C" fn(BodyFn, *mut u8, i64);

/// Runs `body(ctx, b, e)` over a partition of `0..n` across threads.
///
/// # Safety
///
/// `body` must be an outlined body emitted by this crate and `ctx` its
/// capture array, valid until this call returns; `body` must be safe to run
/// concurrently on disjoint ranges (the kernel IR's `Parallel` contract).
pub(crate) unsafe extern "C" fn alexc_parallel_for(body: BodyFn, ctx: *mut u8, n: i64) {
    if n <= 0 {
        return;
    }
    let workers = threads().clamp(1, usize::try_from(n).unwrap_or(usize::MAX));
    if workers == 1 || IN_WORKER.with(Cell::get) {
        // SAFETY: the caller's contract.
        unsafe { body(ctx, 0, n) };
        return;
    }
    let chunk = |w: usize| {
        let (n, w, t) = (n as i128, w as i128, workers as i128);
        ((n * w / t) as i64, (n * (w + 1) / t) as i64)
    };
    // Raw pointers are not `Send`; the address is, and the body only reads
    // the captures, which outlive the scope.
    let ctx_addr = ctx as usize;
    std::thread::scope(|scope| {
        let mut inline = Vec::new();
        for w in 1..workers {
            let (begin, end) = chunk(w);
            let spawned = std::thread::Builder::new()
                .stack_size(WORKER_STACK)
                .spawn_scoped(scope, move || {
                    IN_WORKER.with(|f| f.set(true));
                    // SAFETY: the caller's contract; ranges are disjoint.
                    unsafe { body(ctx_addr as *mut u8, begin, end) };
                });
            if spawned.is_err() {
                inline.push((begin, end));
            }
        }
        let was = IN_WORKER.with(|f| f.replace(true));
        let (begin, end) = chunk(0);
        // SAFETY: the caller's contract.
        unsafe { body(ctx, begin, end) };
        for (begin, end) in inline {
            // SAFETY: the caller's contract.
            unsafe { body(ctx, begin, end) };
        }
        IN_WORKER.with(|f| f.set(was));
    });
}
