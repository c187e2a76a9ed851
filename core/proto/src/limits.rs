//! Bounds on the wire: every request field that sizes memory or work on the server that
//! receives it, with its limit and the reason for it, and per-service message sizes. The README's
//! "Bounds" table lists them.
//!
//! Each request type implements [`Bounded`]; a server calls [`Bounded::check_bounds`] first thing
//! in its handler, before anything is looked up or allocated from the request. A violation is
//! `InvalidArgument` naming the field, the bound and the value:
//! `GetOrCreateJobRequest.num_consumers: 100000 is over the bound 4096`. Clients check their own
//! configuration against the same constants, so a client is refused at start, not by a server it
//! would retry forever.
//!
//! Pipeline specs have their own bounds (`cachew_pipeline::limits`), checked when the spec is
//! validated; cluster control's `ActRequest` has its own (`cachew_cluster::control`). Long-poll
//! waits (`wait_ms`) are not refused: every server caps them.

use tonic::Status;

use crate::v1;

/// Consumers (training clients) of one job: the dispatcher keeps a cursor and a window of
/// assignments per consumer. Data-parallel training on 4,096 hosts is far beyond our clusters.
pub const MAX_CONSUMERS: u32 = 4096;

/// Bytes of a job name.
pub const MAX_JOB_NAME_BYTES: usize = 256;

/// Bytes of a canonical pipeline spec (a spec names up to 100,000 files of up to 4 KiB each, but
/// real specs are a few KiB: 16 MiB is room for 100,000 paths of ~160 bytes).
pub const MAX_SPEC_JSON_BYTES: usize = 16 * 1024 * 1024;

/// Bytes of a dataset id (the hex of a SHA-256 is 64).
pub const MAX_DATASET_ID_BYTES: usize = 64;

/// Bytes of a node address (HOST:PORT): DNS names are at most 253 bytes.
pub const MAX_ADDRESS_BYTES: usize = 256;

/// Tasks a worker reports in one heartbeat or registration (a worker holds at most twice its
/// task slots; this is far above any thread count).
pub const MAX_REPORTED_TASKS: usize = 65_536;

/// Leases a client says it knows in one heartbeat (its window of splits).
pub const MAX_KNOWN_LEASES: usize = 65_536;

/// Workers a client reports unreachable in one heartbeat (the dispatcher keeps the list).
pub const MAX_UNREACHABLE_WORKERS: usize = 1024;

/// Disk conditions in one heartbeat (one per store: journal, checkpoints, cache, cursor, ...).
pub const MAX_DISK_CONDITIONS: usize = 16;

/// Bytes of a disk condition's text fields (store, path, error, fallback), kept and shown.
pub const MAX_DISK_TEXT_BYTES: usize = 4096;

/// Epoch reports in one client heartbeat (the dispatcher keeps the last ones).
pub const MAX_EPOCH_REPORTS: usize = crate::EPOCH_REPORTS_KEPT;

/// Bytes of an epoch report's verdict.
pub const MAX_VERDICT_BYTES: usize = 1024;

/// Cache reports in one worker heartbeat (one per job with a cached prefix).
pub const MAX_CACHE_REPORTS: usize = 4096;

/// Committed splits listed in one cache report.
pub const MAX_COMMITTED_SPLITS: usize = 1 << 20;

/// Elements one `GetElements` asks for: the worker assembles a response of up to this many (and
/// of at most 32 MiB). Clients fetch 16 by default.
pub const MAX_FETCH_ELEMENTS: u32 = 65_536;

/// Largest message a dispatcher accepts: its largest request is `GetOrCreateJob` with a spec.
pub const MAX_DISPATCHER_REQUEST_BYTES: usize = MAX_SPEC_JSON_BYTES + 1024 * 1024;

/// Largest message a worker's data service accepts (`GetElementsRequest` is a few dozen bytes).
pub const MAX_WORKER_REQUEST_BYTES: usize = 64 * 1024;

/// Refuses `value` above `bound`: `InvalidArgument` naming `field`, the value and the bound.
pub fn at_most<T: PartialOrd + std::fmt::Display>(
    field: &str,
    value: T,
    bound: T,
) -> Result<(), Status> {
    if value > bound {
        return Err(Status::invalid_argument(format!(
            "{field}: {value} is over the bound {bound}"
        )));
    }
    Ok(())
}

/// Refuses a string longer than `bound` bytes (the message gives its length, not its content).
fn text(field: &str, value: &str, bound: usize) -> Result<(), Status> {
    at_most(&format!("{field} (bytes)"), value.len(), bound)
}

/// Refuses a list longer than `bound` entries.
fn list<T>(field: &str, value: &[T], bound: usize) -> Result<(), Status> {
    at_most(&format!("{field} (count)"), value.len(), bound)
}

/// A request whose size-giving fields are bounded.
pub trait Bounded {
    /// `InvalidArgument` naming the first field over its bound.
    fn check_bounds(&self) -> Result<(), Status>;
}

impl Bounded for v1::GetOrCreateJobRequest {
    fn check_bounds(&self) -> Result<(), Status> {
        const AT: &str = "GetOrCreateJobRequest";
        text(
            &format!("{AT}.job_name"),
            &self.job_name,
            MAX_JOB_NAME_BYTES,
        )?;
        text(
            &format!("{AT}.spec_json"),
            &self.spec_json,
            MAX_SPEC_JSON_BYTES,
        )?;
        at_most(
            &format!("{AT}.num_consumers"),
            self.num_consumers,
            MAX_CONSUMERS,
        )?;
        at_most(
            &format!("{AT}.consumer_index"),
            i64::from(self.consumer_index),
            i64::from(self.num_consumers.max(1)) - 1,
        )?;
        Ok(())
    }
}

impl Bounded for v1::GetDatasetRequest {
    fn check_bounds(&self) -> Result<(), Status> {
        text(
            "GetDatasetRequest.dataset_id",
            &self.dataset_id,
            MAX_DATASET_ID_BYTES,
        )
    }
}

fn disks(at: &str, disks: &[v1::DiskCondition]) -> Result<(), Status> {
    list(&format!("{at}.disks"), disks, MAX_DISK_CONDITIONS)?;
    for (i, d) in disks.iter().enumerate() {
        for (name, value) in [
            ("store", &d.store),
            ("path", &d.path),
            ("error", &d.error),
            ("fallback", &d.fallback),
        ] {
            text(
                &format!("{at}.disks[{i}].{name}"),
                value,
                MAX_DISK_TEXT_BYTES,
            )?;
        }
    }
    Ok(())
}

impl Bounded for v1::RegisterWorkerRequest {
    fn check_bounds(&self) -> Result<(), Status> {
        const AT: &str = "RegisterWorkerRequest";
        text(&format!("{AT}.address"), &self.address, MAX_ADDRESS_BYTES)?;
        list(&format!("{AT}.tasks"), &self.tasks, MAX_REPORTED_TASKS)
    }
}

impl Bounded for v1::WorkerHeartbeatRequest {
    fn check_bounds(&self) -> Result<(), Status> {
        const AT: &str = "WorkerHeartbeatRequest";
        text(&format!("{AT}.address"), &self.address, MAX_ADDRESS_BYTES)?;
        list(&format!("{AT}.tasks"), &self.tasks, MAX_REPORTED_TASKS)?;
        list(&format!("{AT}.cache"), &self.cache, MAX_CACHE_REPORTS)?;
        for (i, c) in self.cache.iter().enumerate() {
            list(
                &format!("{AT}.cache[{i}].committed"),
                &c.committed,
                MAX_COMMITTED_SPLITS,
            )?;
        }
        disks(AT, &self.disks)
    }
}

impl Bounded for v1::ClientHeartbeatRequest {
    fn check_bounds(&self) -> Result<(), Status> {
        const AT: &str = "ClientHeartbeatRequest";
        list(&format!("{AT}.known"), &self.known, MAX_KNOWN_LEASES)?;
        list(&format!("{AT}.reports"), &self.reports, MAX_EPOCH_REPORTS)?;
        for (i, r) in self.reports.iter().enumerate() {
            text(
                &format!("{AT}.reports[{i}].verdict"),
                &r.verdict,
                MAX_VERDICT_BYTES,
            )?;
        }
        list(
            &format!("{AT}.unreachable_workers"),
            &self.unreachable_workers,
            MAX_UNREACHABLE_WORKERS,
        )?;
        for (i, w) in self.unreachable_workers.iter().enumerate() {
            text(
                &format!("{AT}.unreachable_workers[{i}]"),
                w,
                MAX_ADDRESS_BYTES,
            )?;
        }
        disks(AT, &self.disks)
    }
}

impl Bounded for v1::DrainWorkerRequest {
    fn check_bounds(&self) -> Result<(), Status> {
        text(
            "DrainWorkerRequest.address",
            &self.address,
            MAX_ADDRESS_BYTES,
        )
    }
}

impl Bounded for v1::GetElementsRequest {
    fn check_bounds(&self) -> Result<(), Status> {
        at_most(
            "GetElementsRequest.max_elements",
            self.max_elements,
            MAX_FETCH_ELEMENTS,
        )
    }
}

/// The `--data-root` flag of the dispatcher and the worker.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct DataRootFlags {
    /// Read dataset files only under this directory (repeat the flag for several). A spec naming
    /// a file elsewhere (an absolute path outside it, a `..` component, a symlink leading out)
    /// is refused with the path. Default: the working directory.
    #[arg(long = "data-root", value_name = "DIR")]
    pub data_root: Vec<std::path::PathBuf>,
}

impl DataRootFlags {
    /// The data root the flags name (the working directory without any, which is said in the
    /// log: loudly when that directory is `/`, as under a service manager).
    pub fn data_root(&self) -> Result<cachew_pipeline::DataRoot, String> {
        let root = cachew_pipeline::data_root::from_flags(&self.data_root)
            .map_err(|e| format!("--data-root: {e}"))?;
        if self.data_root.is_empty() {
            let dirs = root.dirs();
            if dirs.iter().any(|d| d.parent().is_none()) {
                tracing::warn!(
                    "SECURITY: no --data-root, and the working directory is /: a job's spec \
                     may name any file on this host. Give --data-root with the datasets' \
                     directory."
                );
            } else {
                tracing::warn!(
                    data_root = ?dirs,
                    "no --data-root: specs may name files under the working directory only"
                );
            }
        }
        Ok(root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The status is InvalidArgument and names the field, the bound and the value.
    fn refused(result: Result<(), Status>, field: &str, bound: &str, value: &str) {
        let status = result.expect_err("over the bound");
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        let m = status.message();
        assert!(
            m.contains(field) && m.contains(bound) && m.contains(value),
            "{m}"
        );
    }

    #[test]
    fn num_consumers_and_consumer_index() {
        let mut req = v1::GetOrCreateJobRequest {
            job_name: "j".into(),
            num_consumers: MAX_CONSUMERS,
            consumer_index: -1,
            ..Default::default()
        };
        req.check_bounds().unwrap();
        req.num_consumers = MAX_CONSUMERS + 1;
        refused(
            req.check_bounds(),
            "GetOrCreateJobRequest.num_consumers",
            "4096",
            "4097",
        );
        req.num_consumers = 4;
        req.consumer_index = 4;
        refused(
            req.check_bounds(),
            "GetOrCreateJobRequest.consumer_index",
            "3",
            "4",
        );
        req.consumer_index = 3;
        req.check_bounds().unwrap();
    }

    #[test]
    fn job_names_specs_and_dataset_ids() {
        let req = v1::GetOrCreateJobRequest {
            job_name: "x".repeat(MAX_JOB_NAME_BYTES + 1),
            ..Default::default()
        };
        refused(
            req.check_bounds(),
            "GetOrCreateJobRequest.job_name (bytes)",
            "256",
            "257",
        );
        let req = v1::GetOrCreateJobRequest {
            spec_json: " ".repeat(MAX_SPEC_JSON_BYTES + 1),
            ..Default::default()
        };
        refused(
            req.check_bounds(),
            "spec_json (bytes)",
            &MAX_SPEC_JSON_BYTES.to_string(),
            &(MAX_SPEC_JSON_BYTES + 1).to_string(),
        );
        let req = v1::GetDatasetRequest {
            dataset_id: "f".repeat(65),
        };
        refused(req.check_bounds(), "dataset_id", "64", "65");
    }

    #[test]
    fn worker_requests() {
        let req = v1::RegisterWorkerRequest {
            address: "h".repeat(MAX_ADDRESS_BYTES + 1),
            ..Default::default()
        };
        refused(
            req.check_bounds(),
            "RegisterWorkerRequest.address",
            "256",
            "257",
        );
        let req = v1::WorkerHeartbeatRequest {
            disks: vec![v1::DiskCondition::default(); MAX_DISK_CONDITIONS + 1],
            ..Default::default()
        };
        refused(
            req.check_bounds(),
            "WorkerHeartbeatRequest.disks",
            "16",
            "17",
        );
        let req = v1::WorkerHeartbeatRequest {
            disks: vec![v1::DiskCondition {
                error: "e".repeat(MAX_DISK_TEXT_BYTES + 1),
                ..Default::default()
            }],
            ..Default::default()
        };
        refused(req.check_bounds(), "disks[0].error", "4096", "4097");
        let req = v1::GetElementsRequest {
            max_elements: MAX_FETCH_ELEMENTS + 1,
            ..Default::default()
        };
        refused(
            req.check_bounds(),
            "GetElementsRequest.max_elements",
            "65536",
            "65537",
        );
    }

    #[test]
    fn client_heartbeats() {
        let req = v1::ClientHeartbeatRequest {
            unreachable_workers: vec![String::new(); MAX_UNREACHABLE_WORKERS + 1],
            ..Default::default()
        };
        refused(req.check_bounds(), "unreachable_workers", "1024", "1025");
        let req = v1::ClientHeartbeatRequest {
            reports: vec![v1::EpochReport::default(); MAX_EPOCH_REPORTS + 1],
            ..Default::default()
        };
        refused(req.check_bounds(), "reports", "32", "33");
        assert!(v1::ClientHeartbeatRequest::default().check_bounds().is_ok());
        assert!(v1::WorkerHeartbeatRequest::default().check_bounds().is_ok());
    }
}
