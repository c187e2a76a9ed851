//! The `cachew-worker` binary: help, bad flags, an unreachable dispatcher.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::{Duration, Instant};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cachew-worker"))
}

#[test]
fn help_lists_the_flags() {
    let out = bin().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--dispatcher",
        "--standby",
        "--threads",
        "--buffer-elements",
        "--metrics-listen",
    ] {
        assert!(text.contains(flag), "{flag} missing from:\n{text}");
    }
}

#[test]
fn bad_flags_exit_non_zero() {
    let out = bin()
        .args(["--threads", "0", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = bin().args(["--max-tasks", "zero"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--max-tasks"));
}

#[test]
fn unreachable_dispatcher_is_reported_after_the_connect_timeout() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let start = Instant::now();
    let out = bin()
        .args([
            "--listen",
            "127.0.0.1:0",
            "--dispatcher",
            &format!("127.0.0.1:{port}"),
            "--connect-timeout-ms",
            "600",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(start.elapsed() < Duration::from_secs(20));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unreachable"), "{err}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP/1.0 GET over a plain socket: the whole response.
fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

#[test]
fn the_metrics_endpoint_answers_before_the_worker_registers() {
    let (dispatcher, metrics) = (free_port(), free_port());
    let mut child = bin()
        .args([
            "--listen",
            "127.0.0.1:0",
            "--dispatcher",
            &format!("127.0.0.1:{dispatcher}"),
            "--metrics-listen",
            &format!("127.0.0.1:{metrics}"),
            "--connect-timeout-ms",
            "20000",
        ])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut ready = None;
    while Instant::now() < deadline {
        if let Some(r) = http_get(metrics, "/readyz")
            && r.contains("dispatcher unreachable")
        {
            ready = Some(r);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let healthz = http_get(metrics, "/healthz");
    let scrape = http_get(metrics, "/metrics");
    let _ = child.kill();
    let _ = child.wait();
    let ready = ready.expect("/readyz says the dispatcher is unreachable");
    assert!(ready.starts_with("HTTP/1.0 503"), "{ready}");
    assert!(healthz.unwrap().contains(" 200 "));
    let scrape = scrape.unwrap();
    assert!(scrape.contains("cachew_worker_registered 0"), "{scrape}");
    assert!(
        scrape.contains("cachew_build_info{component=\"worker\""),
        "{scrape}"
    );
}
