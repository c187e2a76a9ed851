//! A worker leaving on purpose: `DrainWorker` (SIGTERM to the worker, or an operator's
//! `DrainWorker` RPC) moves its splits at once and keeps it `Draining` (it heartbeats, takes no
//! task, and is told to drain); `WorkerLeft` (its last heartbeat, or silence while draining)
//! makes it `Left`. A left worker that registers again is a normal worker.
//!
//! Lifecycle edges owned here: Alive → Draining → Left, and Alive → Left for a worker that
//! says it left without draining first. Dead and Left workers are not drained again (noop).

use cachew_proto::v1::EventKind;

use super::State;
use super::command::{Outcome, Rejection, StateEvent};
use super::model::{JobId, WorkerId, WorkerLife};

impl State {
    pub(super) fn drain_worker(
        &mut self,
        worker: WorkerId,
        resume_at: &[((JobId, u64, u32), u32)],
    ) -> Result<Outcome, Rejection> {
        self.drain(worker, resume_at, true)
    }

    /// Drains `worker`; `promote`: a standby takes its place (not when the fleet shrinks).
    pub(super) fn drain(
        &mut self,
        worker: WorkerId,
        resume_at: &[((JobId, u64, u32), u32)],
        promote: bool,
    ) -> Result<Outcome, Rejection> {
        let w = self
            .workers
            .get_mut(&worker)
            .ok_or(Rejection::UnknownWorker(worker))?;
        if w.life != WorkerLife::Alive {
            return Ok(Outcome {
                noop: true,
                ..Outcome::default()
            });
        }
        w.life = WorkerLife::Draining;
        let was_active = !w.standby && promote;
        let address = w.address.clone();
        let held = self.assignments_of(worker).len();
        let mut out = Outcome::default();
        out.events.push(StateEvent {
            kind: EventKind::WorkerDraining,
            message: format!(
                "worker {worker} at {address} is draining: its {held} split(s) move now"
            ),
            worker: Some(worker),
            job: None,
        });
        self.hand_over(worker, was_active, resume_at, "draining worker", &mut out);
        Ok(out)
    }

    /// `silent`: it stopped heartbeating while draining instead of saying it left.
    pub(super) fn worker_left(
        &mut self,
        worker: WorkerId,
        silent: bool,
    ) -> Result<Outcome, Rejection> {
        let life = self
            .workers
            .get(&worker)
            .ok_or(Rejection::UnknownWorker(worker))?
            .life;
        let mut out = match life {
            WorkerLife::Dead | WorkerLife::Left => {
                return Ok(Outcome {
                    noop: true,
                    ..Outcome::default()
                });
            }
            // It left without draining first: its splits move now.
            WorkerLife::Alive => self.drain_worker(worker, &[])?,
            WorkerLife::Draining => Outcome::default(),
        };
        if let Some(w) = self.workers.get_mut(&worker) {
            w.life = WorkerLife::Left;
        }
        out.noop = false;
        out.events.push(StateEvent {
            kind: EventKind::WorkerLeft,
            message: if silent {
                format!("worker {worker} went silent while draining: it left")
            } else {
                format!("worker {worker} drained and left")
            },
            worker: Some(worker),
            job: None,
        });
        Ok(out)
    }
}
