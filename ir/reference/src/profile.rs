//! Per-op wall time of executor runs, for finding where a graph's time goes: enabled by the
//! `VL3C_PROFILE` environment variable (read once), accumulated per graph and op (claimed nodes
//! under `<claim kind> <op>`), printed and reset by [`report`].

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// `(graph, op)` → (calls, total time).
type Table = HashMap<(String, String), (u64, Duration)>;

fn table() -> &'static Mutex<Table> {
    static T: OnceLock<Mutex<Table>> = OnceLock::new();
    T.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Whether profiling is on.
pub fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("VL3C_PROFILE").is_some())
}

pub(crate) fn record(graph: &str, op: &str, claimed_by: Option<&str>, t: Duration) {
    let key = (
        graph.to_string(),
        match claimed_by {
            Some(by) => format!("{by} {op}"),
            None => op.to_string(),
        },
    );
    let mut tab = table().lock().unwrap_or_else(|e| e.into_inner());
    let e = tab.entry(key).or_insert((0, Duration::ZERO));
    e.0 += 1;
    e.1 += t;
}

/// The accumulated table, most expensive first per graph, then cleared.
pub fn report() -> String {
    let mut tab = table().lock().unwrap_or_else(|e| e.into_inner());
    let mut rows: Vec<_> = tab.drain().collect();
    rows.sort_by(|a, b| a.0 .0.cmp(&b.0 .0).then(b.1 .1.cmp(&a.1 .1)));
    let mut out = String::new();
    for ((graph, op), (count, t)) in rows {
        out += &format!(
            "{graph:<10} {op:<28} {count:>8} {:>10.2} ms\n",
            t.as_secs_f64() * 1e3
        );
    }
    out
}
