//! The `cachew-tui` command line: attach to a dispatcher, run the demo cluster, or (hidden) run
//! one node of a cluster in this process.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use cachew_cluster::Launcher;
use clap::{Parser, Subcommand};

use crate::app::{self, now_ms};
use crate::demo::{Demo, DemoOptions};
use crate::model::{Mode, Model};

/// Cachew-rs dashboard: nodes, epochs, splits, checkpoints, journal and events of a cluster, live;
/// keys kill, pause and restart nodes through cluster control.
#[derive(Parser, Debug)]
#[command(name = "cachew-tui", version)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The dispatcher to attach to (HOST:PORT).
    #[arg(long, default_value = "127.0.0.1:5050")]
    pub dispatcher: String,
    /// Cluster-control endpoint for the keys (default: the one the dispatcher advertises).
    #[arg(long)]
    pub control: Option<String>,
    /// TLS and tokens for attaching to a secured cluster (see the README's "Security"): the
    /// dashboard sends an admin token. The demo runs on loopback without them.
    #[command(flatten)]
    pub security: cachew_proto::security::SecurityFlags,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Launch the built-in dataset on a local cluster (dispatcher, workers, a standby, a training
    /// client looping over epochs) and open the dashboard on it.
    Demo(DemoOptions),
    /// Run one node in this process: `node dispatcher|worker|client [ARGS...]`.
    #[command(hide = true)]
    Node {
        role: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
}

/// Entry point of the binary.
pub fn main(argv: Vec<OsString>) -> ExitCode {
    let args: Args = match cachew_proto::daemon::parse_args(argv) {
        Ok(a) => a,
        Err(code) => return code,
    };
    let command = match args.command {
        Some(Command::Node { role, args }) => return node(&role, args),
        Some(Command::Demo(options)) => {
            if !args.security.to_args().is_empty() {
                eprintln!(
                    "cachew-tui: the demo runs its own cluster on loopback without TLS or tokens; \
                     the security flags are for attaching to a secured cluster"
                );
                return ExitCode::from(2);
            }
            if let Err(e) = options.validate() {
                eprintln!("cachew-tui: {e}");
                return ExitCode::from(2);
            }
            Some(options)
        }
        None => {
            if let Err(e) = args.security.apply(cachew_proto::security::Side::CallsOnly) {
                eprintln!("cachew-tui: {e}");
                return ExitCode::from(2);
            }
            None
        }
    };
    if !std::io::stdout().is_terminal() {
        eprintln!("cachew-tui: the dashboard needs a terminal (stdout is not one)");
        return ExitCode::from(2);
    }
    let runtime = match cachew_proto::daemon::runtime("cachew-tui", Some(2)) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let result = match command {
        Some(options) => runtime.block_on(demo(options)),
        None => runtime.block_on(attach(args.dispatcher, args.control)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cachew-tui: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The multi-call host: runs a dispatcher, worker or client as this process.
fn node(role: &str, args: Vec<OsString>) -> ExitCode {
    let mut argv = vec![OsString::from(format!("cachew-{role}"))];
    argv.extend(args);
    match role {
        "dispatcher" => cachew_dispatcher::cli::main(argv),
        "worker" => cachew_worker::cli::main(argv),
        "client" => cachew_client::cli::main(argv),
        other => {
            eprintln!("cachew-tui: unknown role `{other}` (dispatcher, worker or client)");
            ExitCode::from(2)
        }
    }
}

/// Resolves on SIGINT, SIGTERM or SIGHUP (the terminal went away).
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangup) = signal(SignalKind::hangup()) else {
        return cachew_proto::daemon::shutdown_signal().await;
    };
    tokio::select! {
        () = cachew_proto::daemon::shutdown_signal() => {}
        _ = hangup.recv() => {}
    }
}

async fn attach(dispatcher: String, control: Option<String>) -> Result<(), crate::TuiError> {
    let model = Model::new(Mode::Attach, &dispatcher, control, now_ms());
    app::run_terminal(model, stop_signal(), None).await?;
    Ok(())
}

async fn demo(options: DemoOptions) -> Result<(), crate::TuiError> {
    let exe = std::env::current_exe()?;
    let launcher = Launcher::locate_or_multicall(&exe);
    eprintln!("cachew-tui: launching the demo cluster…");
    let demo = Demo::launch(&options, launcher).await?;
    let model = Model::new(
        Mode::Demo {
            run_dir: demo.run_dir().to_path_buf(),
        },
        demo.dispatcher(),
        Some(demo.control_address().to_string()),
        now_ms(),
    );
    let quit = app::run_terminal(
        model,
        stop_signal(),
        Some((demo.run_dir().to_path_buf(), demo.checkpoint_dirs())),
    )
    .await;
    let stop_now = quit.as_ref().map_or(true, |q| q.stop_cluster);
    if !stop_now {
        eprintln!(
            "cachew-tui: the cluster keeps running: dispatcher {}, cluster control {}, run dir {}.\n\
             Attach with `cachew-tui --dispatcher {}`; Ctrl-C stops it.",
            demo.dispatcher(),
            demo.control_address(),
            demo.run_dir().display(),
            demo.dispatcher()
        );
        stop_signal().await;
    }
    eprintln!("cachew-tui: stopping the demo cluster…");
    let states = demo.stop(Duration::from_secs(3)).await;
    eprintln!("cachew-tui: stopped: {}", states.join(", "));
    quit.map(|_| ())
}
