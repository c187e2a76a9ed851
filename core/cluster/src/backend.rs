//! What cluster control drives: the [`Backend`] trait behind
//! [`ControlService`](crate::control::ControlService) (the local-process implementation is
//! [`LocalBackend`](crate::local_control::LocalBackend)), [`Targets`], and [`run_command`], the
//! one way the orchestrator backends ([`Compose`](crate::docker::Compose),
//! [`Kubernetes`](crate::kube::Kubernetes)) run an external command: with a timeout, its stderr
//! in the error, never a panic on what it prints.
//!
//! A backend never decides what an action means for the data: every action is a process-level
//! fault or repair (kill, pause, cut the network, recreate) and the dispatcher's own rules
//! (liveness, leases, hand-over) do the rest.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cachew_proto::v1;

use crate::cluster::Cluster;
use crate::role::Role;

/// A cluster that cluster control acts on.
#[tonic::async_trait]
pub trait Backend: Send + Sync + std::fmt::Debug + 'static {
    /// Every node, as cluster control lists it.
    async fn list(&self) -> Result<Vec<v1::NodeInfo>, String>;

    /// Applies `action` to `targets` (`count`: SCALE's target); one line per node (or per
    /// failure that is not a node's) the action failed on, empty when it succeeded everywhere.
    async fn act(&self, action: v1::Action, targets: &Targets, count: u32) -> Vec<String>;
}

/// Which nodes an action is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Targets {
    Named(Vec<String>),
    /// Every node of a role.
    Role(Role),
    /// Every node.
    All,
}

impl Targets {
    /// The targets of a request; `None` if it names none (only START_STANDBY may).
    pub fn of_request(req: &v1::ActRequest) -> Option<Targets> {
        if !req.nodes.is_empty() {
            Some(Targets::Named(req.nodes.clone()))
        } else if req.every_role {
            Some(Targets::All)
        } else {
            Role::from_wire(req.role).map(Targets::Role)
        }
    }

    /// A request for `action` on these targets.
    pub fn request(&self, action: v1::Action) -> v1::ActRequest {
        let mut req = v1::ActRequest {
            action: action.into(),
            ..Default::default()
        };
        match self {
            Targets::Named(nodes) => req.nodes = nodes.clone(),
            Targets::Role(role) => req.role = role.to_wire().into(),
            Targets::All => req.every_role = true,
        }
        req
    }

    /// The names of the nodes these targets select now.
    pub fn names(&self, cluster: &mut Cluster) -> Vec<String> {
        match self {
            Targets::Named(nodes) => nodes.clone(),
            Targets::Role(role) => cluster
                .nodes()
                .into_iter()
                .filter(|n| n.role == *role)
                .map(|n| n.name)
                .collect(),
            Targets::All => cluster.nodes().into_iter().map(|n| n.name).collect(),
        }
    }
}

/// A shared backend, as [`ControlService`](crate::control::ControlService) holds it.
pub type SharedBackend = Arc<dyn Backend>;

/// The names of the nodes `targets` select in `nodes` (named nodes must exist: the missing ones
/// are returned second).
pub fn select(nodes: &[v1::NodeInfo], targets: &Targets) -> (Vec<String>, Vec<String>) {
    match targets {
        Targets::Named(names) => names
            .iter()
            .cloned()
            .partition(|name| nodes.iter().any(|n| &n.name == name)),
        Targets::Role(role) => (
            nodes
                .iter()
                .filter(|n| Role::from_wire(n.role) == Some(*role))
                .map(|n| n.name.clone())
                .collect(),
            Vec::new(),
        ),
        Targets::All => (nodes.iter().map(|n| n.name.clone()).collect(), Vec::new()),
    }
}

/// Puts the dispatcher first for RESTART and last for every other action, so workers and
/// clients see a consistent order when a whole role set is acted upon (as the local cluster).
pub fn dispatcher_order(nodes: &[v1::NodeInfo], action: v1::Action, names: &mut [String]) {
    names.sort_by_key(|name| {
        let is_dispatcher = nodes
            .iter()
            .any(|n| &n.name == name && Role::from_wire(n.role) == Some(Role::Dispatcher));
        match action {
            v1::Action::Restart => !is_dispatcher,
            _ => is_dispatcher,
        }
    });
}

/// What an external command printed when it exited with status 0.
#[derive(Debug, Clone)]
pub struct Ran {
    pub stdout: String,
    pub stderr: String,
}

/// Why an external command failed.
#[derive(Debug, Clone)]
pub struct CommandFailed {
    /// The command line, for messages.
    pub command: String,
    /// The exit code, `None` if it did not exit (timeout, signal, could not start).
    pub code: Option<i32>,
    /// What it printed before failing (a partial answer may still be usable).
    pub stdout: String,
    /// The reason: its stderr, or why it did not run.
    pub reason: String,
}

impl std::fmt::Display for CommandFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.code {
            Some(code) => write!(
                f,
                "`{}` failed (exit {code}): {}",
                self.command, self.reason
            ),
            None => write!(f, "`{}` failed: {}", self.command, self.reason),
        }
    }
}

/// The last lines of a command's stderr, trimmed, for an error message.
fn stderr_reason(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let tail = lines.len().saturating_sub(5);
    match lines.get(tail..) {
        Some(last) if !last.is_empty() => last.join(" / "),
        _ => "no error output".into(),
    }
}

/// Runs `program args...` with no stdin; kills it if it has not finished within `timeout`.
pub async fn run_command(
    program: &Path,
    args: &[String],
    timeout: Duration,
) -> Result<Ran, CommandFailed> {
    let command = std::iter::once(program.display().to_string())
        .chain(args.iter().cloned())
        .collect::<Vec<_>>()
        .join(" ");
    let fail = |code, stdout: &[u8], reason: String| CommandFailed {
        command: command.clone(),
        code,
        stdout: String::from_utf8_lossy(stdout).into_owned(),
        reason,
    };
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| fail(None, b"", format!("cannot start it: {e}")))?;
    // On timeout the future is dropped, which kills the child (`kill_on_drop`) and reaps it.
    let output = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => return Err(fail(None, b"", e.to_string())),
        Err(_) => {
            return Err(fail(
                None,
                b"",
                format!("no answer in {:.1} s (killed)", timeout.as_secs_f64()),
            ));
        }
    };
    if output.status.success() {
        Ok(Ran {
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    } else {
        let reason = match output.status.code() {
            Some(_) => stderr_reason(&output.stderr),
            None => format!("killed by a signal: {}", stderr_reason(&output.stderr)),
        };
        Err(fail(output.status.code(), &output.stdout, reason))
    }
}

/// An action's name in messages (`kill`, `disconnect`, ...).
pub fn action_name(action: v1::Action) -> &'static str {
    match action {
        v1::Action::Unspecified => "no action",
        v1::Action::Kill => "kill",
        v1::Action::Terminate => "terminate",
        v1::Action::Pause => "pause",
        v1::Action::Resume => "resume",
        v1::Action::Restart => "restart",
        v1::Action::StartStandby => "start-standby",
        v1::Action::Disconnect => "disconnect",
        v1::Action::Connect => "connect",
        v1::Action::Scale => "scale",
    }
}

/// A role guessed from a service, workload or pod name (`dispatcher`, `cachew-worker-7d9f`, ...)
/// when no label names it; `None` if the name says nothing.
pub fn role_from_name(name: &str) -> Option<Role> {
    let name = name.to_ascii_lowercase();
    if name.contains("dispatcher") {
        Some(Role::Dispatcher)
    } else if name.contains("worker") || name.contains("standby") {
        Some(Role::Worker)
    } else if name.contains("client") || name.contains("trainer") {
        Some(Role::Client)
    } else {
        None
    }
}

/// The role named by a `cachew.role` label value (`dispatcher`, `worker`, `client`).
pub fn role_from_label(value: &str) -> Option<Role> {
    match value.trim().to_ascii_lowercase().as_str() {
        "dispatcher" => Some(Role::Dispatcher),
        "worker" => Some(Role::Worker),
        "client" | "trainer" => Some(Role::Client),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_command_that_fails_reports_its_stderr_and_exit_code() {
        let args = vec![
            "-c".into(),
            "echo partial; echo 'bad thing' >&2; exit 3".into(),
        ];
        let err = run_command(Path::new("/bin/sh"), &args, Duration::from_secs(10))
            .await
            .expect_err("it fails");
        assert_eq!(err.code, Some(3));
        assert_eq!(err.stdout, "partial\n");
        assert!(err.to_string().contains("(exit 3): bad thing"), "{err}");
    }

    #[tokio::test]
    async fn a_command_that_hangs_is_killed_at_its_timeout() {
        let args = vec!["-c".into(), "exec sleep 30".into()];
        let started = std::time::Instant::now();
        let err = run_command(Path::new("/bin/sh"), &args, Duration::from_millis(300))
            .await
            .expect_err("it times out");
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(err.code, None);
        assert!(err.reason.contains("no answer in 0.3 s"), "{err}");
    }

    #[tokio::test]
    async fn a_missing_program_is_an_error_not_a_panic() {
        let err = run_command(
            Path::new("/nonexistent/docker"),
            &[],
            Duration::from_secs(1),
        )
        .await
        .expect_err("it cannot start");
        assert!(err.reason.starts_with("cannot start it"), "{err}");
    }

    #[test]
    fn roles_come_from_labels_or_names() {
        assert_eq!(role_from_label("Worker"), Some(Role::Worker));
        assert_eq!(role_from_label("proxy"), None);
        assert_eq!(
            role_from_name("cachew-dispatcher-0"),
            Some(Role::Dispatcher)
        );
        assert_eq!(role_from_name("cachew-worker-7d9f-x2"), Some(Role::Worker));
        assert_eq!(role_from_name("trainer"), Some(Role::Client));
        assert_eq!(role_from_name("datagen"), None);
    }
}
