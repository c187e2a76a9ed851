//! The long poll behind both heartbeats (`WorkerHeartbeat`, `ClientHeartbeat`): look at the
//! state under the lock; if there is something to say, reply (once what the reply reveals is
//! durable); otherwise wait for the next change or the deadline and look again.

use std::time::Duration;

use tonic::Status;

use crate::service::{Core, DispatcherService};

/// Longest wait a heartbeat may ask for.
pub const MAX_WAIT: Duration = Duration::from_secs(10);

/// What one look at the state found.
#[derive(Debug)]
pub enum Round<T> {
    /// Reply now: the reply reveals nothing that must be durable first.
    Reply(T),
    /// Reply once the state up to this journal sequence number is durable.
    ReplyDurable(T, u64),
    /// Nothing to say yet.
    Wait,
}

/// Which look this is.
#[derive(Debug, Clone, Copy)]
pub struct Look {
    /// The first look of the poll: what the request reports is taken in now, and only now
    /// (taking reports in twice would double-count them, and every change wakes the poll again).
    pub first: bool,
    /// When the poll must answer even with nothing new.
    pub deadline: tokio::time::Instant,
}

impl Look {
    /// Whether the deadline has passed (the poll answers with what it has).
    pub fn expired(&self) -> bool {
        tokio::time::Instant::now() >= self.deadline
    }
}

impl DispatcherService {
    /// Runs `look` under the core lock until it has a reply, at most `wait_ms` (capped at
    /// [`MAX_WAIT`]); between looks, waits for the state version to move.
    pub(crate) async fn long_poll<T>(
        &self,
        wait_ms: u64,
        mut look: impl FnMut(&mut Core, Look) -> Result<Round<T>, Status>,
    ) -> Result<T, Status> {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(wait_ms).min(MAX_WAIT);
        let mut first = true;
        loop {
            let seen = self.version();
            let round = look(&mut self.lock(), Look { first, deadline })?;
            first = false;
            match round {
                Round::Reply(reply) => return Ok(reply),
                Round::ReplyDurable(reply, visible) => {
                    self.durable(visible).await?;
                    return Ok(reply);
                }
                Round::Wait => self.wait_change(seen, deadline).await,
            }
        }
    }
}
