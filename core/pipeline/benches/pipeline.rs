//! In-process pipeline throughput on the tf-sample pipeline (96x96 JPEG -> crop, flip, 64x64
//! resize, normalize, batch 64), on one thread and on all threads.
//!
//! Method: one warm-up epoch, then `ROUNDS` rounds; each round runs one epoch on 1 thread and one
//! epoch on all threads back to back (so both see the same machine load), and the report gives
//! the median images/s of each and the median of the per-round ratios. Every example's bytes are
//! consumed (summed) so nothing is optimised away. Run with `cargo bench -p cachew-pipeline`;
//! `CACHEW_BENCH_ROUNDS` overrides the number of rounds.

use std::time::Instant;

use cachew_pipeline::exec::run_epoch_parallel;
use cachew_pipeline::{Dataset, ElementBody, Pipeline, PipelineSpec};

fn epoch(p: &Pipeline, ds: &Dataset, epoch: u64, threads: usize) -> (f64, u64) {
    let start = Instant::now();
    let mut sum = 0u64;
    run_epoch_parallel(p, ds, 42, epoch, threads, |e| {
        if let ElementBody::Example(t) = &e.body {
            sum = sum.wrapping_add(u64::from(t[0].data[0]));
        }
        Ok(())
    })
    .expect("epoch runs");
    (start.elapsed().as_secs_f64(), sum)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: run one quick round.
    let quick = !std::env::args().any(|a| a == "--bench");
    let rounds: usize = std::env::var("CACHEW_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 1 } else { 7 });
    let spec =
        PipelineSpec::load(&cachew_fixtures::specs_dir().join("tf-sample.toml")).expect("spec");
    let ds = Dataset::for_spec(&spec).expect("dataset");
    let p = Pipeline::new(spec).expect("pipeline");
    let n = ds.num_records() as f64;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    epoch(&p, &ds, 0, threads);
    let (mut one, mut all, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
    let mut check = 0u64;
    for round in 0..rounds {
        let (t1, s1) = epoch(&p, &ds, round as u64 + 1, 1);
        let (tn, sn) = epoch(&p, &ds, round as u64 + 1, threads);
        assert_eq!(s1, sn, "thread count changed the output");
        check = check.wrapping_add(s1);
        one.push(n / t1);
        all.push(n / tn);
        ratio.push(t1 / tn);
    }
    println!(
        "pipeline/tf-sample: {} records x {rounds} rounds; 1 thread: {:.0} images/s; {threads} threads: {:.0} images/s; speed-up {:.2}x (checksum {check})",
        n as u64,
        median(&mut one),
        median(&mut all),
        median(&mut ratio)
    );
}
