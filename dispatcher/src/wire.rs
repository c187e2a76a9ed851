//! Conversions between the state machine's types and the protocol's: cursors, the task a worker
//! is told to run, and the gRPC status of a refused command.

use cachew_proto::v1;
use tonic::Status;

use crate::state::{Assignment, Cursor, Job, Rejection};

/// The status an RPC answers when the state machine refuses its command.
pub fn rejection_status(r: Rejection) -> Status {
    match r {
        Rejection::UnknownWorker(_)
        | Rejection::UnknownJob(_)
        | Rejection::UnknownDataset(_)
        | Rejection::ExpiredJob(_) => Status::not_found(r.to_string()),
        Rejection::DeadWorker(_) | Rejection::Superseded { .. } => {
            Status::failed_precondition(r.to_string())
        }
        Rejection::JobMismatch { .. } | Rejection::NoFreeConsumer { .. } => {
            Status::already_exists(r.to_string())
        }
        Rejection::BadConsumer { .. } | Rejection::BadCursor(_) | Rejection::OverBound { .. } => {
            Status::invalid_argument(r.to_string())
        }
    }
}

/// A missing cursor is the start of the job.
pub fn cursor_from_wire(c: Option<v1::Cursor>) -> Cursor {
    c.map(Cursor::from).unwrap_or_default()
}

/// What a worker is told about one task.
pub fn task_def(job: &Job, epoch: u64, position: u32, a: &Assignment) -> v1::TaskDef {
    v1::TaskDef {
        key: Some(v1::TaskKey::new(job.id, epoch, position)),
        lease: a.lease,
        split: a.split,
        dataset_id: job.dataset_id.clone(),
        seed: job.seed,
        start_index: a.start_index,
        cache_mode: job.cache_mode(epoch).into(),
    }
}
