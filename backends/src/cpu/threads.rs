//! Fork-join over an explicit number of threads.
//!
//! One rayon pool per requested thread count, built on first use and kept for the life of the
//! process, so a decode step pays a wake-up (a few µs) rather than a thread spawn per matmul.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use rayon::{ThreadPool, ThreadPoolBuilder};

fn pool(threads: usize) -> Arc<ThreadPool> {
    static POOLS: OnceLock<Mutex<HashMap<usize, Arc<ThreadPool>>>> = OnceLock::new();
    let pools = POOLS.get_or_init(|| Mutex::new(HashMap::new()));
    let mut pools = pools.lock().unwrap_or_else(|e| e.into_inner());
    pools
        .entry(threads)
        .or_insert_with(|| {
            Arc::new(
                ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .thread_name(move |i| format!("vl3c-cpu-{threads}-{i}"))
                    .build()
                    .expect("building the vl3c CPU thread pool"),
            )
        })
        .clone()
}

/// Runs `f(t)` once for every `t in 0..threads`, in parallel, and waits for all of them.
pub fn run(threads: usize, f: impl Fn(usize) + Sync) {
    if threads <= 1 {
        f(0);
        return;
    }
    pool(threads).broadcast(|ctx| f(ctx.index()));
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
unsafe impl<T> Send for SyncPtr<T> {}
unsafe impl<T> Sync for SyncPtr<T> {}

impl<T> SyncPtr<T> {
    #[inline(always)]
    pub fn get(self) -> *mut T {
        self.0
    }
}
