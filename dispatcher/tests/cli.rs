//! The `cachew-dispatcher` binary: help, bad flags, a port that is taken, JSON logs.
#![allow(clippy::unwrap_used)]

use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cachew-dispatcher"))
}

#[test]
fn help_lists_the_flags() {
    let out = bin().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--work-dir",
        "--heartbeat-interval-ms",
        "--worker-timeout-ms",
    ] {
        assert!(text.contains(flag), "{flag} missing from:\n{text}");
    }
}

#[test]
fn bad_flags_exit_non_zero_with_a_message() {
    let out = bin().args(["--listen", "not-an-address"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--listen"));
    let out = bin()
        .args([
            "--heartbeat-interval-ms",
            "500",
            "--worker-timeout-ms",
            "400",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("must be larger"));
}

#[test]
fn a_taken_port_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = bin().args(["--listen", &addr]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("cannot listen on {addr}")), "{err}");
}

/// `--log-format json`: every stderr line is one JSON object, and a status-stream event is
/// logged with the status stream's own field names.
#[test]
fn json_logs_carry_the_event_fields() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let mut child = bin()
        .args([
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--work-dir",
        ])
        .arg(dir.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = Vec::new();
    let mut event = None;
    for line in BufReader::new(stderr).lines() {
        let line = line.unwrap();
        let value: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(
            value["timestamp"].is_string() && value["level"].is_string(),
            "{line}"
        );
        if value["target"] == "cachew_dispatcher::event" {
            event = Some(value);
            break;
        }
        lines.push(line);
        assert!(
            lines.len() < 50,
            "no event logged in:\n{}",
            lines.join("\n")
        );
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let event = event.expect("the journal replay is logged as an event");
    assert_eq!(event["kind"], "journal_replayed", "{event}");
    assert_eq!(event["seq"], 1, "{event}");
    assert!(event["unix_ms"].as_u64().unwrap() > 0, "{event}");
    assert!(
        event["message"].as_str().unwrap().contains("journal"),
        "{event}"
    );
    for field in ["worker_id", "job_id"] {
        assert_eq!(event[field], 0, "{field}: {event}");
    }
}
