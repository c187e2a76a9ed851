//! Durable stores: journal appends per second (one fsync per batch), journal replay time, and
//! checkpoint write latency.
//!
//! Method, all on the file system of the temporary directory (`CACHEW_BENCH_DIR` overrides it;
//! a tmpfs would measure no fsync at all):
//! - appends: records of 100 bytes, appended for `CACHEW_BENCH_SECS` seconds (default 5) per
//!   mode after a 0.5 s warm-up, as one-record batches and as 64-record batches; every batch is
//!   fsync'd before `append` returns. Reports records/s, batches (fsyncs)/s and the median and
//!   p99 latency of one `append`.
//! - replay: a journal of `CACHEW_BENCH_REPLAY_RECORDS` records (default 1,000,000) of 100 bytes,
//!   written in batches of 1,000 without snapshots and closed; then `Journal::open`, which checks
//!   fjall's journal, lets fjall recover, and reads and checks every record into memory, is timed
//!   three times (warm page cache; the median is reported).
//! - history: a dispatcher's long life. `CACHEW_BENCH_HISTORY_RECORDS` records (default
//!   1,000,000) of 200 bytes appended in batches of 50, with a 50 kB snapshot every 2,000
//!   records (as the dispatcher takes them); then the bytes the journal occupies on disk
//!   (allocated blocks) and the time `Journal::open` takes (median of 3). Both must not grow with
//!   the number of records: the live state is one snapshot and under 2,000 records.
//! - checkpoints: `CACHEW_BENCH_CHECKPOINTS` (default 1,000) writes of a 1 KiB payload, each
//!   durable and followed by the summary marker's write-fsync-rename-fsync; median and p99 of
//!   the whole `write` call.
//!
//! Run with `cargo bench -p cachew-store`. `cargo test --benches` runs a quick pass.

use std::path::Path;
use std::time::{Duration, Instant};

use cachew_store::{CheckpointStore, Journal, JournalOptions};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

fn record(i: u64) -> Vec<u8> {
    let mut r = format!("cmd {i:>12} ").into_bytes();
    r.resize(100, b'x' + (i % 3) as u8);
    r
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn fmt_us(d: Duration) -> String {
    format!("{:.0} us", d.as_secs_f64() * 1e6)
}

/// Appends `batch`-record batches for `secs`; returns (records/s, batches/s, median, p99).
fn appends(dir: &Path, batch: usize, secs: f64) -> (f64, f64, Duration, Duration) {
    let (mut journal, _) = Journal::open(dir, JournalOptions { snapshot_every: 0 }).expect("open");
    let payloads: Vec<Vec<u8>> = (0..batch as u64).map(record).collect();
    let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
    let warm_up = Instant::now();
    while warm_up.elapsed() < Duration::from_millis(500) {
        journal.append(&refs).expect("append");
    }
    let mut latencies = Vec::new();
    let started = Instant::now();
    while started.elapsed().as_secs_f64() < secs {
        let t = Instant::now();
        journal.append(&refs).expect("append");
        latencies.push(t.elapsed());
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let batches = latencies.len() as f64;
    (
        batches * batch as f64 / elapsed,
        batches / elapsed,
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
    )
}

fn replay(dir: &Path, records: u64) -> (Duration, Duration) {
    let write_started = Instant::now();
    {
        let (mut journal, _) =
            Journal::open(dir, JournalOptions { snapshot_every: 0 }).expect("open");
        let mut next = 1;
        while next <= records {
            let end = (next + 1000).min(records + 1);
            let payloads: Vec<Vec<u8>> = (next..end).map(record).collect();
            let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
            journal.append(&refs).expect("append");
            next = end;
        }
    }
    let write = write_started.elapsed();
    let mut times = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let (journal, recovery) =
            Journal::open(dir, JournalOptions { snapshot_every: 0 }).expect("open");
        let elapsed = started.elapsed();
        assert_eq!(recovery.records.len() as u64, records);
        assert_eq!(journal.last_seq(), records);
        assert!(recovery.cut_tail.is_none());
        let check: u64 = recovery.records.iter().map(|(_, r)| u64::from(r[0])).sum();
        std::hint::black_box(check);
        drop(recovery);
        drop(journal);
        times.push(elapsed);
    }
    times.sort();
    (write, times[1])
}

/// Bytes the files under `dir` occupy on disk (allocated blocks; fjall preallocates sparsely).
fn disk_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => disk_bytes(&e.path()),
            Ok(m) => m.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}

/// Appends `records` 200-byte records with a 50 kB snapshot every 2,000; returns (time to
/// write, bytes on disk, time to reopen).
fn history(dir: &Path, records: u64) -> (Duration, u64, Duration) {
    let options = JournalOptions {
        snapshot_every: 2_000,
    };
    let write_started = Instant::now();
    {
        let (mut journal, _) = Journal::open(dir, options.clone()).expect("open");
        let state = vec![b's'; 50_000];
        let mut next = 0;
        while next < records {
            let payloads: Vec<Vec<u8>> = (next..next + 50)
                .map(|i| {
                    let mut r = record(i);
                    r.resize(200, b'r');
                    r
                })
                .collect();
            let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
            journal.append(&refs).expect("append");
            next += 50;
            if journal.snapshot_due() {
                journal.snapshot(&state).expect("snapshot");
                journal.compact().expect("compact");
            }
        }
    }
    let write = write_started.elapsed();
    let bytes = disk_bytes(dir);
    let mut times = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let (journal, recovery) = Journal::open(dir, options.clone()).expect("open");
        times.push(started.elapsed());
        assert!(recovery.records.len() < 2_000);
        drop(journal);
    }
    times.sort();
    (write, bytes, times[1])
}

fn checkpoints(dir: &Path, count: u64) -> (Duration, Duration) {
    let (mut store, _) = CheckpointStore::open(dir).expect("open");
    let mut payload = vec![0u8; 1024];
    let mut latencies = Vec::new();
    for i in 0..count + 20 {
        payload[..8].copy_from_slice(&i.to_le_bytes());
        let t = Instant::now();
        store.write(&payload).expect("write");
        if i >= 20 {
            latencies.push(t.elapsed());
        }
    }
    latencies.sort();
    (percentile(&latencies, 0.5), percentile(&latencies, 0.99))
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: run a quick pass.
    let quick = !std::env::args().any(|a| a == "--bench");
    let secs = env_or("CACHEW_BENCH_SECS", if quick { 1 } else { 5 }) as f64;
    let replay_records = env_or(
        "CACHEW_BENCH_REPLAY_RECORDS",
        if quick { 20_000 } else { 1_000_000 },
    );
    let checkpoint_count = env_or("CACHEW_BENCH_CHECKPOINTS", if quick { 50 } else { 1_000 });
    let history_records = env_or(
        "CACHEW_BENCH_HISTORY_RECORDS",
        if quick { 20_000 } else { 1_000_000 },
    );
    let base = std::env::var_os("CACHEW_BENCH_DIR").map(std::path::PathBuf::from);
    let work = match &base {
        Some(dir) => tempfile::tempdir_in(dir),
        None => tempfile::tempdir(),
    }
    .expect("temporary directory");
    println!("store bench in {}", work.path().display());

    for batch in [1usize, 64] {
        let (records_s, batches_s, p50, p99) =
            appends(&work.path().join(format!("append-{batch}")), batch, secs);
        println!(
            "journal/append batch={batch:>2}: {records_s:>9.0} records/s, {batches_s:>6.0} fsync'd batches/s, \
             append p50 {} p99 {}",
            fmt_us(p50),
            fmt_us(p99)
        );
    }

    let (write, open) = replay(&work.path().join("replay"), replay_records);
    println!(
        "journal/replay: {replay_records} records of 100 B: open + read + check {:.2} s \
         ({:.0} records/s; median of 3, warm cache); writing them took {:.1} s",
        open.as_secs_f64(),
        replay_records as f64 / open.as_secs_f64(),
        write.as_secs_f64()
    );

    let (write, bytes, open) = history(&work.path().join("history"), history_records);
    println!(
        "journal/history: {history_records} records of 200 B, a 50 kB snapshot every 2,000: \
         {:.1} MB on disk, reopen {:.0} ms (median of 3); writing took {:.1} s",
        bytes as f64 / 1e6,
        open.as_secs_f64() * 1e3,
        write.as_secs_f64()
    );

    let (p50, p99) = checkpoints(&work.path().join("checkpoints"), checkpoint_count);
    println!(
        "checkpoint/write 1 KiB x {checkpoint_count}: p50 {} p99 {}",
        fmt_us(p50),
        fmt_us(p99)
    );
}
