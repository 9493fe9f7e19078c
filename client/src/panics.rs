//! Panics that are refused input, not crashes. str0m asserts some of what it negotiates
//! instead of returning an error, so a hostile peer's SDP can panic inside code we run
//! under `catch_unwind` ([`quietly`]). Those must not print a panic message over a call's
//! status line: the hook [`install_hook`] puts in front of the default one sends them to
//! the log, and lets every other panic through as before.

use std::{
    cell::Cell,
    panic::{AssertUnwindSafe, catch_unwind},
};

thread_local! {
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f`, catching a panic; while it runs, a panic on this thread is logged instead of
/// printed (with [`install_hook`] installed).
pub fn quietly<T>(f: impl FnOnce() -> T) -> std::thread::Result<T> {
    let was = QUIET.replace(true);
    let r = catch_unwind(AssertUnwindSafe(f));
    QUIET.set(was);
    r
}

/// Puts a hook in front of the current panic hook: panics inside [`quietly`] are logged
/// at debug level, the rest go to the previous hook unchanged. For binaries (`sotto`).
pub fn install_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if QUIET.get() {
            tracing::debug!(%info, "a caught panic while negotiating hostile input");
        } else {
            previous(info);
        }
    }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static SEEN: AtomicUsize = AtomicUsize::new(0);

    #[test]
    fn a_quiet_panic_is_caught_and_kept_off_the_terminal() {
        std::panic::set_hook(Box::new(|_| {
            SEEN.fetch_add(1, Ordering::Relaxed);
        }));
        install_hook();
        let before = SEEN.load(Ordering::Relaxed);
        assert!(quietly(|| panic!("hostile")).is_err());
        assert_eq!(quietly(|| 7).ok(), Some(7));
        assert_eq!(SEEN.load(Ordering::Relaxed), before, "not shown");
        assert!(catch_unwind(|| panic!("a real bug")).is_err());
        assert!(
            SEEN.load(Ordering::Relaxed) > before,
            "other panics still shown"
        );
        let _ = std::panic::take_hook();
    }
}
