//! The Kubernetes backend of cluster control: the pods of one namespace, driven through
//! `kubectl`, so the dashboard's keys work on a Kubernetes deployment too.
//!
//! # Which pods, and what they are
//! `kubectl --namespace NS get pods [-l SELECTOR] -o json` (a `v1.PodList`), read tolerantly: a
//! missing field is a default, never a panic. A node is a pod, named by the pod's name. Its role
//! is the pod label `cachew.role` (`dispatcher`, `worker`, `client`), else guessed from the label
//! `app.kubernetes.io/component`, then `app.kubernetes.io/name` (`cachew-worker`), then the pod
//! name; a pod whose role is none of these is not a node (not listed). Its address (matched
//! against the dispatcher's worker addresses by the dashboard) is `POD_IP:PORT`, the port being
//! the label or annotation `cachew.port`, else the first container's port named `grpc` or
//! `data`, else its first port.
//!
//! # States
//! From the first container's status: `running` → running, `waiting` → not started,
//! `terminated` → exited (killed when it reports a signal, or an exit code 129..=192); with no
//! container status, the pod phase: `Pending` → not started, `Running` → running, `Succeeded` /
//! `Failed` → exited, any other → unspecified. A pod being deleted (`deletionTimestamp`) whose
//! container still runs is reported as running until it stops.
//!
//! # Actions
//! KILL `kubectl delete pod NAME --grace-period=0 --force --wait=false`; TERMINATE and RESTART
//! `kubectl delete pod NAME --wait=false` (the pod's controller creates its replacement, with a
//! new name and address); SCALE (role worker) `kubectl scale deployment/WORKERS --replicas=N`.
//! PAUSE, RESUME, DISCONNECT, CONNECT and START_STANDBY have no Kubernetes equivalent: each is
//! refused per node with the reason.

use std::path::PathBuf;
use std::time::Duration;

use cachew_proto::v1;
use serde_json::Value;

use crate::backend::{
    Backend, Targets, action_name, dispatcher_order, role_from_label, role_from_name, run_command,
    select,
};
use crate::role::Role;

/// What a [`Kubernetes`] backend drives.
#[derive(Debug, Clone)]
pub struct KubernetesOptions {
    pub namespace: String,
    /// The `kubectl` executable.
    pub kubectl: PathBuf,
    /// A label selector for the pods (`-l`); empty: every pod of the namespace.
    pub selector: String,
    /// The Deployment SCALE changes (the workers).
    pub worker_deployment: String,
    /// The bound of each `kubectl` command.
    pub timeout: Duration,
}

/// The pods of a namespace, driven through `kubectl`.
#[derive(Debug, Clone)]
pub struct Kubernetes {
    options: KubernetesOptions,
}

fn text<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// The port of a pod's first container named `grpc` or `data`, else its first port.
fn pod_port(pod: &Value) -> Option<String> {
    for key in [
        "/metadata/labels/cachew.port",
        "/metadata/annotations/cachew.port",
    ] {
        let port = text(pod, key).trim();
        if !port.is_empty() {
            return Some(port.to_string());
        }
    }
    let ports = pod.pointer("/spec/containers/0/ports")?.as_array()?;
    let named = ports
        .iter()
        .find(|p| matches!(text(p, "/name"), "grpc" | "data"));
    named
        .or(ports.first())?
        .get("containerPort")?
        .as_u64()
        .map(|p| p.to_string())
}

fn pod_role(pod: &Value) -> Option<Role> {
    role_from_label(text(pod, "/metadata/labels/cachew.role"))
        .or_else(|| role_from_name(text(pod, "/metadata/labels/app.kubernetes.io~1component")))
        .or_else(|| role_from_name(text(pod, "/metadata/labels/app.kubernetes.io~1name")))
        .or_else(|| role_from_name(text(pod, "/metadata/name")))
}

fn signal_of(code: Option<i32>) -> Option<i32> {
    match code {
        Some(code @ 129..=192) => Some(code - 128),
        _ => None,
    }
}

/// A pod's process state, exit code, signal and restart count (see the module doc).
fn pod_state(pod: &Value) -> (v1::ProcessState, Option<i32>, Option<i32>, u32) {
    let status = pod.pointer("/status/containerStatuses/0");
    let restarts = status
        .and_then(|s| s.get("restartCount"))
        .and_then(Value::as_u64)
        .and_then(|r| u32::try_from(r).ok())
        .unwrap_or(0);
    let int = |v: &Value, key: &str| {
        v.get(key)
            .and_then(Value::as_i64)
            .and_then(|c| i32::try_from(c).ok())
    };
    if let Some(state) = status.and_then(|s| s.get("state")) {
        if state.get("running").is_some() {
            return (v1::ProcessState::Running, None, None, restarts);
        }
        if let Some(t) = state.get("terminated") {
            let code = int(t, "exitCode");
            let signal = int(t, "signal").filter(|s| *s > 0).or(signal_of(code));
            let s = if signal.is_some() {
                v1::ProcessState::Killed
            } else {
                v1::ProcessState::Exited
            };
            return (s, code, signal, restarts);
        }
        if state.get("waiting").is_some() {
            return (v1::ProcessState::NotStarted, None, None, restarts);
        }
    }
    let state = match text(pod, "/status/phase") {
        "Pending" => v1::ProcessState::NotStarted,
        "Running" => v1::ProcessState::Running,
        "Succeeded" | "Failed" => v1::ProcessState::Exited,
        _ => v1::ProcessState::Unspecified,
    };
    (state, None, None, restarts)
}

/// The nodes of a `kubectl get pods -o json` answer (a `v1.PodList`, or one `v1.Pod`).
pub fn parse_pods(json: &str) -> Result<Vec<v1::NodeInfo>, String> {
    let value: Value = serde_json::from_str(json)
        .map_err(|e| format!("kubectl printed something that is not JSON: {e}"))?;
    let pods = match value.get("items") {
        Some(items) => items
            .as_array()
            .ok_or("kubectl printed a list whose items are not an array")?
            .clone(),
        None if text(&value, "/kind") == "Pod" => vec![value],
        None => return Err("kubectl printed JSON that is neither a pod nor a list".into()),
    };
    Ok(pods
        .iter()
        .filter(|p| !text(p, "/metadata/name").is_empty() && pod_role(p).is_some())
        .map(|pod| {
            let (state, exit_code, signal, restarts) = pod_state(pod);
            let ip = text(pod, "/status/podIP");
            let address = match pod_port(pod) {
                Some(port) if !ip.is_empty() && ip.contains(':') => format!("[{ip}]:{port}"),
                Some(port) if !ip.is_empty() => format!("{ip}:{port}"),
                _ => String::new(),
            };
            v1::NodeInfo {
                name: text(pod, "/metadata/name").to_string(),
                role: pod_role(pod)
                    .map_or(v1::NodeRole::Unspecified, |r| r.to_wire())
                    .into(),
                address,
                pid: 0,
                state: state.into(),
                exit_code,
                signal,
                restarts,
                standby: false,
                log_path: String::new(),
                disconnected: false,
            }
        })
        .collect())
}

impl Kubernetes {
    pub fn new(options: KubernetesOptions) -> Kubernetes {
        Kubernetes { options }
    }

    async fn kubectl(&self, args: &[String]) -> Result<String, String> {
        let mut all = vec!["--namespace".to_string(), self.options.namespace.clone()];
        all.extend(args.iter().cloned());
        run_command(&self.options.kubectl, &all, self.options.timeout)
            .await
            .map(|ran| ran.stdout)
            .map_err(|e| e.to_string())
    }

    /// The `kubectl` arguments (after `--namespace NS`) of an action on pod `name`.
    fn action_args(action: v1::Action, name: &str) -> Result<Vec<String>, String> {
        let delete = |extra: &[&str]| {
            let mut args = vec!["delete".to_string(), "pod".to_string(), name.to_string()];
            args.extend(extra.iter().map(|a| a.to_string()));
            args.push("--wait=false".into());
            args
        };
        match action {
            v1::Action::Kill => Ok(delete(&["--grace-period=0", "--force"])),
            v1::Action::Terminate | v1::Action::Restart => Ok(delete(&[])),
            other => Err(format!(
                "{} is not supported on Kubernetes (kill, terminate, restart and scale are)",
                action_name(other)
            )),
        }
    }

    async fn scale(&self, targets: &Targets, count: u32) -> Vec<String> {
        if *targets != Targets::Role(Role::Worker) {
            return vec![
                "scale: only the workers scale on Kubernetes (their Deployment)".to_string(),
            ];
        }
        let args = vec![
            "scale".to_string(),
            format!("deployment/{}", self.options.worker_deployment),
            format!("--replicas={count}"),
        ];
        match self.kubectl(&args).await {
            Ok(_) => Vec::new(),
            Err(e) => vec![format!("scale: {e}")],
        }
    }
}

#[tonic::async_trait]
impl Backend for Kubernetes {
    async fn list(&self) -> Result<Vec<v1::NodeInfo>, String> {
        let mut args = vec!["get".to_string(), "pods".to_string()];
        if !self.options.selector.is_empty() {
            args.push("-l".into());
            args.push(self.options.selector.clone());
        }
        args.push("-o".into());
        args.push("json".into());
        parse_pods(&self.kubectl(&args).await?)
    }

    async fn act(&self, action: v1::Action, targets: &Targets, count: u32) -> Vec<String> {
        match action {
            v1::Action::Scale => return self.scale(targets, count).await,
            v1::Action::StartStandby => {
                return vec![
                    "start-standby is not supported on Kubernetes: scale the workers".to_string(),
                ];
            }
            _ => {}
        }
        let nodes = match self.list().await {
            Ok(nodes) => nodes,
            Err(e) => return vec![e],
        };
        let (mut names, missing) = select(&nodes, targets);
        let mut errors: Vec<String> = missing
            .into_iter()
            .map(|n| {
                format!(
                    "{n}: no pod named `{n}` in namespace {}",
                    self.options.namespace
                )
            })
            .collect();
        dispatcher_order(&nodes, action, &mut names);
        for name in names {
            let result = match Kubernetes::action_args(action, &name) {
                Ok(args) => self.kubectl(&args).await.map(drop),
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                errors.push(format!("{name}: {e}"));
            }
        }
        errors
    }
}

#[cfg(test)]
#[path = "kube_tests.rs"]
mod tests;
