//! The orchestrator actuator: `--scale-command 'CMD {n}'` is run through `sh -c` with `{n}`
//! replaced by the number of worker replicas wanted, whenever that number changes (for example
//! `kubectl scale deployment/cachew-worker --replicas={n}`, or a `curl` PATCH of the
//! Deployment's `scale` subresource).
//!
//! The replicas asked for are the wanted count plus the workers still draining: a drained
//! worker's replica goes only once its splits have moved and it has left, so an orchestrator
//! that removes an arbitrary replica removes one that holds nothing (Kubernetes removes
//! not-ready pods first, and a draining worker's `/readyz` answers 503). Whichever replica it
//! removes, its SIGTERM drains it: nothing is lost either way.
//!
//! Each run is bounded by `--scale-command-timeout-ms` (the command is killed past it); its
//! output is logged; a failure (a non-zero status, a timeout, a command that cannot start) is
//! a `scale_command_failed` event with the end of its stderr, and the command is run again after
//! a backoff (1 s doubling to 30 s) until it succeeds or the number changes.

use std::process::Stdio;
use std::time::Duration;

use cachew_proto::backoff::Backoff;
use cachew_proto::v1::EventKind;
use tokio::process::Command;

use crate::service::DispatcherService;
use crate::state::WorkerLife;

/// Bytes of a failed command's output kept in its event.
const OUTPUT_TAIL: usize = 400;

/// The command line for `n` replicas.
pub fn render(template: &str, n: u32) -> String {
    template.replace("{n}", &n.to_string())
}

/// Runs `line` through `sh -c`; Ok(stdout) on status 0 within `timeout`.
pub async fn run_once(line: &str, timeout: Duration) -> Result<String, String> {
    let child = Command::new("sh")
        .arg("-c")
        .arg(line)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start `sh -c {line:?}`: {e}"))?;
    let output = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => return Err(format!("waiting for the scale command failed: {e}")),
        Err(_) => {
            return Err(format!(
                "the scale command did not finish in {} ms and was killed",
                timeout.as_millis()
            ));
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout).trim().to_string();
    if output.status.success() {
        return Ok(stdout);
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stderr = stderr.trim();
    let start = stderr
        .char_indices()
        .map(|(i, _)| i)
        .find(|&i| stderr.len() - i <= OUTPUT_TAIL)
        .unwrap_or(stderr.len());
    Err(format!(
        "the scale command {}: {}",
        output.status,
        &stderr[start..]
    ))
}

impl DispatcherService {
    /// The replicas an orchestrator should run now: the wanted count plus the workers still
    /// draining (None before anything is wanted).
    pub(crate) fn replicas_wanted(&self) -> Option<u32> {
        let core = self.lock();
        let wanted = core.state.scale.wanted()?;
        let draining = core
            .state
            .workers
            .values()
            .filter(|w| w.life == WorkerLife::Draining && !w.standby)
            .count() as u32;
        Some(wanted + draining)
    }

    /// Runs the scale command whenever the replicas wanted change, until the process stops.
    pub async fn run_scale_command(self, template: String, timeout: Duration) {
        let mut applied: Option<u32> = None;
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        loop {
            let seen = self.version();
            if let Some(n) = self.replicas_wanted().filter(|n| applied != Some(*n)) {
                let line = render(&template, n);
                match run_once(&line, timeout).await {
                    Ok(out) => {
                        tracing::info!(replicas = n, output = %out, "scale command ran: {line}");
                        applied = Some(n);
                        backoff.reset();
                    }
                    Err(e) => {
                        let delay = backoff.next_delay();
                        let msg = format!(
                            "scale to {n} replica(s) failed (retried in {} ms): {e}",
                            delay.as_millis()
                        );
                        tracing::warn!("{msg}");
                        self.lock()
                            .events
                            .push(EventKind::ScaleCommandFailed, msg, None, None);
                        self.bump();
                        tokio::time::sleep(delay).await;
                        continue;
                    }
                }
            }
            let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
            self.wait_change(seen, deadline).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_count_replaces_every_placeholder() {
        assert_eq!(
            render("kubectl scale deploy/w --replicas={n} # {n}", 3),
            "kubectl scale deploy/w --replicas=3 # 3"
        );
    }

    #[tokio::test]
    async fn a_command_succeeds_fails_or_times_out_with_its_reason() {
        let t = Duration::from_secs(5);
        assert_eq!(
            run_once("echo scaled to 4", t).await,
            Ok("scaled to 4".into())
        );
        let err = run_once("echo no such deployment >&2; exit 3", t)
            .await
            .expect_err("exit 3 fails");
        assert!(err.contains("exit status: 3"), "{err}");
        assert!(err.contains("no such deployment"), "{err}");
        let err = run_once("sleep 5", Duration::from_millis(100))
            .await
            .expect_err("a timeout fails");
        assert!(err.contains("did not finish in 100 ms"), "{err}");
    }
}
