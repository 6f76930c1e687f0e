//! Third-party decoders (image codecs, the `tokenizers` crate) are meant to return errors on bad
//! input, but some panic (tokenizers 0.23 `expect`s its decoder section). [`catch_quietly`] turns
//! such a panic into an error the caller names, without the panic message that the default hook
//! would print before it: a user given bad input sees one line, not a backtrace.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Once;

thread_local! {
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f`; a panic inside it becomes `Err` with the panic's message.
pub fn catch_quietly<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(Cell::get) {
                default(info);
            }
        }));
    });
    let was = QUIET.with(|q| q.replace(true));
    let result = catch_unwind(AssertUnwindSafe(f));
    QUIET.with(|q| q.set(was));
    result.map_err(|payload| {
        payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_its_message() {
        assert_eq!(catch_quietly(|| 3), Ok(3));
        let err = catch_quietly(|| -> u8 { panic!("bad {}", 7) }).unwrap_err();
        assert_eq!(err, "bad 7");
    }
}
