//! End-to-end: `cachew-tui demo` in a real terminal (a tmux pane on a private tmux server), driven
//! by keys and read back with `capture-pane`: kill a worker, see it dead, restart it, see it
//! alive, see the next epoch verified exactly-once, quit stopping the cluster, and find no
//! process of the demo left.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_cachew-tui");
const WAIT: Duration = Duration::from_secs(40);

/// A private tmux server (`tmux -L <unique>`) with one pane; killed when dropped.
struct Tmux {
    socket: String,
    config: PathBuf,
}

impl Tmux {
    fn new(dir: &Path) -> Tmux {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let config = dir.join("tmux.conf");
        // Keep the pane (and the exit status the shell prints) after the program exits.
        std::fs::write(
            &config,
            "set -g remain-on-exit on\nset -g history-limit 0\n",
        )
        .unwrap();
        Tmux {
            socket: format!("cachew-tui-e2e-{}-{nanos}", std::process::id()),
            config,
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        let out = Command::new("tmux")
            .arg("-u")
            .arg("-L")
            .arg(&self.socket)
            .arg("-f")
            .arg(&self.config)
            .args(args)
            .output()
            .expect("running tmux");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn start(&self, width: u16, height: u16, command: &str) {
        self.run(&[
            "new-session",
            "-d",
            "-s",
            "e2e",
            "-x",
            &width.to_string(),
            "-y",
            &height.to_string(),
            command,
        ]);
    }

    fn capture(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", "e2e"]).stdout).into_owned()
    }

    fn keys(&self, keys: &str) {
        self.run(&["send-keys", "-t", "e2e", keys]);
    }

    fn pane(&self, format: &str) -> String {
        String::from_utf8_lossy(
            &self
                .run(&["display-message", "-p", "-t", "e2e", format])
                .stdout,
        )
        .trim()
        .to_string()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        // Our own server only, by its socket name. The demo handles the hang-up by stopping its
        // cluster, and its nodes exit by themselves if it does not.
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

fn tmux_available() -> bool {
    Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The text of a node's row in the node list (the first line naming it in the first columns).
fn node_row<'a>(screen: &'a str, name: &str) -> Option<&'a str> {
    screen.lines().find(|l| {
        l.chars()
            .skip(2)
            .collect::<String>()
            .split_whitespace()
            .next()
            == Some(name)
    })
}

/// Cell text of `column` (a header name) in `row`, by the header's character positions.
fn cell(screen: &str, row: &str, column: &str) -> Option<String> {
    let header: Vec<char> = screen
        .lines()
        .find(|l| l.contains("node") && l.contains("address") && l.contains(" pid "))?
        .chars()
        .collect();
    let header: String = header.into_iter().collect();
    let start = header[..header.find(&format!(" {column} "))? + 1]
        .chars()
        .count();
    let chars: Vec<char> = row.chars().collect();
    let rest: String = chars.get(start..)?.iter().collect();
    Some(rest.split_whitespace().next()?.to_string())
}

fn pid_of(screen: &str, name: &str) -> Option<u32> {
    cell(screen, node_row(screen, name)?, "pid")?.parse().ok()
}

/// The epoch the job panel shows (`epoch N/∞`).
fn current_epoch(screen: &str) -> Option<u64> {
    let at = screen.find("epoch ")?;
    let digits: String = screen[at + 6..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Epochs with a passed verdict line (`e12 ✓ exactly-once: ...`).
fn passed_epochs(screen: &str) -> Vec<u64> {
    screen
        .lines()
        .filter_map(|l| {
            let at = l.find(" ✓ exactly-once")?;
            let start = l[..at].rfind('e')?;
            l[start + 1..at].parse().ok()
        })
        .collect()
}

/// Processes whose environment names `parent` as their cluster-control supervisor.
fn supervised_by(parent: u32) -> BTreeSet<u32> {
    let needle = format!("CACHEW_PARENT_PID={parent}");
    let mut out = BTreeSet::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Ok(env) = std::fs::read(entry.path().join("environ"))
            && env.split(|b| *b == 0).any(|var| var == needle.as_bytes())
            && alive(pid)
        {
            out.insert(pid);
        }
    }
    out
}

/// Whether `pid` is a live (not zombie) process, probed through /proc.
fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // pid (comm) state ...: the state follows the last ')'.
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next());
    !matches!(state, Some("Z") | Some("X") | None)
}

/// Whether `pid` is still the demo (`demo_pid`) or one of its nodes, so that a PID the kernel
/// reused for an unrelated process does not count.
fn ours(pid: u32, demo_pid: u32) -> bool {
    if !alive(pid) {
        return false;
    }
    if pid == demo_pid {
        return std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains("cachew-tui"));
    }
    let needle = format!("CACHEW_PARENT_PID={demo_pid}");
    std::fs::read(format!("/proc/{pid}/environ"))
        .is_ok_and(|env| env.split(|b| *b == 0).any(|var| var == needle.as_bytes()))
}

/// The `CACHEW_PARENT_PID` a node was started with.
fn supervisor_of(pid: u32) -> u32 {
    let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    env.split(|b| *b == 0)
        .find_map(|var| var.strip_prefix(b"CACHEW_PARENT_PID="))
        .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
        .unwrap_or_else(|| panic!("process {pid} has no CACHEW_PARENT_PID"))
}

/// The parent of a process, from /proc.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

struct Run<'a> {
    tmux: &'a Tmux,
    runs: &'a Path,
    pids: BTreeSet<u32>,
}

impl Run<'_> {
    /// Waits until `ok` holds for the screen; on timeout fails with the screen and node logs.
    fn wait(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let screen = self.tmux.capture();
            if ok(&screen) {
                if std::env::var_os("CACHEW_E2E_VERBOSE").is_some() {
                    eprintln!("--- {what}:\n{screen}");
                }
                return screen;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}; screen:\n{screen}\n{}",
                    self.log_tails()
                );
            }
            std::thread::sleep(Duration::from_millis(150));
        }
    }

    fn log_tails(&self) -> String {
        let mut out = String::new();
        let Ok(runs) = std::fs::read_dir(self.runs) else {
            return out;
        };
        for run in runs.flatten() {
            let Ok(logs) = std::fs::read_dir(run.path().join("logs")) else {
                continue;
            };
            for log in logs.flatten() {
                let text = std::fs::read_to_string(log.path()).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                out.push_str(&format!(
                    "--- {}\n{}\n",
                    log.path().display(),
                    lines[lines.len().saturating_sub(15)..].join("\n")
                ));
            }
        }
        out
    }

    /// Whether any node log contains `needle`.
    fn logs_contain(&self, needle: &str) -> bool {
        let Ok(runs) = std::fs::read_dir(self.runs) else {
            return false;
        };
        runs.flatten().any(|run| {
            std::fs::read_dir(run.path().join("logs")).is_ok_and(|logs| {
                logs.flatten().any(|log| {
                    std::fs::read_to_string(log.path()).is_ok_and(|t| t.contains(needle))
                })
            })
        })
    }

    /// Remembers every PID the node list shows.
    fn collect_pids(&mut self, screen: &str) {
        for name in [
            "dispatcher",
            "worker-1",
            "worker-2",
            "worker-3",
            "standby-1",
            "client-1",
        ] {
            if let Some(pid) = pid_of(screen, name) {
                self.pids.insert(pid);
            }
        }
    }
}

#[test]
fn demo_kill_restart_verify_and_quit_without_orphans() {
    if !tmux_available() {
        assert!(
            std::env::var_os("CACHEW_REQUIRE_TMUX").is_none(),
            "tmux is required (CACHEW_REQUIRE_TMUX is set)"
        );
        eprintln!("skipping: tmux is not installed");
        return;
    }
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let runs = dir.path().join("runs");
    let tmux = Tmux::new(dir.path());
    // The shell reports the demo's exit status on the screen (tmux's own record of it is not
    // reliable), then stays: a session leader that exits hangs up its process group, which
    // would kill nodes the demo failed to stop before the checks below could see them.
    let command = format!(
        "env LC_ALL=C.UTF-8 TERM=xterm-256color '{BIN}' demo --data-dir '{}' --runs-dir '{}' \
         --records 256 --workers 3 --standby 1 --worker-threads 1 --step-time-ms 20; \
         echo \"demo exit status: $?\"; sleep 600",
        data.display(),
        runs.display()
    );
    tmux.start(120, 40, &command);
    let shell_pid: u32 = tmux.pane("#{pane_pid}").parse().unwrap();
    let mut run = Run {
        tmux: &tmux,
        runs: &runs,
        pids: BTreeSet::new(),
    };

    // The dashboard is up: every node runs and the workers are alive.
    let screen = run.wait("the dashboard with every node up", |s| {
        ["worker-1", "worker-2", "worker-3"]
            .iter()
            .all(|w| node_row(s, w).is_some_and(|r| r.contains(" alive ")))
            && node_row(s, "standby-1").is_some_and(|r| r.contains(" standby "))
            && node_row(s, "client-1").is_some_and(|r| r.contains(" running "))
            && pid_of(s, "dispatcher").is_some()
    });
    run.collect_pids(&screen);
    assert_eq!(run.pids.len(), 6, "six nodes with PIDs:\n{screen}");
    // The demo is the supervisor its nodes name, and the pane's shell started it.
    let demo_pid = supervisor_of(pid_of(&screen, "dispatcher").unwrap());
    assert_eq!(parent_of(demo_pid), Some(shell_pid));

    // Select worker-1 (the list starts on the dispatcher) and kill it.
    tmux.keys("j");
    run.wait("worker-1 selected", |s| {
        node_row(s, "worker-1").is_some_and(|r| r.starts_with('›'))
    });
    let killed_pid = pid_of(&screen, "worker-1").unwrap();
    let kill_epoch = current_epoch(&screen).unwrap();
    tmux.keys("x");
    run.wait("worker-1 killed", |s| {
        node_row(s, "worker-1").is_some_and(|r| r.contains("killed"))
    });
    let screen = run.wait("worker-1 declared dead", |s| {
        node_row(s, "worker-1").is_some_and(|r| r.contains("dead (killed)"))
    });
    assert!(
        !ours(killed_pid, demo_pid),
        "the SIGKILLed worker still runs"
    );
    assert!(screen.contains("declared_dead"), "{screen}");

    // Restart it: alive again, with a new PID and one restart.
    tmux.keys("r");
    let screen = run.wait("worker-1 alive after a restart", |s| {
        node_row(s, "worker-1").is_some_and(|r| r.contains(" alive "))
            && node_row(s, "worker-1")
                .and_then(|r| cell(s, r, "rst"))
                .as_deref()
                == Some("1")
    });
    run.collect_pids(&screen);
    let restarted_pid = pid_of(&screen, "worker-1").unwrap();
    assert_ne!(restarted_pid, killed_pid);

    // The next finished epoch is verified exactly-once on screen, and no verdict failed.
    let restart_epoch = current_epoch(&screen).unwrap().max(kill_epoch);
    let screen = run.wait("a verified epoch after the restart", |s| {
        passed_epochs(s).iter().any(|&e| e >= restart_epoch)
    });
    assert!(!screen.contains('✗'), "a failed verdict:\n{screen}");
    assert!(!screen.contains("verdict_failed"), "{screen}");
    run.collect_pids(&screen);

    // Everything the demo supervises right now (also what the screen cannot show).
    let supervised = supervised_by(demo_pid);
    assert!(
        run.pids
            .iter()
            .filter(|p| alive(**p))
            .all(|p| supervised.contains(p)),
        "screen PIDs {:?} vs supervised {supervised:?}",
        run.pids
    );
    run.pids.extend(&supervised);
    run.pids.insert(demo_pid);

    // Quit, confirming that the cluster stops.
    tmux.keys("q");
    run.wait("the quit question", |s| {
        s.contains("Stop the local cluster")
    });
    tmux.keys("y");
    let screen = run.wait("the demo to exit", |s| s.contains("demo exit status:"));
    assert!(
        screen.contains("demo exit status: 0"),
        "exit status; screen:\n{screen}"
    );
    // The demo stopped its nodes itself: none had to notice that its supervisor was gone (the
    // fallback that would also leave no process, within 200 ms; give it time to show).
    std::thread::sleep(Duration::from_millis(800));
    assert!(
        !run.logs_contain("is gone; exiting"),
        "nodes outlived the demo:\n{}",
        run.log_tails()
    );
    let stopped = &screen[screen
        .find("cachew-tui: stopped:")
        .unwrap_or_else(|| panic!("no stop report:\n{screen}"))..];
    assert!(!stopped.contains("running"), "{stopped}");
    // It reports the final state of every node it reaped.
    for name in [
        "dispatcher",
        "worker-1",
        "worker-2",
        "worker-3",
        "standby-1",
        "client-1",
    ] {
        assert!(
            stopped.contains(&format!("{name} exited"))
                || stopped.contains(&format!("{name} killed")),
            "{name} missing from the stop report: {stopped}"
        );
    }
    let left: Vec<u32> = run
        .pids
        .iter()
        .copied()
        .filter(|p| ours(*p, demo_pid))
        .collect();
    assert!(left.is_empty(), "processes left behind: {left:?}");
    assert!(supervised_by(demo_pid).is_empty());
    eprintln!(
        "demo e2e: {} processes checked, {:.1} s",
        run.pids.len(),
        started.elapsed().as_secs_f64()
    );
}
