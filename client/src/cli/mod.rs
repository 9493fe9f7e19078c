//! The `sotto` subcommands that have outgrown `main.rs`.

pub mod rooms;

/// Resolves when the user or the system asks `sotto` to stop: Ctrl-C (SIGINT), and on Unix
/// SIGTERM (a service manager, `kill`, `timeout`) and SIGHUP (the terminal closed). A call
/// then hangs up and a room call leaves, with the report printed, instead of dying
/// mid-call and leaving the others to time it out.
pub async fn stop_requested() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
            _ = hup.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
