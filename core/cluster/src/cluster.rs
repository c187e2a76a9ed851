//! The running nodes of a local cluster and the operations on them.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal as NixSignal, kill};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::launcher::Launcher;
use crate::netns::Network;
pub use crate::role::Role;
use crate::{ClusterError, PARENT_PID_ENV, Result};

/// Signals cluster control sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Signal {
    /// SIGKILL: a crash.
    Kill,
    /// SIGTERM: a graceful stop.
    Term,
}

impl Signal {
    fn nix(self) -> NixSignal {
        match self {
            Signal::Kill => NixSignal::SIGKILL,
            Signal::Term => NixSignal::SIGTERM,
        }
    }
}

/// How to run one node. Arguments may use the placeholders `{dir}` (the node's own directory),
/// `{root}`, `{name}` and `{dispatcher}` (the dispatcher's address).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSpec {
    pub name: String,
    pub role: Role,
    /// The address it listens on (dispatcher and workers), kept across restarts.
    pub listen: Option<String>,
    pub args: Vec<String>,
}

/// A description of a local cluster.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ClusterSpec {
    /// Run directory: `logs/` and one directory per node.
    pub root: PathBuf,
    pub dispatcher_args: Vec<String>,
    pub workers: u32,
    pub standby: u32,
    pub worker_args: Vec<String>,
    /// One entry per client: its arguments.
    pub clients: Vec<Vec<String>>,
    /// Every node on a host of its own (a network namespace; see [`crate::netns`]) instead of
    /// loopback.
    #[serde(default)]
    pub hosts: bool,
    /// Every node serves `/metrics`, `/healthz` and `/readyz` (`--metrics-listen` on a free
    /// loopback port, or a fixed port on its own host); [`NodeInfo::metrics`] says where.
    #[serde(default)]
    pub metrics: bool,
}

/// Lifecycle of a node as cluster control sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "state")]
pub enum NodeState {
    NotStarted,
    Running,
    Paused,
    Exited {
        code: Option<i32>,
        signal: Option<i32>,
    },
}

impl NodeState {
    /// Exited with status 0 (not by a signal).
    pub const SUCCESS: NodeState = NodeState::Exited {
        code: Some(0),
        signal: None,
    };

    pub fn is_alive(self) -> bool {
        matches!(self, NodeState::Running | NodeState::Paused)
    }

    /// A short name for displays: running, paused, exited(0), killed(SIGKILL), ...
    pub fn label(self) -> String {
        match self {
            NodeState::NotStarted => "not started".into(),
            NodeState::Running => "running".into(),
            NodeState::Paused => "paused".into(),
            NodeState::Exited { code: Some(c), .. } => format!("exited({c})"),
            NodeState::Exited {
                signal: Some(s), ..
            } => match NixSignal::try_from(s) {
                Ok(sig) => format!("killed({})", sig.as_str()),
                Err(_) => format!("killed({s})"),
            },
            NodeState::Exited { .. } => "exited".into(),
        }
    }
}

/// What cluster control reports about a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub name: String,
    pub role: Role,
    pub listen: Option<String>,
    pub pid: Option<u32>,
    pub state: NodeState,
    pub restarts: u32,
    pub log: PathBuf,
    pub standby: bool,
    /// Where it serves its metrics and health endpoints, if it does.
    #[serde(default)]
    pub metrics: Option<String>,
}

#[derive(Debug)]
struct Node {
    spec: NodeSpec,
    /// Its `--metrics-listen` address (added to its arguments by [`Cluster::add`]).
    metrics: Option<String>,
    child: Option<Child>,
    state: NodeState,
    restarts: u32,
    starts: u32,
    log: PathBuf,
}

/// A running local cluster. Dropping it kills every node.
#[derive(Debug)]
pub struct Cluster {
    root: PathBuf,
    launcher: Launcher,
    dispatcher: String,
    nodes: Vec<Node>,
    /// The hosts of the nodes, if they run on separate hosts (dropped after the nodes).
    network: Option<Network>,
    /// Nodes added from now on serve metrics ([`Cluster::serve_metrics`]).
    metrics: bool,
}

/// The port every node listens on when it has a host of its own.
const HOST_DISPATCHER_PORT: u16 = 5050;
const HOST_WORKER_PORT: u16 = 5051;
/// The port every node serves metrics on when it has a host of its own.
const HOST_METRICS_PORT: u16 = 9090;

/// A free TCP port on 127.0.0.1 (bound, read, released).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn status_state(status: ExitStatus) -> NodeState {
    use std::os::unix::process::ExitStatusExt;
    NodeState::Exited {
        code: status.code(),
        signal: status.signal(),
    }
}

impl Cluster {
    /// Launches the dispatcher (waiting until it accepts connections), then the workers, the
    /// standby workers and the clients.
    pub fn launch(spec: &ClusterSpec, launcher: Launcher) -> Result<Cluster> {
        let (dispatcher, network) = if spec.hosts {
            let mut network = Network::create()?;
            let (_, address) = network.host_for("dispatcher")?;
            (format!("{address}:{HOST_DISPATCHER_PORT}"), Some(network))
        } else {
            (format!("127.0.0.1:{}", free_port()?), None)
        };
        let mut cluster = Cluster::new(&spec.root, launcher, &dispatcher)?;
        cluster.network = network;
        cluster.metrics = spec.metrics;
        let mut d_args = vec![
            "--listen".to_string(),
            dispatcher.clone(),
            "--work-dir".into(),
            "{dir}".into(),
        ];
        d_args.extend(spec.dispatcher_args.iter().cloned());
        cluster.add(NodeSpec {
            name: "dispatcher".into(),
            role: Role::Dispatcher,
            listen: Some(dispatcher.clone()),
            args: d_args,
        })?;
        cluster.wait_listening("dispatcher", Duration::from_secs(20))?;
        for i in 1..=spec.workers {
            let name = format!("worker-{i}");
            let listen = cluster.listen_address(&name)?;
            cluster.add(worker_spec(&name, listen, false, &spec.worker_args))?;
        }
        for i in 1..=spec.standby {
            let name = format!("standby-{i}");
            let listen = cluster.listen_address(&name)?;
            cluster.add(worker_spec(&name, listen, true, &spec.worker_args))?;
        }
        for (i, args) in spec.clients.iter().enumerate() {
            let mut a = vec!["--dispatcher".to_string(), "{dispatcher}".into()];
            a.extend(args.iter().cloned());
            cluster.add(NodeSpec {
                name: format!("client-{}", i + 1),
                role: Role::Client,
                listen: None,
                args: a,
            })?;
        }
        Ok(cluster)
    }

    /// An empty cluster whose nodes will talk to the dispatcher at `dispatcher`; add nodes
    /// with [`Cluster::add`].
    pub fn new(root: &Path, launcher: Launcher, dispatcher: &str) -> Result<Cluster> {
        std::fs::create_dir_all(root.join("logs"))?;
        Ok(Cluster {
            root: root.to_path_buf(),
            launcher,
            dispatcher: dispatcher.to_string(),
            nodes: Vec::new(),
            network: None,
            metrics: false,
        })
    }

    /// Whether nodes added from now on serve their metrics and health endpoints
    /// (`--metrics-listen`).
    pub fn serve_metrics(&mut self, on: bool) {
        self.metrics = on;
    }

    /// A node's metrics address: a free loopback port, or the fixed port on its own host.
    fn metrics_address(&mut self, name: &str) -> Result<String> {
        match &mut self.network {
            Some(net) => {
                let (_, address) = net.host_for(name)?;
                Ok(format!("{address}:{HOST_METRICS_PORT}"))
            }
            None => Ok(format!("127.0.0.1:{}", free_port()?)),
        }
    }

    /// The address a new worker `name` listens on: a free loopback port, or the fixed port on
    /// its own host.
    fn listen_address(&mut self, name: &str) -> Result<String> {
        match &mut self.network {
            Some(net) => {
                let (_, address) = net.host_for(name)?;
                Ok(format!("{address}:{HOST_WORKER_PORT}"))
            }
            None => Ok(format!("127.0.0.1:{}", free_port()?)),
        }
    }

    /// The hosts of the nodes, if they run on separate hosts (for cuts).
    pub fn network_mut(&mut self) -> Option<&mut Network> {
        self.network.as_mut()
    }

    /// Whether the nodes run on separate hosts.
    pub fn has_network(&self) -> bool {
        self.network.is_some()
    }

    /// Adds and starts a worker on a fresh port.
    pub fn add_worker(&mut self, name: &str, worker_args: &[String]) -> Result<()> {
        let listen = self.listen_address(name)?;
        self.add(worker_spec(name, listen, false, worker_args))
    }

    /// The dispatcher's address.
    pub fn dispatcher(&self) -> &str {
        &self.dispatcher
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of node `name` (its `{dir}`).
    pub fn node_dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Adds and starts a node (serving metrics if [`Cluster::serve_metrics`] says so).
    pub fn add(&mut self, mut spec: NodeSpec) -> Result<()> {
        if self.nodes.iter().any(|n| n.spec.name == spec.name) {
            return Err(ClusterError::Invalid(format!(
                "a node named `{}` exists",
                spec.name
            )));
        }
        let metrics = if self.metrics {
            let address = self.metrics_address(&spec.name)?;
            spec.args
                .extend(["--metrics-listen".to_string(), address.clone()]);
            Some(address)
        } else {
            None
        };
        let log = self.root.join("logs").join(format!("{}.log", spec.name));
        self.nodes.push(Node {
            spec,
            metrics,
            child: None,
            state: NodeState::NotStarted,
            restarts: 0,
            starts: 0,
            log,
        });
        let i = self.nodes.len() - 1;
        self.start(i)
    }

    /// Starts a new standby worker and returns its name.
    pub fn add_standby(&mut self, worker_args: &[String]) -> Result<String> {
        let n = self
            .nodes
            .iter()
            .filter(|n| n.spec.name.starts_with("standby-"))
            .count()
            + 1;
        let name = format!("standby-{n}");
        let listen = self.listen_address(&name)?;
        self.add(worker_spec(&name, listen, true, worker_args))?;
        Ok(name)
    }

    fn expand(&self, arg: &str, name: &str) -> String {
        arg.replace("{dir}", &self.root.join(name).display().to_string())
            .replace("{root}", &self.root.display().to_string())
            .replace("{name}", name)
            .replace("{dispatcher}", &self.dispatcher)
    }

    fn start(&mut self, i: usize) -> Result<()> {
        let (name, role, raw_args) = {
            let n = &self.nodes[i];
            (n.spec.name.clone(), n.spec.role, n.spec.args.clone())
        };
        std::fs::create_dir_all(self.root.join(&name))?;
        let args: Vec<String> = raw_args.iter().map(|a| self.expand(a, &name)).collect();
        let (program, prefix) = self.launcher.program(role)?;
        let (program, prefix) = match &mut self.network {
            // `ip netns exec` execs the node (no fork): the pid cluster control holds is the
            // node's own, so signals by pid reach it.
            Some(net) => {
                let (namespace, _) = net.host_for(&name)?;
                let mut p = vec!["netns".to_string(), "exec".into(), namespace];
                p.push(program.display().to_string());
                p.extend(prefix.iter().cloned());
                (PathBuf::from("ip"), p)
            }
            None => (program.to_path_buf(), prefix.to_vec()),
        };
        let node = &mut self.nodes[i];
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)?;
        node.starts += 1;
        writeln!(
            log,
            "=== cluster control: start {} of {name}: {} {} {}",
            node.starts,
            program.display(),
            prefix.join(" "),
            args.join(" ")
        )?;
        let child = Command::new(&program)
            .args(&prefix)
            .args(&args)
            .env(PARENT_PID_ENV, std::process::id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|source| ClusterError::Spawn {
                node: name.clone(),
                source,
            })?;
        tracing::info!(node = %name, pid = child.id(), "started");
        node.child = Some(child);
        node.state = NodeState::Running;
        Ok(())
    }

    fn index(&self, name: &str) -> Result<usize> {
        self.nodes
            .iter()
            .position(|n| n.spec.name == name)
            .ok_or_else(|| ClusterError::NoSuchNode(name.to_string()))
    }

    /// Names of the nodes with `role` (in launch order).
    pub fn names(&self, role: Role) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| n.spec.role == role)
            .map(|n| n.spec.name.clone())
            .collect()
    }

    /// Updates every node's state from the OS (reaps exited processes).
    pub fn refresh(&mut self) {
        for node in &mut self.nodes {
            if let Some(child) = &mut node.child
                && let Ok(Some(status)) = child.try_wait()
            {
                node.state = status_state(status);
                node.child = None;
                tracing::info!(node = %node.spec.name, state = %node.state.label(), "exited");
            }
        }
    }

    pub fn nodes(&mut self) -> Vec<NodeInfo> {
        self.refresh();
        self.nodes
            .iter()
            .map(|n| NodeInfo {
                name: n.spec.name.clone(),
                role: n.spec.role,
                listen: n.spec.listen.clone(),
                pid: n.child.as_ref().map(Child::id),
                state: n.state,
                restarts: n.restarts,
                log: n.log.clone(),
                standby: n.spec.args.iter().any(|a| a == "--standby"),
                metrics: n.metrics.clone(),
            })
            .collect()
    }

    pub fn info(&mut self, name: &str) -> Result<NodeInfo> {
        let i = self.index(name)?;
        self.nodes()
            .into_iter()
            .nth(i)
            .ok_or_else(|| ClusterError::NoSuchNode(name.to_string()))
    }

    fn send(&mut self, name: &str, signal: NixSignal) -> Result<()> {
        self.refresh();
        let i = self.index(name)?;
        let node = &self.nodes[i];
        let Some(child) = &node.child else {
            return Err(ClusterError::Signal {
                node: name.to_string(),
                reason: format!("it is not running ({})", node.state.label()),
            });
        };
        kill(Pid::from_raw(child.id() as i32), signal).map_err(|e| ClusterError::Signal {
            node: name.to_string(),
            reason: e.to_string(),
        })
    }

    /// Kills a node (SIGKILL waits until it is gone; SIGTERM returns at once).
    pub fn kill(&mut self, name: &str, signal: Signal) -> Result<()> {
        self.send(name, signal.nix())?;
        tracing::info!(node = name, ?signal, "signalled");
        if signal == Signal::Kill {
            self.wait_exit(name, Duration::from_secs(10))?;
        }
        Ok(())
    }

    /// SIGSTOP: the node freezes, which looks like a network partition to its peers.
    pub fn pause(&mut self, name: &str) -> Result<()> {
        self.send(name, NixSignal::SIGSTOP)?;
        let i = self.index(name)?;
        self.nodes[i].state = NodeState::Paused;
        Ok(())
    }

    /// SIGCONT after [`Cluster::pause`].
    pub fn resume(&mut self, name: &str) -> Result<()> {
        self.send(name, NixSignal::SIGCONT)?;
        let i = self.index(name)?;
        self.nodes[i].state = NodeState::Running;
        Ok(())
    }

    /// Restarts a node with the same identity (address, directories, flags); kills it first if
    /// it still runs.
    pub fn restart(&mut self, name: &str) -> Result<()> {
        self.refresh();
        let i = self.index(name)?;
        if self.nodes[i].child.is_some() {
            if self.nodes[i].state == NodeState::Paused {
                let _ = self.send(name, NixSignal::SIGCONT);
            }
            self.kill(name, Signal::Kill)?;
        }
        self.nodes[i].restarts += 1;
        self.start(i)?;
        if self.nodes[i].spec.role == Role::Dispatcher {
            self.wait_listening(name, Duration::from_secs(20))?;
        }
        Ok(())
    }

    /// Waits until a node has exited; returns its final state.
    pub fn wait_exit(&mut self, name: &str, timeout: Duration) -> Result<NodeState> {
        let i = self.index(name)?;
        let deadline = Instant::now() + timeout;
        loop {
            self.refresh();
            let node = &self.nodes[i];
            if !node.state.is_alive() {
                return Ok(node.state);
            }
            if Instant::now() >= deadline {
                return Err(ClusterError::Invalid(format!(
                    "{name} still runs after {:.1} s",
                    timeout.as_secs_f64()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until a node's listen address accepts TCP connections.
    pub fn wait_listening(&mut self, name: &str, timeout: Duration) -> Result<()> {
        let i = self.index(name)?;
        let Some(addr) = self.nodes[i].spec.listen.clone() else {
            return Ok(());
        };
        let addr: SocketAddr = addr
            .parse()
            .map_err(|e| ClusterError::Invalid(format!("bad address {addr}: {e}")))?;
        let deadline = Instant::now() + timeout;
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            self.refresh();
            if !self.nodes[i].state.is_alive() {
                return Err(ClusterError::Invalid(format!(
                    "{name} exited ({}) before listening; see {}",
                    self.nodes[i].state.label(),
                    self.nodes[i].log.display()
                )));
            }
            if Instant::now() >= deadline {
                return Err(ClusterError::Invalid(format!(
                    "{name} does not listen on {addr}"
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops every node: SIGTERM, then SIGKILL after `grace`; reaps them all.
    pub fn shutdown(&mut self, grace: Duration) {
        self.refresh();
        for node in &self.nodes {
            if let Some(child) = &node.child {
                let pid = Pid::from_raw(child.id() as i32);
                let _ = kill(pid, NixSignal::SIGCONT);
                let _ = kill(pid, NixSignal::SIGTERM);
            }
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline && self.nodes.iter().any(|n| n.child.is_some()) {
            std::thread::sleep(Duration::from_millis(20));
            self.refresh();
        }
        self.kill_all();
    }

    /// SIGKILLs every node that still runs and reaps it.
    pub fn kill_all(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                if let Ok(status) = child.wait() {
                    node.state = status_state(status);
                }
            }
        }
    }

    /// The last `lines` lines of a node's log (for failure reports).
    pub fn log_tail(&self, name: &str, lines: usize) -> String {
        let Ok(i) = self.index(name) else {
            return String::new();
        };
        let text = std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    pub fn log_path(&self, name: &str) -> Option<PathBuf> {
        self.index(name).ok().map(|i| self.nodes[i].log.clone())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill_all();
    }
}

fn worker_spec(name: &str, listen: String, standby: bool, extra: &[String]) -> NodeSpec {
    let mut args = vec![
        "--listen".to_string(),
        listen.clone(),
        "--dispatcher".into(),
        "{dispatcher}".into(),
        "--work-dir".into(),
        "{dir}".into(),
        // The workers of a local cluster share one prefix cache.
        "--cache-dir".into(),
        "{root}/cache".into(),
    ];
    if standby {
        args.push("--standby".into());
    }
    args.extend(extra.iter().cloned());
    NodeSpec {
        name: name.to_string(),
        role: Role::Worker,
        listen: Some(listen),
        args,
    }
}
