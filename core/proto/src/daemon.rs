//! Process helpers shared by every Cachew-rs daemon and tool: logging set-up and shutdown
//! signals. (They live here because every binary already depends on the wire crate.)

/// Parses a binary's arguments. On `--help` or `--version` the text is printed and the exit is
/// 0; on bad flags the message is printed and the exit is 2.
pub fn parse_args<A: clap::Parser>(
    argv: Vec<std::ffi::OsString>,
) -> Result<A, std::process::ExitCode> {
    A::try_parse_from(argv).map_err(|e| {
        let _ = e.print();
        if e.use_stderr() {
            std::process::ExitCode::from(2)
        } else {
            std::process::ExitCode::SUCCESS
        }
    })
}

/// A multi-threaded runtime (`worker_threads`, or one per core); if it cannot start, says so as
/// `binary` and gives the failing exit status.
pub fn runtime(
    binary: &str,
    worker_threads: Option<usize>,
) -> Result<tokio::runtime::Runtime, std::process::ExitCode> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = worker_threads {
        builder.worker_threads(n);
    }
    builder.enable_all().build().map_err(|e| {
        eprintln!("{binary}: cannot start the runtime: {e}");
        std::process::ExitCode::FAILURE
    })
}

/// How a process writes its log lines to stderr.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One line per event for people (colored on a terminal).
    #[default]
    Text,
    /// One JSON object per line for log shippers: `timestamp`, `level`, `target`, `message` and
    /// the event's fields at the top level. The dispatcher's status-stream events are logged
    /// with the fields of `v1::Event` (`seq`, `unix_ms`, `kind`, `message`, `worker_id`,
    /// `job_id`), so a log query and the status stream use the same names.
    Json,
}

/// The logging flags every binary takes.
#[derive(clap::Args, Debug, Clone)]
pub struct LogFlags {
    /// Log filter (tracing env-filter syntax), e.g. `info` or `cachew_worker=debug`.
    #[arg(long, default_value = "info")]
    pub log: String,
    /// `text` for people or `json` (one object per line) for log shippers.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl LogFlags {
    /// Installs the process's logger as these flags say.
    pub fn init(&self) {
        init_logging(&self.log, self.log_format);
    }
}

/// Logs to stderr with a tracing env-filter (`info`, `cachew_worker=debug`, ...), as text.
pub fn init_tracing(filter: &str) {
    init_logging(filter, LogFormat::Text);
}

/// Logs to stderr with a tracing env-filter, in `format`. An invalid filter falls back to `info`.
pub fn init_logging(filter: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_target(false)
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
    };
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

/// The stop signal a process got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    Interrupt,
    Terminate,
}

impl StopSignal {
    /// The conventional exit status of a process stopped by this signal (128 + its number).
    pub fn exit_code(self) -> u8 {
        match self {
            StopSignal::Interrupt => 130,
            StopSignal::Terminate => 143,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            StopSignal::Interrupt => "SIGINT",
            StopSignal::Terminate => "SIGTERM",
        }
    }
}

/// Resolves on the first SIGINT or SIGTERM, for a process that stops gracefully (a worker
/// drains, a client saves its cursor and releases its consumer). From then on a second SIGINT
/// or SIGTERM exits the process at once, saying so as `binary`, with that signal's
/// [`StopSignal::exit_code`]. If the signals cannot be watched, it never resolves.
pub async fn graceful_stop_signal(binary: &'static str) -> StopSignal {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot watch SIGINT / SIGTERM: no graceful stop");
        return std::future::pending().await;
    };
    let first = tokio::select! {
        _ = term.recv() => StopSignal::Terminate,
        _ = int.recv() => StopSignal::Interrupt,
    };
    tokio::spawn(async move {
        let second = tokio::select! {
            _ = term.recv() => StopSignal::Terminate,
            _ = int.recv() => StopSignal::Interrupt,
        };
        eprintln!(
            "{binary}: second stop signal ({}): exiting at once",
            second.name()
        );
        std::process::exit(i32::from(second.exit_code()));
    });
    first
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
