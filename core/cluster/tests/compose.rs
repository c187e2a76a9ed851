//! End-to-end: the Compose backend of cluster control against real containers, driven through
//! the ClusterControl gRPC service, every effect checked with `docker inspect` (and with `ping`
//! between the containers for the network actions).
//!
//! Needs a Docker Engine (the `docker` CLI, and a daemon it may use: root or the docker group)
//! and a static busybox for the image (no registry is used): `$CACHEW_BUSYBOX`, else
//! `/bin/busybox` from Debian's `busybox-static`, else one extracted from `apt-get download
//! busybox-static`. Without them the test fails with the reason; it never skips. Everything it
//! creates (image, network, containers) has a unique name and is removed on drop.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cachew_cluster::control::{ControlService, Targets, serve};
use cachew_cluster::docker::Compose;
use cachew_proto::Channel;
use cachew_proto::v1;
use cachew_proto::v1::cluster_control_client::ClusterControlClient;
use serde_json::Value;

fn docker(args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run docker (is the Docker CLI installed?): {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn must(args: &[&str]) -> String {
    docker(args).unwrap_or_else(|e| panic!("{e}"))
}

/// Whether an ELF file has no program interpreter (statically linked).
fn is_static_elf(path: &Path) -> bool {
    let Ok(bytes) = std::fs::read(path) else {
        return false;
    };
    let u = |at: usize, n: usize| -> Option<u64> {
        let b = bytes.get(at..at + n)?;
        Some(
            b.iter()
                .rev()
                .fold(0u64, |acc, x| (acc << 8) | u64::from(*x)),
        )
    };
    // ELF64 little-endian: program headers at e_phoff (0x20), e_phentsize (0x36), e_phnum (0x38).
    if bytes.get(0..6) != Some(&[0x7f, b'E', b'L', b'F', 2, 1][..]) {
        return false;
    }
    let (Some(off), Some(size), Some(num)) = (u(0x20, 8), u(0x36, 2), u(0x38, 2)) else {
        return false;
    };
    (0..num).all(|i| u((off + i * size) as usize, 4).is_some_and(|t| t != 3))
}

/// A static busybox (see the module doc); `dir` holds a downloaded one.
fn busybox(dir: &Path) -> PathBuf {
    if let Some(path) = std::env::var_os("CACHEW_BUSYBOX") {
        return PathBuf::from(path);
    }
    let installed = Path::new("/bin/busybox");
    if is_static_elf(installed) {
        return installed.to_path_buf();
    }
    let download = Command::new("apt-get")
        .args(["download", "busybox-static"])
        .current_dir(dir)
        .output()
        .expect("no static busybox: install busybox-static, set CACHEW_BUSYBOX, or have apt-get");
    assert!(
        download.status.success(),
        "no static busybox: install busybox-static or set CACHEW_BUSYBOX (apt-get download: {})",
        String::from_utf8_lossy(&download.stderr)
    );
    let deb = std::fs::read_dir(dir)
        .expect("read the download directory")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .expect("apt-get downloaded a .deb");
    let extracted = dir.join("deb");
    let status = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&extracted)
        .status()
        .expect("run dpkg-deb");
    assert!(status.success(), "dpkg-deb -x {}", deb.display());
    let path = extracted.join("bin/busybox");
    assert!(
        is_static_elf(&path),
        "{} is not a static ELF",
        path.display()
    );
    path
}

/// The image, network and containers of one test, removed on drop.
struct Fixture {
    project: String,
    image: String,
    network: String,
    containers: Vec<String>,
}

impl Fixture {
    fn new(dir: &Path) -> Fixture {
        must(&["version", "--format", "{{.Server.Version}}"]);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let project = format!("cachewct{}x{nanos}", std::process::id());
        let mut fixture = Fixture {
            image: format!("cachew-test-busybox:{project}"),
            network: format!("{project}_default"),
            project,
            containers: Vec::new(),
        };
        let root = dir.join("rootfs/bin");
        std::fs::create_dir_all(&root).expect("mkdir rootfs");
        std::fs::copy(busybox(dir), root.join("busybox")).expect("copy busybox");
        let tar = dir.join("rootfs.tar");
        let status = Command::new("tar")
            .arg("-C")
            .arg(dir.join("rootfs"))
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .expect("run tar");
        assert!(status.success(), "tar the root file system");
        must(&["import", &tar.display().to_string(), &fixture.image]);
        let label = format!("com.docker.compose.project={}", fixture.project);
        must(&["network", "create", "--label", &label, &fixture.network]);
        fixture.start("dispatcher", &["--label", "cachew.port=5050"]);
        fixture.start("worker", &["--label", "cachew.role=worker"]);
        fixture
    }

    /// A container labelled as Compose labels service `service`'s first container; its shell
    /// exits 143 on SIGTERM (as PID 1 it would otherwise ignore it).
    fn start(&mut self, service: &str, extra: &[&str]) {
        let name = format!("{}-{service}-1", self.project);
        let project = format!("com.docker.compose.project={}", self.project);
        let service_label = format!("com.docker.compose.service={service}");
        let mut args = vec![
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            &self.network,
            "--network-alias",
            service,
            "--label",
            &project,
            "--label",
            &service_label,
            "--label",
            "com.docker.compose.container-number=1",
        ];
        args.extend_from_slice(extra);
        let script = "trap 'exit 143' TERM; while :; do /bin/busybox sleep 1; done";
        args.extend_from_slice(&[&self.image, "/bin/busybox", "sh", "-c", script]);
        self.containers.push(name.clone());
        must(&args);
    }

    fn container(&self, service: &str) -> String {
        format!("{}-{service}-1", self.project)
    }

    fn inspect(&self, service: &str) -> Value {
        let json = must(&["inspect", &self.container(service)]);
        let v: Value = serde_json::from_str(&json).expect("inspect prints JSON");
        v.get(0).cloned().expect("one container")
    }

    /// Whether `from`'s container reaches `to` by its service name.
    fn pings(&self, from: &str, to: &str) -> bool {
        docker(&[
            "exec",
            &self.container(from),
            "/bin/busybox",
            "ping",
            "-c",
            "1",
            "-W",
            "2",
            to,
        ])
        .is_ok()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = docker(&["rm", "-f", "-v", c]);
        }
        let _ = docker(&["network", "rm", &self.network]);
        let _ = docker(&["image", "rm", "-f", &self.image]);
    }
}

fn status(v: &Value) -> (String, i64, i64) {
    (
        v.pointer("/State/Status")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        v.pointer("/State/ExitCode")
            .and_then(Value::as_i64)
            .unwrap_or(-1),
        v.pointer("/State/Pid")
            .and_then(Value::as_i64)
            .unwrap_or(-1),
    )
}

fn networks(v: &Value) -> Vec<String> {
    v.pointer("/NetworkSettings/Networks")
        .and_then(Value::as_object)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

struct Control {
    client: ClusterControlClient<Channel>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Control {
    async fn start(project: &str) -> Control {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        let backend = Compose::new(project, "docker".into(), Duration::from_secs(30));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve(
            ControlService::with_backend(backend),
            listener,
            async move {
                let _ = stopped.await;
            },
        ));
        let endpoint = cachew_proto::endpoint(&address).expect("endpoint");
        Control {
            client: ClusterControlClient::new(endpoint.connect_lazy()),
            stop: Some(stop),
        }
    }

    async fn list(&mut self) -> Vec<v1::NodeInfo> {
        self.client
            .list_nodes(v1::ListNodesRequest {})
            .await
            .expect("list nodes")
            .into_inner()
            .nodes
    }

    async fn act(&mut self, action: v1::Action, targets: Targets) -> v1::ActResponse {
        self.client
            .act(targets.request(action))
            .await
            .expect("act")
            .into_inner()
    }

    /// Acts on one node and asserts it succeeded; the node as the answer lists it.
    async fn ok(&mut self, action: v1::Action, node: &str) -> v1::NodeInfo {
        let answer = self
            .act(action, Targets::Named(vec![node.to_string()]))
            .await;
        assert!(answer.errors.is_empty(), "{action:?} {node}: {answer:?}");
        answer
            .nodes
            .into_iter()
            .find(|n| n.name == node)
            .unwrap_or_else(|| panic!("{node} listed after {action:?}"))
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn state(n: &v1::NodeInfo) -> v1::ProcessState {
    v1::ProcessState::try_from(n.state).unwrap_or(v1::ProcessState::Unspecified)
}

/// Polls `f` until it holds (Docker reports some effects a moment later).
fn eventually(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_containers_are_listed_paused_cut_off_killed_and_restarted_through_control() {
    let dir = tempfile::tempdir().expect("temp dir");
    let fx = Fixture::new(dir.path());
    let mut control = Control::start(&fx.project).await;

    // List: both containers, their roles from the service name or the label, their addresses,
    // their host pids.
    let nodes = control.list().await;
    let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["dispatcher", "worker"]);
    let (dispatcher, worker) = (&nodes[0], &nodes[1]);
    assert_eq!(dispatcher.role, v1::NodeRole::Dispatcher as i32);
    assert_eq!(dispatcher.address, "dispatcher:5050");
    assert_eq!(worker.role, v1::NodeRole::Worker as i32);
    for (n, service) in [(dispatcher, "dispatcher"), (worker, "worker")] {
        let (s, _, pid) = status(&fx.inspect(service));
        assert_eq!(
            (state(n), s.as_str()),
            (v1::ProcessState::Running, "running")
        );
        assert_eq!(i64::from(n.pid), pid);
    }
    assert!(fx.pings("dispatcher", "worker"));

    // Pause and resume.
    let paused = control.ok(v1::Action::Pause, "worker").await;
    assert_eq!(state(&paused), v1::ProcessState::Paused);
    assert_eq!(status(&fx.inspect("worker")).0, "paused");
    let resumed = control.ok(v1::Action::Resume, "worker").await;
    assert_eq!(state(&resumed), v1::ProcessState::Running);
    assert_eq!(status(&fx.inspect("worker")).0, "running");

    // Disconnect: off every network, unreachable by name, still running; connect: back with
    // its service alias.
    let cut = control.ok(v1::Action::Disconnect, "worker").await;
    assert!(cut.disconnected);
    assert_eq!(state(&cut), v1::ProcessState::Running);
    assert!(networks(&fx.inspect("worker")).is_empty());
    assert!(!fx.pings("dispatcher", "worker"));
    let healed = control.ok(v1::Action::Connect, "worker").await;
    assert!(!healed.disconnected);
    assert_eq!(networks(&fx.inspect("worker")), [fx.network.as_str()]);
    assert!(
        fx.pings("dispatcher", "worker"),
        "reachable by its alias again"
    );

    // A control process that did not disconnect a node reconnects it to the project's networks,
    // with its service name as alias.
    control.ok(v1::Action::Disconnect, "dispatcher").await;
    assert!(!fx.pings("worker", "dispatcher"));
    let mut fresh = Control::start(&fx.project).await;
    let listed = fresh.list().await;
    assert!(
        listed
            .iter()
            .any(|n| n.name == "dispatcher" && n.disconnected)
    );
    fresh.ok(v1::Action::Connect, "dispatcher").await;
    assert!(fx.pings("worker", "dispatcher"));
    drop(fresh);

    // Kill (SIGKILL: exit 137, shown as killed by signal 9), then restart.
    let killed = control.ok(v1::Action::Kill, "worker").await;
    assert_eq!(state(&killed), v1::ProcessState::Killed);
    assert_eq!((killed.exit_code, killed.signal), (Some(137), Some(9)));
    let (s, code, _) = status(&fx.inspect("worker"));
    assert_eq!((s.as_str(), code), ("exited", 137));
    let restarted = control.ok(v1::Action::Restart, "worker").await;
    assert_eq!(state(&restarted), v1::ProcessState::Running);
    assert_eq!(restarted.restarts, 1, "counted by cluster control");
    assert_eq!(status(&fx.inspect("worker")).0, "running");
    assert!(
        fx.pings("dispatcher", "worker"),
        "same container, same network"
    );

    // Restart of a paused node: a new process.
    let before = status(&fx.inspect("dispatcher")).2;
    control.ok(v1::Action::Pause, "dispatcher").await;
    control.ok(v1::Action::Restart, "dispatcher").await;
    let (s, _, after) = status(&fx.inspect("dispatcher"));
    assert_eq!(s, "running");
    assert_ne!(before, after, "a new process");

    // Terminate a whole role: the shell's TERM trap exits 143.
    let answer = control
        .act(
            v1::Action::Terminate,
            Targets::Role(cachew_cluster::Role::Worker),
        )
        .await;
    assert!(answer.errors.is_empty(), "{answer:?}");
    eventually("the worker exits", || {
        status(&fx.inspect("worker")).0 == "exited"
    });
    assert_eq!(status(&fx.inspect("worker")).1, 143);
    let nodes = control.list().await;
    let worker = nodes
        .iter()
        .find(|n| n.name == "worker")
        .expect("worker listed");
    assert_eq!(
        (state(worker), worker.signal),
        (v1::ProcessState::Killed, Some(15))
    );

    // Errors are per node, with the reason; nothing else is touched.
    let answer = control
        .act(v1::Action::Kill, Targets::Named(vec!["nobody".into()]))
        .await;
    assert_eq!(answer.errors.len(), 1);
    assert!(
        answer.errors[0].starts_with("nobody: no node named"),
        "{answer:?}"
    );
    let answer = control
        .act(
            v1::Action::Resume,
            Targets::Named(vec!["dispatcher".into()]),
        )
        .await;
    assert_eq!(answer.errors.len(), 1);
    assert!(
        answer.errors[0].starts_with("dispatcher: `docker unpause"),
        "{answer:?}"
    );
    assert!(
        answer.errors[0].contains("is not paused"),
        "docker's stderr: {answer:?}"
    );
    let answer = control
        .client
        .act(v1::ActRequest {
            action: v1::Action::Scale.into(),
            role: v1::NodeRole::Worker.into(),
            count: 3,
            ..Default::default()
        })
        .await
        .expect("act")
        .into_inner();
    assert!(
        answer.errors[0].contains("not supported on Compose"),
        "{answer:?}"
    );
    assert_eq!(status(&fx.inspect("dispatcher")).0, "running");
}
