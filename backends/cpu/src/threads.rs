//! Fork-join over an explicit number of threads.
//!
//! One pool per requested thread count, built on first use and kept for the life of the
//! process. The calling thread does share 0 itself and `threads − 1` workers the rest; between
//! jobs the workers spin for a while (a decode step issues a parallel GEMV every few tens of µs,
//! and waking a sleeping thread costs 20–70 µs on a VM) and then sleep on a condition variable,
//! so an idle process burns no CPU. A worker that itself calls [`run`] (nested parallelism), or a
//! caller finding the pool busy with another caller's job, runs the shares on its own thread.

use std::cell::Cell;
use std::collections::HashMap;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long an idle worker spins before it sleeps.
const SPIN: Duration = Duration::from_micros(300);

/// The current job: a type-erased `&(dyn Fn(usize) + Sync)` valid until every worker is done.
#[derive(Clone, Copy)]
struct JobRef(*const (dyn Fn(usize) + Sync));
// SAFETY: the pointee is Sync, and `run` keeps it alive until every worker has finished with it.
unsafe impl Send for JobRef {}

struct Shared {
    /// Bumped once per job; workers run the job of each epoch they see.
    epoch: AtomicU64,
    job: Mutex<Option<JobRef>>,
    /// Workers still running the current job.
    remaining: AtomicUsize,
    panicked: AtomicBool,
    sleepers: AtomicUsize,
    sleep: Mutex<()>,
    wake: Condvar,
}

struct Pool {
    workers: usize,
    shared: Arc<Shared>,
    /// Held by the caller whose job the pool runs.
    busy: Mutex<()>,
}

thread_local! {
    static IN_WORKER: Cell<bool> = const { Cell::new(false) };
}

fn pool(threads: usize) -> Arc<Pool> {
    static POOLS: OnceLock<Mutex<HashMap<usize, Arc<Pool>>>> = OnceLock::new();
    let pools = POOLS.get_or_init(|| Mutex::new(HashMap::new()));
    let mut pools = pools.lock().unwrap_or_else(|e| e.into_inner());
    pools
        .entry(threads)
        .or_insert_with(|| Pool::start(threads - 1))
        .clone()
}

impl Pool {
    fn start(workers: usize) -> Arc<Pool> {
        let shared = Arc::new(Shared {
            epoch: AtomicU64::new(0),
            job: Mutex::new(None),
            remaining: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            sleepers: AtomicUsize::new(0),
            sleep: Mutex::new(()),
            wake: Condvar::new(),
        });
        for w in 1..=workers {
            let s = shared.clone();
            std::thread::Builder::new()
                .name(format!("vl3c-cpu-{}-{w}", workers + 1))
                .spawn(move || worker(&s, w))
                .expect("spawning a vl3c CPU thread");
        }
        Arc::new(Pool {
            workers,
            shared,
            busy: Mutex::new(()),
        })
    }
}

fn worker(s: &Shared, index: usize) {
    IN_WORKER.with(|f| f.set(true));
    let mut seen = 0;
    loop {
        seen = wait_for_job(s, seen);
        let job = s
            .job
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .expect("a job is set before its epoch");
        // SAFETY: the caller keeps the closure alive until `remaining` reaches 0.
        let f = unsafe { &*job.0 };
        if catch_unwind(AssertUnwindSafe(|| f(index))).is_err() {
            s.panicked.store(true, Ordering::SeqCst);
        }
        s.remaining.fetch_sub(1, Ordering::Release);
    }
}

/// Waits until the epoch moves past `seen`; returns the new epoch.
fn wait_for_job(s: &Shared, seen: u64) -> u64 {
    let start = Instant::now();
    loop {
        for _ in 0..64 {
            let e = s.epoch.load(Ordering::Acquire);
            if e != seen {
                return e;
            }
            std::hint::spin_loop();
        }
        if start.elapsed() > SPIN {
            break;
        }
    }
    let mut g = s.sleep.lock().unwrap_or_else(|e| e.into_inner());
    s.sleepers.fetch_add(1, Ordering::SeqCst);
    loop {
        let e = s.epoch.load(Ordering::SeqCst);
        if e != seen {
            s.sleepers.fetch_sub(1, Ordering::SeqCst);
            return e;
        }
        g = s.wake.wait(g).unwrap_or_else(|e| e.into_inner());
    }
}

/// Runs `f(t)` once for every `t in 0..threads`, in parallel, and waits for all of them.
pub fn run(threads: usize, f: impl Fn(usize) + Sync) {
    if threads <= 1 {
        f(0);
        return;
    }
    let sequential = || (0..threads).for_each(&f);
    if IN_WORKER.with(|w| w.get()) {
        return sequential();
    }
    let p = pool(threads);
    let Ok(_busy) = p.busy.try_lock() else {
        return sequential();
    };
    let s = &p.shared;
    let dynf: &(dyn Fn(usize) + Sync) = &f;
    // SAFETY (lifetime erasure): the pointer is only used by workers of this epoch, all of
    // which finish (remaining = 0) before this function returns.
    let job = JobRef(unsafe {
        std::mem::transmute::<&(dyn Fn(usize) + Sync), &'static (dyn Fn(usize) + Sync)>(dynf)
    });
    *s.job.lock().unwrap_or_else(|e| e.into_inner()) = Some(job);
    s.remaining.store(p.workers, Ordering::SeqCst);
    s.epoch.fetch_add(1, Ordering::SeqCst);
    if s.sleepers.load(Ordering::SeqCst) > 0 {
        let _g = s.sleep.lock().unwrap_or_else(|e| e.into_inner());
        s.wake.notify_all();
    }
    let mine = catch_unwind(AssertUnwindSafe(|| f(0)));
    // The shares are balanced, so the others finish about now; past a short spin, yield (a
    // descheduled worker may need this core).
    let start = Instant::now();
    while s.remaining.load(Ordering::Acquire) != 0 {
        if start.elapsed() > Duration::from_micros(50) {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
    if let Err(e) = mine {
        resume_unwind(e);
    }
    if s.panicked.swap(false, Ordering::SeqCst) {
        panic!("a vl3c CPU worker thread panicked");
    }
}

/// The `t`-th of `parts` balanced contiguous chunks of `0..len`.
pub fn chunk(len: usize, parts: usize, t: usize) -> std::ops::Range<usize> {
    let base = len / parts;
    let rem = len % parts;
    let start = t * base + t.min(rem);
    start..start + base + usize::from(t < rem)
}

/// A raw pointer that may cross threads; users guarantee disjoint access.
#[derive(Clone, Copy)]
pub(crate) struct SyncPtr<T>(pub *mut T);
// SAFETY: the pointer itself is plain data; every dereference is in an `unsafe` block of a
// kernel whose threads write disjoint elements (each thread's rows or panels, from
// `threads::chunk`), and the pool joins every worker before the buffer's borrow ends. Bounding
// `T: Send` keeps elements that must not move between threads out.
unsafe impl<T: Send> Send for SyncPtr<T> {}
// SAFETY: as for `Send`: shared copies only hand out the raw pointer, never a reference.
unsafe impl<T: Send> Sync for SyncPtr<T> {}

impl<T> SyncPtr<T> {
    #[inline(always)]
    pub fn get(self) -> *mut T {
        self.0
    }
}
