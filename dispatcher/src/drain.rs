//! Workers leaving on purpose, at the service level: a heartbeat that says `draining` or
//! `left` (SIGTERM to the worker), and the admin `DrainWorker` RPC (an operator, the
//! dashboard, a scenario). Both execute `Command::DrainWorker` with the resume points the
//! worker last reported acked, so its splits move at once instead of after the worker timeout;
//! the state transitions themselves are in `state/drain.rs`.

use cachew_proto::v1;
use tonic::Status;

use crate::long_poll::Round;
use crate::service::{Core, DispatcherService};
use crate::state::{Command, WorkerId, WorkerLife};
use crate::wire::rejection_status;

impl DispatcherService {
    /// Takes in a heartbeat's `draining` / `left` (its progress is already recorded). A `left`
    /// heartbeat is answered here; a draining one goes on to reconciliation, which drops the
    /// tasks that moved.
    pub(crate) fn take_in_leaving(
        &self,
        core: &mut Core,
        req: &v1::WorkerHeartbeatRequest,
    ) -> Option<Round<v1::WorkerHeartbeatResponse>> {
        let worker = req.worker_id;
        if req.left {
            if let Err(e) = self.execute(core, Command::WorkerLeft { worker }) {
                tracing::warn!(worker, "worker_left refused: {e}");
            }
            core.soft.forget_progress_of(worker);
            core.soft.suspect.remove(&worker);
            let response = v1::WorkerHeartbeatResponse {
                drain: true,
                ..Default::default()
            };
            return Some(Round::ReplyDurable(response, Self::visible(core)));
        }
        if req.draining && !self.is_draining(core, worker) {
            let resume_at = core.soft.resume_points(worker);
            if let Err(e) = self.execute(core, Command::DrainWorker { worker, resume_at }) {
                tracing::warn!(worker, "drain_worker refused: {e}");
            }
        }
        None
    }

    pub(crate) fn is_draining(&self, core: &Core, worker: WorkerId) -> bool {
        core.state
            .workers
            .get(&worker)
            .is_some_and(|w| w.life == WorkerLife::Draining)
    }

    /// The admin `DrainWorker`: drains the worker named by id or address; returns the answer
    /// and the sequence number it reveals.
    pub(crate) fn drain(
        &self,
        req: &v1::DrainWorkerRequest,
    ) -> Result<(v1::DrainWorkerResponse, u64), Status> {
        let mut core = self.lock();
        let worker = if req.worker_id != 0 {
            req.worker_id
        } else {
            core.state
                .worker_by_address(&req.address)
                .map(|w| w.id)
                .ok_or_else(|| {
                    Status::not_found(format!("no worker registered at {:?}", req.address))
                })?
        };
        let before = core.state.assignments_of(worker).len() as u32;
        let resume_at = core.soft.resume_points(worker);
        self.execute(&mut core, Command::DrainWorker { worker, resume_at })
            .map_err(rejection_status)?;
        let after = core.state.assignments_of(worker).len() as u32;
        let state = match core.state.workers.get(&worker).map(|w| w.life) {
            Some(WorkerLife::Draining) => v1::WorkerState::Draining,
            Some(WorkerLife::Left) => v1::WorkerState::Left,
            Some(WorkerLife::Dead) => v1::WorkerState::Dead,
            _ => v1::WorkerState::Alive,
        };
        let response = v1::DrainWorkerResponse {
            worker_id: worker,
            state: state.into(),
            moved: before.saturating_sub(after),
        };
        Ok((response, Self::visible(&core)))
    }
}
