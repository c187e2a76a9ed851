//! The fleet size, durable: the autoscaler's target (`Command::Scale`, decided by
//! `policy::autoscale`) and a count an operator pinned (`Command::PinWorkers`). Both survive a
//! dispatcher restart, so a restarted dispatcher neither forgets a pin nor resizes the fleet
//! from scratch. Which worker drains when the fleet shrinks is decided by the service
//! (`autoscale.rs`) and journaled as `Command::Shrink`: a drain that promotes no standby, with
//! the worker counted in `Scale::shrinking` until it has left.

use std::collections::BTreeSet;

use cachew_proto::v1::EventKind;
use serde::{Deserialize, Serialize};

use super::{JobId, Outcome, Rejection, State, StateEvent, WorkerId, WorkerLife};

/// The fleet size wanted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scale {
    /// The autoscaler's last target (None: it decided nothing yet).
    #[serde(default)]
    pub target: Option<u32>,
    /// A count an operator pinned: it overrides the autoscaler until unpinned.
    #[serde(default)]
    pub pinned: Option<u32>,
    /// The message of the last decision (shown in the status stream).
    #[serde(default)]
    pub last_decision: String,
    /// Workers the autoscaler drained (`Command::Shrink`) that have not left yet: an
    /// orchestrator keeps their replicas until they have (`--scale-command`).
    #[serde(default)]
    pub shrinking: BTreeSet<WorkerId>,
}

impl Scale {
    /// The count the fleet is brought to: the pin, else the autoscaler's target.
    pub fn wanted(&self) -> Option<u32> {
        self.pinned.or(self.target)
    }
}

impl State {
    pub(super) fn scale_to(&mut self, from: u32, target: u32, why: &str) -> Outcome {
        if self.scale.target == Some(target) {
            return Outcome {
                noop: true,
                ..Outcome::default()
            };
        }
        self.scale.target = Some(target);
        let kind = if target >= from {
            EventKind::ScaleUp
        } else {
            EventKind::ScaleDown
        };
        let message = format!("autoscale {from} -> {target} worker(s): {why}");
        self.scale.last_decision = message.clone();
        let pinned = self
            .scale
            .pinned
            .map(|n| format!(" (pinned at {n}: the pin holds)"))
            .unwrap_or_default();
        Outcome {
            events: vec![StateEvent {
                kind,
                message: format!("{message}{pinned}"),
                worker: None,
                job: None,
            }],
            ..Outcome::default()
        }
    }

    pub(super) fn shrink(
        &mut self,
        worker: WorkerId,
        resume_at: &[((JobId, u64, u32), u32)],
    ) -> Result<Outcome, Rejection> {
        let out = self.drain(worker, resume_at, false)?;
        // Only workers still on their way out stay listed (bounded by the fleet).
        let workers = &self.workers;
        self.scale.shrinking.retain(|w| {
            workers
                .get(w)
                .is_some_and(|e| e.life == WorkerLife::Draining)
        });
        if !out.noop {
            self.scale.shrinking.insert(worker);
        }
        Ok(out)
    }

    /// Workers the autoscaler drained that are still draining.
    pub fn shrinking(&self) -> usize {
        self.scale
            .shrinking
            .iter()
            .filter(|w| {
                self.workers
                    .get(w)
                    .is_some_and(|e| e.life == WorkerLife::Draining)
            })
            .count()
    }

    pub(super) fn pin_workers(&mut self, pinned: Option<u32>) -> Outcome {
        if self.scale.pinned == pinned {
            return Outcome {
                noop: true,
                ..Outcome::default()
            };
        }
        self.scale.pinned = pinned;
        let message = match pinned {
            Some(n) => format!("worker count pinned at {n} by an operator"),
            None => match self.scale.target {
                Some(n) => format!("worker count unpinned: the autoscaler's {n} again"),
                None => "worker count unpinned".to_string(),
            },
        };
        Outcome {
            events: vec![StateEvent {
                kind: EventKind::ScalePinned,
                message,
                worker: None,
                job: None,
            }],
            ..Outcome::default()
        }
    }
}
