//! The Compose backend of cluster control: the containers of one Compose project, driven through
//! the Docker Engine CLI (`docker`), so the dashboard's keys work on a deployment too.
//!
//! # Which containers, and what they are
//! The nodes are the containers with the label `com.docker.compose.project=PROJECT` (Compose
//! sets it, with `com.docker.compose.service` and `com.docker.compose.container-number`). They
//! are listed with `docker ps -aq` and described with `docker inspect` (JSON), read tolerantly:
//! a missing field is a default, never a panic. Labels a compose file can set for cluster
//! control:
//! - `cachew.role`: `dispatcher`, `worker` or `client`. Without it the role is the binary the
//!   command runs (`cachew-worker ...`), else guessed from the service name (`dispatcher`,
//!   `worker-2`, `trainer`, ...). A container whose role is none of these (an init service that
//!   generates the dataset, say) is not a node: it is not listed.
//! - `cachew.address`: the address the node advertises to the dispatcher (`worker-1:6000`),
//!   which is how the dashboard matches a container to the dispatcher's worker. Or
//!   `cachew.port`: the address is then `SERVICE:PORT`. Without either, the value of the
//!   command's `--advertise` flag, if it has one.
//! - `cachew.standby=true`: the worker is a standby.
//!
//! A node is named after its service (`worker-1`) when it is the service's only container, else
//! `SERVICE-N` with N the container number; one-off containers (`docker-compose run`) are
//! `SERVICE-run-ID`.
//!
//! # States
//! `running` → running, `paused` → paused, `created` and `restarting` → not started, `exited`,
//! `dead` and `removing` → exited with the container's exit code, any other → unspecified. An
//! exit code 129..=192 is read as Docker reports a process killed by a signal (128 + signal), so
//! a `docker kill -s KILL` shows as killed by signal 9, as on a local cluster.
//! Restarts: Docker's `RestartCount` (its restart policy's) plus the RESTARTs this process did.
//!
//! # Actions
//! KILL `docker kill -s KILL` then `docker wait` (it returns once the container stopped; a
//! container killed so is not restarted by its restart policy), TERMINATE `docker kill -s TERM`,
//! PAUSE / RESUME `docker pause` / `docker unpause`, RESTART `docker unpause` (if paused), `docker kill -s KILL` (if it runs) and
//! `docker start` (same container: same name, address and volumes), DISCONNECT `docker network
//! disconnect` from each of its networks (this process remembers each network's aliases),
//! CONNECT `docker network connect --alias ...` back to them (after a restart of this process:
//! to the project's networks, labelled by Compose, with the service name as alias). START_STANDBY
//! and SCALE are refused: the number of containers is the compose file's.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use cachew_proto::v1;
use serde_json::Value;

use crate::backend::{
    Backend, Targets, action_name, dispatcher_order, role_from_label, role_from_name, run_command,
    select,
};
use crate::role::Role;

pub const PROJECT_LABEL: &str = "com.docker.compose.project";
pub const SERVICE_LABEL: &str = "com.docker.compose.service";
pub const NUMBER_LABEL: &str = "com.docker.compose.container-number";
pub const ONEOFF_LABEL: &str = "com.docker.compose.oneoff";
pub const ROLE_LABEL: &str = "cachew.role";
pub const ADDRESS_LABEL: &str = "cachew.address";
pub const PORT_LABEL: &str = "cachew.port";
pub const STANDBY_LABEL: &str = "cachew.standby";

/// One network a container was on before DISCONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub network: String,
    pub aliases: Vec<String>,
}

/// A container as `docker inspect` describes it (only what cluster control reads).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Container {
    pub id: String,
    pub name: String,
    pub status: String,
    pub pid: u32,
    pub exit_code: Option<i32>,
    pub restarts: u32,
    pub labels: BTreeMap<String, String>,
    pub networks: Vec<Attachment>,
    pub network_mode: String,
    /// The entrypoint and the command, as one argv.
    pub command: Vec<String>,
}

impl Container {
    fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }

    fn service(&self) -> &str {
        self.label(SERVICE_LABEL)
            .unwrap_or_else(|| self.name.trim_start_matches('/'))
    }

    fn number(&self) -> Option<u32> {
        self.label(NUMBER_LABEL).and_then(|n| n.trim().parse().ok())
    }

    fn oneoff(&self) -> bool {
        self.label(ONEOFF_LABEL)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }

    /// The role of the Cachew-rs binary the command runs (`cachew-worker ...`), if it runs one.
    fn command_role(&self) -> Option<Role> {
        self.command
            .iter()
            .find_map(|arg| match arg.rsplit('/').next().unwrap_or(arg.as_str()) {
                "cachew-dispatcher" => Some(Role::Dispatcher),
                "cachew-worker" => Some(Role::Worker),
                "cachew-client" => Some(Role::Client),
                _ => None,
            })
    }

    /// The value of the command's `--advertise` flag (`--advertise=A` or `--advertise A`).
    fn advertised(&self) -> Option<&str> {
        let mut args = self.command.iter();
        while let Some(arg) = args.next() {
            if let Some(value) = arg.strip_prefix("--advertise=") {
                return Some(value);
            }
            if arg == "--advertise" {
                return args.next().map(String::as_str);
            }
        }
        None
    }

    /// On no network although its network mode is a network (`docker network disconnect`).
    fn off_network(&self) -> bool {
        self.networks.is_empty()
            && !matches!(self.network_mode.as_str(), "none" | "host")
            && !self.network_mode.starts_with("container:")
    }
}

fn text(v: &Value, key: &str) -> String {
    v.get(key).and_then(Value::as_str).unwrap_or("").to_string()
}

/// The containers of a `docker inspect` answer (a JSON array); entries that are not objects
/// with an `Id` are skipped.
pub fn parse_inspect(json: &str) -> Result<Vec<Container>, String> {
    let value: Value = serde_json::from_str(json)
        .map_err(|e| format!("docker inspect printed something that is not JSON: {e}"))?;
    let entries = value
        .as_array()
        .ok_or("docker inspect printed JSON that is not an array")?;
    Ok(entries.iter().filter_map(parse_container).collect())
}

fn parse_container(v: &Value) -> Option<Container> {
    let id = v.get("Id")?.as_str()?.to_string();
    let state = v.get("State").cloned().unwrap_or(Value::Null);
    let mut status = text(&state, "Status").to_ascii_lowercase();
    if status == "running" && state.get("Paused").and_then(Value::as_bool) == Some(true) {
        status = "paused".into();
    }
    let labels = v
        .pointer("/Config/Labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    let networks = v
        .pointer("/NetworkSettings/Networks")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(name, net)| Attachment {
                    network: name.clone(),
                    aliases: net
                        .get("Aliases")
                        .and_then(Value::as_array)
                        .map(|a| {
                            a.iter()
                                .filter_map(Value::as_str)
                                .map(str::to_string)
                                .collect()
                        })
                        .unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default();
    Some(Container {
        id,
        name: text(v, "Name").trim_start_matches('/').to_string(),
        status,
        pid: state
            .get("Pid")
            .and_then(Value::as_u64)
            .and_then(|p| u32::try_from(p).ok())
            .unwrap_or(0),
        exit_code: state
            .get("ExitCode")
            .and_then(Value::as_i64)
            .and_then(|c| i32::try_from(c).ok()),
        restarts: v
            .get("RestartCount")
            .and_then(Value::as_u64)
            .and_then(|c| u32::try_from(c).ok())
            .unwrap_or(0),
        labels,
        networks,
        network_mode: v
            .pointer("/HostConfig/NetworkMode")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        command: ["/Config/Entrypoint", "/Config/Cmd"]
            .iter()
            .filter_map(|p| v.pointer(p).and_then(Value::as_array))
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
    })
}

/// The process state of a container's status (see the module doc).
pub fn container_state(c: &Container) -> (v1::ProcessState, Option<i32>, Option<i32>) {
    match c.status.as_str() {
        "running" => (v1::ProcessState::Running, None, None),
        "paused" => (v1::ProcessState::Paused, None, None),
        "created" | "restarting" => (v1::ProcessState::NotStarted, None, None),
        "exited" | "dead" | "removing" => match c.exit_code {
            Some(code @ 129..=192) => (v1::ProcessState::Killed, Some(code), Some(code - 128)),
            code => (v1::ProcessState::Exited, code, None),
        },
        _ => (v1::ProcessState::Unspecified, None, None),
    }
}

/// Node names for containers (see the module doc), in the same order.
pub fn node_names(containers: &[Container]) -> Vec<String> {
    containers
        .iter()
        .map(|c| {
            let service = c.service();
            if c.oneoff() {
                let short: String = c.id.chars().take(12).collect();
                return format!("{service}-run-{short}");
            }
            let alone = containers
                .iter()
                .filter(|o| !o.oneoff() && o.service() == service)
                .count()
                == 1;
            match c.number() {
                Some(1) | None if alone => service.to_string(),
                Some(n) => format!("{service}-{n}"),
                None => format!("{service}-{}", c.id.chars().take(12).collect::<String>()),
            }
        })
        .collect()
}

/// A container's role (see the module doc); `None`: it is not a node.
pub fn container_role(c: &Container) -> Option<Role> {
    c.label(ROLE_LABEL)
        .and_then(role_from_label)
        .or_else(|| c.command_role())
        .or_else(|| role_from_name(c.service()))
}

/// The wire form of a container named `name`; `disconnected` if this process cut it off;
/// `restarted`: RESTARTs this process did (Docker counts only its restart policy's).
pub fn container_to_wire(
    c: &Container,
    name: &str,
    disconnected: bool,
    restarted: u32,
) -> v1::NodeInfo {
    let role = container_role(c);
    let address = match (c.label(ADDRESS_LABEL), c.label(PORT_LABEL), c.advertised()) {
        (Some(a), _, _) => a.trim().to_string(),
        (None, Some(port), _) => format!("{}:{}", c.service(), port.trim()),
        (None, None, Some(a)) => a.to_string(),
        (None, None, None) => String::new(),
    };
    let (state, exit_code, signal) = container_state(c);
    let alive = matches!(state, v1::ProcessState::Running | v1::ProcessState::Paused);
    v1::NodeInfo {
        name: name.to_string(),
        role: role
            .map_or(v1::NodeRole::Unspecified, |r| r.to_wire())
            .into(),
        address,
        pid: if alive { c.pid } else { 0 },
        state: state.into(),
        exit_code,
        signal,
        restarts: c.restarts.saturating_add(restarted),
        standby: c
            .label(STANDBY_LABEL)
            .is_some_and(|v| v.eq_ignore_ascii_case("true")),
        log_path: String::new(),
        disconnected: disconnected || c.off_network(),
    }
}

/// The containers of a Compose project, driven through `docker`.
#[derive(Debug)]
pub struct Compose {
    project: String,
    docker: PathBuf,
    timeout: Duration,
    /// The networks of each container this process disconnected, by container id.
    detached: Mutex<BTreeMap<String, Vec<Attachment>>>,
    /// How many times this process restarted each container, by container id.
    restarted: Mutex<BTreeMap<String, u32>>,
}

impl Compose {
    /// `docker`: the Docker CLI; `timeout`: the bound of each command it runs.
    pub fn new(project: &str, docker: PathBuf, timeout: Duration) -> Compose {
        Compose {
            project: project.to_string(),
            docker,
            timeout,
            detached: Mutex::new(BTreeMap::new()),
            restarted: Mutex::new(BTreeMap::new()),
        }
    }

    async fn docker(&self, args: &[&str]) -> Result<String, String> {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        run_command(&self.docker, &args, self.timeout)
            .await
            .map(|ran| ran.stdout)
            .map_err(|e| e.to_string())
    }

    /// The project's containers and their node names.
    pub async fn containers(&self) -> Result<Vec<(String, Container)>, String> {
        let filter = format!("label={PROJECT_LABEL}={}", self.project);
        let ids = self
            .docker(&["ps", "-aq", "--no-trunc", "--filter", &filter])
            .await?;
        let ids: Vec<String> = ids.split_whitespace().map(str::to_string).collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut args = vec!["inspect".to_string()];
        args.extend(ids);
        // A container removed between the two commands makes `inspect` exit 1 with the others
        // still described on stdout.
        let json = match run_command(&self.docker, &args, self.timeout).await {
            Ok(ran) => ran.stdout,
            Err(e) if e.code == Some(1) && e.stdout.trim_start().starts_with('[') => e.stdout,
            Err(e) => return Err(e.to_string()),
        };
        let mut containers = parse_inspect(&json)?;
        containers.retain(|c| {
            c.label(PROJECT_LABEL) == Some(self.project.as_str()) && container_role(c).is_some()
        });
        containers.sort_by(|a, b| {
            (a.service(), a.number(), &a.id).cmp(&(b.service(), b.number(), &b.id))
        });
        Ok(node_names(&containers)
            .into_iter()
            .zip(containers)
            .collect())
    }

    fn detached(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<Attachment>>> {
        self.detached.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn act_on(&self, action: v1::Action, c: &Container) -> Result<(), String> {
        let id = c.id.as_str();
        match action {
            v1::Action::Kill => self.kill(id).await,
            v1::Action::Terminate => self.docker(&["kill", "-s", "TERM", id]).await.map(drop),
            v1::Action::Pause => self.docker(&["pause", id]).await.map(drop),
            v1::Action::Resume => self.docker(&["unpause", id]).await.map(drop),
            v1::Action::Restart => {
                if c.status == "paused" {
                    self.docker(&["unpause", id]).await?;
                }
                if matches!(c.status.as_str(), "running" | "paused") {
                    self.kill(id).await?;
                }
                self.docker(&["start", id]).await?;
                *self
                    .restarted
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(c.id.clone())
                    .or_default() += 1;
                Ok(())
            }
            v1::Action::Disconnect => self.disconnect(c).await,
            v1::Action::Connect => self.connect(c).await,
            v1::Action::StartStandby | v1::Action::Scale | v1::Action::Unspecified => Err(format!(
                "{} is not supported on Compose",
                action_name(action)
            )),
        }
    }

    /// SIGKILL, then waits until the container has stopped (`docker wait`), as a local kill
    /// waits for the process to exit.
    async fn kill(&self, id: &str) -> Result<(), String> {
        self.docker(&["kill", "-s", "KILL", id]).await?;
        self.docker(&["wait", id]).await.map(drop)
    }

    async fn disconnect(&self, c: &Container) -> Result<(), String> {
        for net in &c.networks {
            self.docker(&["network", "disconnect", &net.network, &c.id])
                .await?;
            self.detached()
                .entry(c.id.clone())
                .or_default()
                .push(net.clone());
        }
        Ok(())
    }

    async fn connect(&self, c: &Container) -> Result<(), String> {
        let remembered = self.detached().get(&c.id).cloned();
        let wanted = match remembered {
            Some(nets) => nets,
            None => self.project_networks(c.service()).await?,
        };
        if wanted.is_empty() {
            return Err("no network to connect it to".into());
        }
        for net in &wanted {
            if c.networks.iter().any(|n| n.network == net.network) {
                continue;
            }
            let mut args = vec!["network".to_string(), "connect".to_string()];
            // The container's own short id is an alias Docker adds by itself.
            for alias in net.aliases.iter().filter(|a| !c.id.starts_with(a.as_str())) {
                args.push("--alias".into());
                args.push(alias.clone());
            }
            args.push(net.network.clone());
            args.push(c.id.clone());
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            self.docker(&args).await?;
        }
        self.detached().remove(&c.id);
        Ok(())
    }

    /// The networks Compose made for the project, with the service name as alias.
    async fn project_networks(&self, service: &str) -> Result<Vec<Attachment>, String> {
        let filter = format!("label={PROJECT_LABEL}={}", self.project);
        let names = self
            .docker(&[
                "network",
                "ls",
                "--filter",
                &filter,
                "--format",
                "{{.Name}}",
            ])
            .await?;
        Ok(names
            .split_whitespace()
            .map(|network| Attachment {
                network: network.to_string(),
                aliases: vec![service.to_string()],
            })
            .collect())
    }
}

#[tonic::async_trait]
impl Backend for Compose {
    async fn list(&self) -> Result<Vec<v1::NodeInfo>, String> {
        let containers = self.containers().await?;
        let detached = self.detached().clone();
        let restarted = self
            .restarted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        Ok(containers
            .iter()
            .map(|(name, c)| {
                let restarts = restarted.get(&c.id).copied().unwrap_or(0);
                container_to_wire(c, name, detached.contains_key(&c.id), restarts)
            })
            .collect())
    }

    async fn act(&self, action: v1::Action, targets: &Targets, _count: u32) -> Vec<String> {
        if matches!(action, v1::Action::StartStandby | v1::Action::Scale) {
            return vec![format!(
                "{} is not supported on Compose: the compose file sets the containers \
                 (`docker-compose up --scale SERVICE=N`)",
                action_name(action)
            )];
        }
        let containers = match self.containers().await {
            Ok(c) => c,
            Err(e) => return vec![e],
        };
        let wire: Vec<v1::NodeInfo> = containers
            .iter()
            .map(|(name, c)| container_to_wire(c, name, false, 0))
            .collect();
        let (mut names, missing) = select(&wire, targets);
        let mut errors: Vec<String> = missing
            .into_iter()
            .map(|n| {
                format!(
                    "{n}: no node named `{n}` in Compose project {}",
                    self.project
                )
            })
            .collect();
        dispatcher_order(&wire, action, &mut names);
        for name in names {
            let Some((_, c)) = containers.iter().find(|(n, _)| *n == name) else {
                continue;
            };
            if let Err(e) = self.act_on(action, c).await {
                errors.push(format!("{name}: {e}"));
            }
        }
        errors
    }
}

#[cfg(test)]
#[path = "docker_tests.rs"]
mod tests;
