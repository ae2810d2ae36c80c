//! The runtime side of `Parallel` loops: `alexc_parallel_for`, which
//! generated code calls with an outlined loop body, the global thread count,
//! and the persistent worker pool behind them.
//!
//! `0..n` is split into `min(threads, n)` contiguous chunks of nearly equal
//! size; chunk 0 runs on the calling thread, chunk `w` on pool worker `w-1`.
//! A parallel loop nested inside a chunk (on a worker or on the caller) runs
//! serially, so nesting never oversubscribes. The call never fails and never
//! unwinds into generated code: whatever cannot be handed to a worker runs on
//! the calling thread.
//!
//! # The pool
//!
//! Kernels are short (a few µs to a few ms), so what a call costs beyond the
//! work is what matters. Spawning scoped threads per call cost ~60 µs for
//! two threads; the pool's workers are spawned once (lazily, with 32 MiB
//! stacks, because locals such as register tiles and packed panels live on
//! the stack) and live for the rest of the process. Each worker owns a
//! *slot*: the caller writes the worker's job (body, captures, range) into
//! it, bumps the slot's sequence number and unparks the worker. A worker
//! that has just finished a job spins on its sequence number for `SPIN`
//! (50 µs) before it parks, so back-to-back kernels find it awake (measured
//! on a 2-core VM: an empty 2-thread call costs ~0.15–0.5 µs while the
//! worker spins, ~20 µs when it must be woken); the caller, after
//! its own chunk, waits the same way for the count of pending chunks to
//! reach zero (the last worker unparks it). `unpark` of a thread that is not
//! parked is one atomic swap, so the caller always calls it instead of
//! tracking who sleeps; `park`/`unpark` keep a wake-up token, so no wake-up
//! is lost between a check and a `park`.
//!
//! One caller dispatches at a time: the workers are behind a mutex that a
//! caller *tries* to take. A caller from another application thread that
//! finds the pool busy runs its loop serially instead of waiting: it makes
//! progress at once, and the cores are already busy with the other call.
//! The kernel IR's `Parallel` contract (iterations are independent) makes
//! results identical however the range was split.
//!
//! [`set_threads`] takes effect at the next call: the pool grows (spawning
//! workers) when a call wants more than it has and never shrinks; a call
//! wanting fewer uses the first ones, and the others stay parked. If a
//! thread cannot be spawned the pool keeps the size it has.
//!
//! # Why not rayon
//!
//! rayon is already a dependency, but `rayon::scope` heap-allocates a job
//! per spawn and wakes workers through its sleep module and work-stealing
//! deques, which costs microseconds per call on top of the work, and its
//! workers do not have the stack size we need unless we build our own
//! `ThreadPool` anyway. Contiguous static chunks need none of the stealing
//! machinery: one slot per worker and a counter are all there is, in ~150
//! lines of std-only code.

// Calling the outlined body through its function pointer is `unsafe`.
#![allow(unsafe_code)]

use std::cell::Cell;
use std::hint::spin_loop;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, TryLockError};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// 0 means "all cores" (`std::thread::available_parallelism`).
static THREADS: AtomicUsize = AtomicUsize::new(0);

/// Worker stack size: locals (register tiles, packed panels) live on the stack.
const WORKER_STACK: usize = 32 << 20;

/// How long a worker (or a waiting caller) spins before it parks: long
/// enough to bridge the gap between consecutive kernels of a plan, short
/// enough that an idle process stops burning cores at once.
const SPIN: Duration = Duration::from_micros(50);

thread_local! {
    /// Set on pool workers and on a caller while it runs chunk 0: a
    /// parallel loop started there runs serially.
    static IN_PARALLEL: Cell<bool> = const { Cell::new(false) };
}

/// Sets how many threads a parallel loop uses (0: all cores).
pub fn set_threads(n: usize) {
    THREADS.store(n, Ordering::Relaxed);
}

/// How many threads a parallel loop uses.
pub fn threads() -> usize {
    match THREADS.load(Ordering::Relaxed) {
        0 => cores(),
        n => n,
    }
}

/// The number of cores, asked once: `available_parallelism` reads cgroup
/// files on Linux, far too slow for every parallel loop.
fn cores() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES.get_or_init(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    })
}

/// An outlined loop body: runs iterations `begin..end` with captures `ctx`.
pub type BodyFn = unsafe extern "C" fn(ctx: *mut u8, begin: i64, end: i64);

/// The signature of [`alexc_parallel_for`] itself.
pub type PforFn = unsafe extern "C" fn(BodyFn, *mut u8, i64);

/// Runs `body(ctx, b, e)` over a partition of `0..n` across threads.
///
/// # Safety
///
/// `body` must be an outlined body emitted by this crate and `ctx` its
/// capture array, valid until this call returns; `body` must be safe to run
/// concurrently on disjoint ranges (the kernel IR's `Parallel` contract).
pub unsafe extern "C" fn alexc_parallel_for(body: BodyFn, ctx: *mut u8, n: i64) {
    // SAFETY: the caller's contract, forwarded.
    unsafe { parallel_for(threads(), body, ctx, n) }
}

/// [`alexc_parallel_for`] with an explicit thread count.
///
/// # Safety
///
/// As for [`alexc_parallel_for`].
unsafe fn parallel_for(threads: usize, body: BodyFn, ctx: *mut u8, n: i64) {
    if n <= 0 {
        return;
    }
    let wanted = threads.clamp(1, usize::try_from(n).unwrap_or(usize::MAX));
    if wanted > 1 && !IN_PARALLEL.with(Cell::get) {
        if let Some(mut crew) = pool().try_crew() {
            // SAFETY: the caller's contract, forwarded.
            unsafe { crew.run(wanted - 1, body, ctx, n) };
            return;
        }
    }
    // SAFETY: the caller's contract; one range covering everything.
    unsafe { body(ctx, 0, n) };
}

/// Chunk `w` of `0..n` split into `chunks` contiguous, nearly equal parts.
fn chunk(n: i64, w: usize, chunks: usize) -> (i64, i64) {
    let (n, w, t) = (i128::from(n), w as i128, chunks as i128);
    ((n * w / t) as i64, (n * (w + 1) / t) as i64)
}

/// Locks `m`, ignoring poison: nothing panics while one of ours is held,
/// and the data (a job, the worker list) stays valid either way.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Returns once `ready()` holds: spins for [`SPIN`], then parks until
/// unparked (the thread that makes `ready` true must unpark this one).
fn wait_until(ready: impl Fn() -> bool) {
    let start = Instant::now();
    loop {
        for _ in 0..64 {
            if ready() {
                return;
            }
            spin_loop();
        }
        if start.elapsed() > SPIN {
            break;
        }
    }
    while !ready() {
        std::thread::park();
    }
}

/// One chunk for one worker. `ctx` is an address because raw pointers are
/// not `Send`; the body only reads the captures, which outlive the call.
struct Job {
    body: BodyFn,
    ctx: usize,
    begin: i64,
    end: i64,
    /// Unparked by the worker that finishes the dispatch's last chunk.
    caller: Thread,
}

/// A worker's mailbox.
#[derive(Default)]
struct Slot {
    /// Bumped by the caller after it wrote `job`; the worker waits for it.
    posted: AtomicU64,
    job: Mutex<Option<Job>>,
}

struct Worker {
    slot: Arc<Slot>,
    thread: Thread,
}

/// The workers, owned by whichever caller holds the lock.
#[derive(Default)]
struct Crew {
    workers: Vec<Worker>,
    /// A spawn failed once: stop trying, use the workers there are.
    spawn_failed: bool,
}

struct Pool {
    crew: Mutex<Crew>,
    /// Chunks handed to workers in the current dispatch and not yet done.
    pending: AtomicUsize,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| Pool {
        crew: Mutex::new(Crew::default()),
        pending: AtomicUsize::new(0),
    })
}

impl Pool {
    /// The workers, unless another caller is dispatching on them.
    fn try_crew(&'static self) -> Option<CrewGuard> {
        let guard = match self.crew.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        Some(CrewGuard { pool: self, guard })
    }
}

struct CrewGuard {
    pool: &'static Pool,
    guard: MutexGuard<'static, Crew>,
}

impl CrewGuard {
    /// Spawns workers until there are `count` (or a spawn fails); returns
    /// how many there are, at most `count`.
    fn grow(&mut self, count: usize) -> usize {
        let crew = &mut *self.guard;
        while crew.workers.len() < count && !crew.spawn_failed {
            let slot = Arc::new(Slot::default());
            let pool = self.pool;
            let mine = Arc::clone(&slot);
            let spawned = std::thread::Builder::new()
                .name(format!("alexc-worker-{}", crew.workers.len() + 1))
                .stack_size(WORKER_STACK)
                .spawn(move || worker_main(pool, &mine));
            match spawned {
                Ok(handle) => crew.workers.push(Worker {
                    slot,
                    thread: handle.thread().clone(),
                }),
                Err(_) => crew.spawn_failed = true,
            }
        }
        crew.workers.len().min(count)
    }

    /// Runs `0..n` on the caller and up to `helpers` workers.
    ///
    /// # Safety
    ///
    /// As for [`alexc_parallel_for`].
    unsafe fn run(&mut self, helpers: usize, body: BodyFn, ctx: *mut u8, n: i64) {
        let helpers = self.grow(helpers);
        let chunks = helpers + 1;
        // Workers read `pending` only after they took a job, which the
        // slot's mutex and `posted` order after this store.
        self.pool.pending.store(helpers, Ordering::Relaxed);
        let caller = std::thread::current();
        for (w, worker) in self.guard.workers[..helpers].iter().enumerate() {
            let (begin, end) = chunk(n, w + 1, chunks);
            *lock(&worker.slot.job) = Some(Job {
                body,
                ctx: ctx as usize,
                begin,
                end,
                caller: caller.clone(),
            });
            worker.slot.posted.fetch_add(1, Ordering::Release);
            worker.thread.unpark();
        }
        let was = IN_PARALLEL.with(|f| f.replace(true));
        let (begin, end) = chunk(n, 0, chunks);
        // SAFETY: the caller's contract; chunk 0 is disjoint from the
        // workers' chunks.
        unsafe { body(ctx, begin, end) };
        IN_PARALLEL.with(|f| f.set(was));
        // Acquire: the workers' writes (their chunks) happen before their
        // decrements, so they are visible once `pending` reads 0. The
        // captures in `ctx` stay alive until then.
        let pending = &self.pool.pending;
        wait_until(|| pending.load(Ordering::Acquire) == 0);
    }
}

/// A worker's life: wait for a job in `slot`, run it, report, repeat.
fn worker_main(pool: &'static Pool, slot: &Slot) {
    IN_PARALLEL.with(|f| f.set(true));
    let mut seen = 0;
    loop {
        wait_until(|| slot.posted.load(Ordering::Acquire) != seen);
        seen = slot.posted.load(Ordering::Acquire);
        let Some(job) = lock(&slot.job).take() else {
            continue;
        };
        // SAFETY: the dispatching caller's contract (see `alexc_parallel_for`):
        // `ctx` stays valid until `pending` reaches 0, which cannot happen
        // before this chunk is done; the chunks are disjoint.
        unsafe { (job.body)(job.ctx as *mut u8, job.begin, job.end) };
        if pool.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            job.caller.unpark();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::atomic::AtomicU32;
    use std::thread::ThreadId;

    use super::*;

    /// `ctx` is a `Vec<AtomicU32>`: counts how often each iteration ran.
    unsafe extern "C" fn count(ctx: *mut u8, begin: i64, end: i64) {
        // SAFETY: the tests pass a live `Vec<AtomicU32>`.
        let counts = unsafe { &*(ctx as *const Vec<AtomicU32>) };
        for i in begin..end {
            counts[i as usize].fetch_add(1, Ordering::Relaxed);
        }
    }

    fn run_counting(threads: usize, n: usize) -> Vec<u32> {
        let counts: Vec<AtomicU32> = (0..n).map(|_| AtomicU32::new(0)).collect();
        let ctx = &counts as *const Vec<AtomicU32> as *mut u8;
        // SAFETY: `count` only reads `ctx`, which outlives the call, and
        // touches each index through an atomic.
        unsafe { parallel_for(threads, count, ctx, n as i64) };
        counts.into_iter().map(AtomicU32::into_inner).collect()
    }

    #[test]
    fn every_iteration_runs_exactly_once() {
        for threads in [1, 2, 3, 4, 5, 8, 13, 32] {
            for n in [1usize, 2, 3, 4, 5, 7, 8, 31, 64, 100, 1001] {
                let counts = run_counting(threads, n);
                assert!(
                    counts.iter().all(|&c| c == 1),
                    "threads {threads}, n {n}: {counts:?}"
                );
            }
        }
    }

    #[test]
    fn empty_and_negative_ranges_run_nothing() {
        unsafe extern "C" fn never(_: *mut u8, _: i64, _: i64) {
            std::process::abort();
        }
        for n in [0, -1, i64::MIN] {
            // SAFETY: `never` is not called for an empty range.
            unsafe { parallel_for(4, never, std::ptr::null_mut(), n) };
        }
    }

    #[test]
    fn chunks_partition_the_range() {
        for chunks in 1..10 {
            for n in [1i64, 5, 9, 10, 11, 1000] {
                let mut next = 0;
                for w in 0..chunks {
                    let (b, e) = chunk(n, w, chunks);
                    assert_eq!(b, next);
                    assert!(e >= b && e - b <= n / chunks as i64 + 1);
                    next = e;
                }
                assert_eq!(next, n);
            }
        }
    }

    /// Outer loop over 8 rows; each row runs a nested parallel loop over 16
    /// columns, which must run serially: one call covering the whole range.
    #[test]
    fn nested_loops_run_serially() {
        struct Ctx {
            cells: Vec<AtomicU32>,
            inner_calls: Vec<AtomicU32>,
        }
        struct Row<'a> {
            ctx: &'a Ctx,
            row: usize,
        }
        unsafe extern "C" fn inner(ctx: *mut u8, begin: i64, end: i64) {
            // SAFETY: `outer` passes a live `Row`.
            let r = unsafe { &*(ctx as *const Row<'_>) };
            r.ctx.inner_calls[r.row].fetch_add(1, Ordering::Relaxed);
            assert!(begin == 0 && end == 16, "nested loop was split");
            for j in begin..end {
                r.ctx.cells[r.row * 16 + j as usize].fetch_add(1, Ordering::Relaxed);
            }
        }
        unsafe extern "C" fn outer(ctx: *mut u8, begin: i64, end: i64) {
            // SAFETY: the test passes a live `Ctx`.
            let c = unsafe { &*(ctx as *const Ctx) };
            for row in begin..end {
                let r = Row {
                    ctx: c,
                    row: row as usize,
                };
                // SAFETY: `r` outlives the call; `inner` uses atomics.
                unsafe { parallel_for(4, inner, &r as *const Row<'_> as *mut u8, 16) };
            }
        }
        let ctx = Ctx {
            cells: (0..8 * 16).map(|_| AtomicU32::new(0)).collect(),
            inner_calls: (0..8).map(|_| AtomicU32::new(0)).collect(),
        };
        // SAFETY: `ctx` outlives the call; `outer` uses atomics.
        unsafe { parallel_for(4, outer, &ctx as *const Ctx as *mut u8, 8) };
        assert!(ctx.cells.iter().all(|c| c.load(Ordering::Relaxed) == 1));
        assert!(ctx
            .inner_calls
            .iter()
            .all(|c| c.load(Ordering::Relaxed) == 1));
    }

    #[test]
    fn concurrent_callers_each_cover_their_range() {
        let callers: Vec<_> = (0..4)
            .map(|t| {
                std::thread::spawn(move || {
                    for round in 0..200 {
                        let n = 1 + (round * 7 + t * 13) % 97;
                        let counts = run_counting(2 + t, n);
                        assert!(counts.iter().all(|&c| c == 1), "caller {t}, n {n}");
                    }
                })
            })
            .collect();
        for caller in callers {
            caller.join().expect("caller thread");
        }
    }

    /// The chunks really run on other threads (retried: a concurrent test
    /// may hold the pool, and then the call runs serially).
    #[test]
    fn work_reaches_the_workers() {
        unsafe extern "C" fn record(ctx: *mut u8, _: i64, _: i64) {
            // SAFETY: the test passes a live `Mutex<HashSet<ThreadId>>`.
            let ids = unsafe { &*(ctx as *const Mutex<HashSet<ThreadId>>) };
            lock(ids).insert(std::thread::current().id());
        }
        let ids: Mutex<HashSet<ThreadId>> = Mutex::new(HashSet::new());
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            // SAFETY: `ids` outlives the call; `record` locks it.
            unsafe { parallel_for(3, record, &ids as *const _ as *mut u8, 3) };
            if lock(&ids).len() == 3 {
                return;
            }
            lock(&ids).clear();
            std::thread::sleep(Duration::from_millis(1));
        }
        panic!("three chunks never ran on three threads");
    }
}
