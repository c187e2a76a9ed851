//! The dispatcher's settings ([`DispatcherConfig`]): heartbeat pace, the timeouts after which
//! workers and consumers count as gone, the assignment window, the retention after which
//! finished jobs, dead workers and unused datasets leave the state, the addresses it shows, and
//! the autoscaler's settings.

use std::time::Duration;

use cachew_pipeline::DataRoot;

use crate::policy::autoscale::ScalePolicy;

/// Dispatcher settings.
#[derive(Debug, Clone)]
pub struct DispatcherConfig {
    /// How often workers heartbeat (also their long-poll budget).
    pub heartbeat_interval: Duration,
    /// A worker silent for this long is declared dead and its splits fail over.
    pub worker_timeout: Duration,
    /// A consumer (training client) silent for this long is released: its splits stop
    /// occupying workers until it reports again.
    pub consumer_timeout: Duration,
    /// Splits assigned ahead of each consumer's cursor; 0 picks 4 per active worker (at least 8).
    pub window: u32,
    /// The address this dispatcher was started on (shown in the status stream).
    pub address: String,
    /// The cluster-control endpoint of whoever launched this cluster (shown in the status stream).
    pub control_address: String,
    /// A finished job is removed from the state this long after it finished.
    pub job_retention: Duration,
    /// An unfinished job with no consumer attached is removed after this long.
    pub abandoned_job_retention: Duration,
    /// A dead worker (holding no task) is removed after this long.
    pub worker_retention: Duration,
    /// A dataset no job uses is removed after this long.
    pub dataset_retention: Duration,
    /// Where the dispatcher's metrics and readiness go (served by `--metrics-listen`).
    pub metrics: cachew_metrics::Exporter,
    /// The autoscaler: policy, period and actuator.
    pub autoscale: AutoscaleConfig,
    /// Where specs may name files (`--data-root`; the binary's default is its working
    /// directory, the library's [`DataRoot::anywhere`]).
    pub data_root: DataRoot,
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        DispatcherConfig {
            heartbeat_interval: Duration::from_millis(500),
            worker_timeout: Duration::from_secs(5),
            consumer_timeout: Duration::from_secs(30),
            window: 0,
            address: String::new(),
            control_address: String::new(),
            job_retention: Duration::from_secs(600),
            abandoned_job_retention: Duration::from_secs(24 * 3600),
            worker_retention: Duration::from_secs(600),
            dataset_retention: Duration::from_secs(600),
            metrics: cachew_metrics::Exporter::new("dispatcher"),
            autoscale: AutoscaleConfig::default(),
            data_root: DataRoot::anywhere(),
        }
    }
}

/// The autoscaler's settings (the dispatcher's `--autoscale*` and `--scale-command*` flags).
#[derive(Debug, Clone)]
pub struct AutoscaleConfig {
    /// Run the policy (without it the fleet size changes only by a pin).
    pub enabled: bool,
    pub policy: ScalePolicy,
    /// How often the jobs are measured and the policy consulted.
    pub period: Duration,
    /// `sh -c` command run with `{n}` replaced by the workers wanted (`scale_command.rs`).
    pub scale_command: Option<String>,
    /// A scale command running longer is killed and counts as failed.
    pub command_timeout: Duration,
}

impl Default for AutoscaleConfig {
    fn default() -> Self {
        AutoscaleConfig {
            enabled: false,
            policy: ScalePolicy::default(),
            period: Duration::from_secs(10),
            scale_command: None,
            command_timeout: Duration::from_secs(30),
        }
    }
}
