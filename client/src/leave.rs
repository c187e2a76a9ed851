//! Leaving a job on the way out, whatever the reason: the consumer is released at the
//! dispatcher at once, so its splits stop holding worker slots (another job on the same workers
//! gets them) instead of waiting out the dispatcher's `--consumer-timeout-ms`. A normal end
//! releases inside [`JobClient::next`]; an error, a stop signal or an application that stops
//! early calls [`JobClient::leave`].

use crate::JobClient;

impl JobClient {
    /// Releases this consumer at the dispatcher, best effort: bounded (a few seconds when the
    /// dispatcher does not answer), and failures are only logged. The client is done
    /// afterwards (`next` returns `None`); a job that already ended released its consumer then,
    /// and this does nothing. Save [`JobClient::cursor`] first to resume exactly here.
    pub async fn leave(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.metrics.exporter().health().set_not_ready("stopping");
        self.pending_epoch_end = None;
        self.ended();
        self.release().await;
        tracing::info!(
            job = self.job_id,
            consumer = self.consumer,
            "consumer released"
        );
    }
}
