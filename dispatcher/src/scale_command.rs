//! The orchestrator actuator: `--scale-command 'CMD {n}'` is run through `sh -c` with `{n}`
//! replaced by the number of worker replicas wanted, whenever that number changes (for example
//! `kubectl scale deployment/cachew-worker --replicas={n}`, or a `curl` PATCH of the
//! Deployment's `scale` subresource).
//!
//! The replicas asked for are the wanted count plus the workers the autoscaler drained that are
//! still draining (`Command::Shrink`; not drains a worker started itself): a drained worker's
//! replica goes only once its splits have moved and it has left, so an orchestrator that
//! removes an arbitrary replica removes one that holds nothing (Kubernetes removes not-ready
//! pods first; a draining or left worker's `/readyz` answers 503, and `cachew-worker
//! --linger-after-drain-ms` keeps a drained one up, not ready, meanwhile). Whichever replica it
//! removes, its SIGTERM drains it: nothing is lost either way. A fleet that stays short of the
//! target (a replica lost or removed in place of the drained one) gets the command again after
//! `REASSERT_AFTER`.
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

/// A fleet short of the target this long gets the command again.
pub const REASSERT_AFTER: Duration = Duration::from_secs(60);

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
    /// Whether fewer workers are registered and alive than wanted (those the autoscaler is
    /// draining aside).
    fn fleet_short(&self) -> bool {
        let core = self.lock();
        core.state
            .scale
            .wanted()
            .is_some_and(|w| (core.state.active_workers() as u32) < w)
    }

    pub(crate) fn replicas_wanted(&self) -> Option<u32> {
        let core = self.lock();
        let wanted = core.state.scale.wanted()?;
        Some(wanted + core.state.shrinking() as u32)
    }

    /// Runs the scale command whenever the replicas wanted change, until the process stops;
    /// and again when the fleet has stayed short of them for [`REASSERT_AFTER`] (a replica the
    /// orchestrator lost, or removed in place of the drained one).
    pub async fn run_scale_command(self, template: String, timeout: Duration) {
        let mut applied: Option<u32> = None;
        let mut short_since: Option<tokio::time::Instant> = None;
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        let mut failed_for: Option<u32> = None;
        loop {
            let seen = self.version();
            let short = self.fleet_short();
            let now = tokio::time::Instant::now();
            match (short, short_since) {
                (false, _) => short_since = None,
                (true, None) => short_since = Some(now),
                (true, Some(t)) if now.duration_since(t) >= REASSERT_AFTER => {
                    tracing::info!("the fleet stayed short of the target: asking again");
                    applied = None;
                    short_since = Some(now);
                }
                (true, Some(_)) => {}
            }
            if let Some(n) = self.replicas_wanted().filter(|n| applied != Some(*n)) {
                if failed_for != Some(n) {
                    // Another count: its first attempt does not wait for the last one's backoff.
                    backoff.reset();
                }
                let line = render(&template, n);
                match run_once(&line, timeout).await {
                    Ok(out) => {
                        tracing::info!(replicas = n, output = %out, "scale command ran: {line}");
                        applied = Some(n);
                        failed_for = None;
                        backoff.reset();
                    }
                    Err(e) => {
                        failed_for = Some(n);
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
