//! Process helpers shared by every Cachew-rs daemon and tool: logging set-up and shutdown
//! signals. (They live here because every binary already depends on the wire crate.)

/// Logs to stderr with a tracing env-filter (`info`, `cachew_worker=debug`, ...).
pub fn init_tracing(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// If this process was started by cluster control (`CACHEW_PARENT_PID` is set), exits as soon
/// as that supervisor is gone, so a killed supervisor never leaves orphans behind.
pub fn exit_with_parent() {
    let Some(parent) = std::env::var("CACHEW_PARENT_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
    else {
        return;
    };
    let spawned = std::thread::Builder::new()
        .name("parent-watch".into())
        .spawn(move || {
            loop {
                if std::os::unix::process::parent_id() != parent {
                    eprintln!("supervisor {parent} is gone; exiting");
                    std::process::exit(1);
                }
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
        });
    if let Err(e) = spawned {
        eprintln!("cannot watch the supervisor process: {e}");
    }
}
