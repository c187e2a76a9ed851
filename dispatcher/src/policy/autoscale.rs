//! The autoscaler's policy: how many workers the fleet needs so that the trainers are not
//! input-bound and no worker idles. Pure: [`Scaler::observe`] takes one period's measurements
//! ([`Sample`]) and returns the [`Decision`] to journal, if any; the service measures, journals
//! (`Command::Scale`) and actuates (`autoscale.rs`).
//!
//! It starts from Cachew's published policy and improves on it where measuring says so:
//! - **Estimate first.** A trainer that waits a fraction `w` of its time for data could consume
//!   `1 / (1 - w)` times what it gets now, and while it waits the workers are the bottleneck, so
//!   the fleet needs about `n / (1 - w)` workers. The first step up goes there at once instead of
//!   one worker at a time (`autoscale-up` reaches 4x in one step, not four periods).
//! - **Then hill-climb one worker at a time**: a step up is kept while the delivered rate gains
//!   more than `up_gain` (7%) and the trainer still waits; a step that gained less is undone and
//!   sets a ceiling that is not probed again until a stable period has passed.
//! - **Probe down after a stable period**: one worker fewer is kept while the trainer's time
//!   waiting for data grows by less than `down_loss` (3 points) and stays under `input_bound`; a
//!   step that cost more is undone. The wait is measured to the millisecond where the delivered
//!   rate moves in whole batches, so a slow trainer's rate noise cannot undo a good step.
//! - **No flapping on noise**: every size change is measured only after `settle_periods` (the
//!   workers warm up and the buffers refill), changes within the thresholds are not acted on, a
//!   fleet the actuator has not reached yet is never measured, and each undone probe doubles the
//!   wait before the next one (up to 32 stable periods), reset when the delivered rate moves
//!   beyond `up_gain` (the load changed).
//!
//! The fleet is sized for the jobs together: the rate is the sum of the jobs' delivered
//! examples per second and the wait is the most input-bound job's. A change of the set of
//! running jobs starts over from the estimate (the service resets the [`Scaler`]).

use std::fmt;

/// The longest wait between down-probes of a steady load, in stable periods.
pub const MAX_PATIENCE: u32 = 32;
/// The largest step up from the estimate: 4x the fleet.
pub const MAX_JUMP: u32 = 4;
/// Weight of a new period in the smoothed rate that detects a changed load.
const SMOOTHING: f64 = 0.2;

/// The policy's thresholds, bounds and periods (the dispatcher's `--autoscale-*` flags).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScalePolicy {
    pub min_workers: u32,
    pub max_workers: u32,
    /// A step up is kept when the delivered rate gained more than this fraction.
    pub up_gain: f64,
    /// A step down is kept when the trainer's wait (a fraction of its time) grew by less than
    /// this since the descent began, and stays under `input_bound`.
    pub down_loss: f64,
    /// A trainer that waits for data more than this fraction of its time is input-bound.
    pub input_bound: f64,
    /// Periods a new fleet size runs before it is measured.
    pub settle_periods: u32,
    /// Periods of a stable fleet before one worker fewer is probed.
    pub stable_periods: u32,
}

impl Default for ScalePolicy {
    fn default() -> Self {
        ScalePolicy {
            min_workers: 1,
            max_workers: 16,
            up_gain: 0.07,
            down_loss: 0.03,
            input_bound: 0.10,
            settle_periods: 1,
            stable_periods: 6,
        }
    }
}

impl ScalePolicy {
    fn clamp(&self, n: u32) -> u32 {
        n.clamp(self.min_workers, self.max_workers.max(self.min_workers))
    }
}

/// One period's measurements.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Sample {
    /// Active workers (alive, not draining, not standby) through the period.
    pub workers: u32,
    /// Examples per second delivered to the trainers over the period.
    pub rate: f64,
    /// The trainers' input-wait ratio (0 to 1): the most input-bound job's.
    pub wait: f64,
}

impl fmt::Display for Sample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} worker(s), {:.0} examples/s, trainer waiting {:.0}%",
            self.workers,
            self.rate,
            self.wait * 100.0
        )
    }
}

/// A new fleet size and the measurements behind it.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub from: u32,
    pub target: u32,
    pub why: String,
}

impl Decision {
    pub fn is_up(&self) -> bool {
        self.target > self.from
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Measuring a new load: after `settle_periods` samples (the workers warm up) the next
    /// one decides from the estimate.
    Start { seen: u32 },
    /// A size change being measured against the sample taken before it.
    Probe {
        from: u32,
        to: u32,
        before: Sample,
        settle: u32,
    },
    /// Holding the size for `periods` periods.
    Stable { periods: u32 },
}

/// The policy's memory between periods (soft: a restarted dispatcher starts over from the
/// journaled target).
#[derive(Debug, Clone, PartialEq)]
pub struct Scaler {
    phase: Phase,
    target: u32,
    /// A step up from this size gained too little: no larger size is probed for the periods
    /// left.
    ceiling: Option<(u32, u32)>,
    /// The next down-probe comes after `stable_periods * patience` (doubled by each undone
    /// down-probe, up to [`MAX_PATIENCE`]; back to 1 when the load changes).
    patience: u32,
    /// The rate when a down-probe was last undone, and the stable periods' smoothed rate since:
    /// one that moved away from it by more than twice `up_gain` (at least 10%) means the load
    /// changed (a trainer slowed down), and probing starts patient again. Smoothed, because a
    /// slow trainer's rate moves in whole batches from one period to the next.
    undone_at: Option<(f64, f64)>,
    /// A ceiling holds for `stable_periods * up_patience` periods (doubled by each step up
    /// that did not pay, up to [`MAX_PATIENCE`]; back to 1 by one that paid).
    up_patience: u32,
    /// Periods the fleet has differed from the target (an actuator that cannot reach it).
    behind: u32,
}

impl Scaler {
    /// Starts at `target` workers (the journaled target, or the fleet as it is).
    pub fn new(target: u32) -> Scaler {
        Scaler {
            phase: Phase::Start { seen: 0 },
            target,
            ceiling: None,
            patience: 1,
            undone_at: None,
            up_patience: 1,
            behind: 0,
        }
    }

    pub fn target(&self) -> u32 {
        self.target
    }

    /// Takes one period's measurements in; returns the change to make, if any.
    pub fn observe(&mut self, s: Sample, p: &ScalePolicy) -> Option<Decision> {
        if s.workers != self.target {
            // The actuator has not got there yet: nothing measured now says anything about
            // the target. One that cannot get there (no room, a failing command) for a stable
            // period is taken at its word: the fleet as it is becomes the target.
            self.behind += 1;
            if self.behind < p.stable_periods.max(1) {
                return None;
            }
            self.target = s.workers;
            self.phase = Phase::Stable { periods: 0 };
        }
        self.behind = 0;
        let bounded = p.clamp(self.target);
        if bounded != self.target {
            let why = format!(
                "the bounds are {} to {} worker(s); now {s}",
                p.min_workers, p.max_workers
            );
            return Some(self.change(self.target, bounded, s, p, why));
        }
        if let Some((size, periods)) = self.ceiling {
            self.ceiling = (periods > 1).then_some((size, periods - 1));
        }
        match self.phase {
            Phase::Start { seen } if seen < p.settle_periods => {
                self.phase = Phase::Start { seen: seen + 1 };
                None
            }
            Phase::Start { .. } => {
                let d = self.estimate(s, p);
                if d.is_none() {
                    self.phase = Phase::Stable { periods: 0 };
                }
                d
            }
            Phase::Probe {
                from,
                to,
                before,
                settle,
            } => {
                if settle > 0 {
                    self.phase = Phase::Probe {
                        from,
                        to,
                        before,
                        settle: settle - 1,
                    };
                    return None;
                }
                if to > from {
                    self.judge_up(from, to, before, s, p)
                } else {
                    self.judge_down(from, to, before, s, p)
                }
            }
            Phase::Stable { periods } => {
                let periods = periods + 1;
                self.phase = Phase::Stable { periods };
                if periods <= p.settle_periods {
                    return None;
                }
                if s.wait > p.input_bound {
                    return self.estimate(s, p);
                }
                if let Some((at, smoothed)) = self.undone_at {
                    let smoothed = smoothed + SMOOTHING * (s.rate - smoothed);
                    self.undone_at = Some((at, smoothed));
                    if gain(at, smoothed).abs() > (2.0 * p.up_gain).max(0.10) {
                        self.patience = 1;
                        self.undone_at = None;
                    }
                }
                if periods >= p.stable_periods.saturating_mul(self.patience) {
                    return self.probe_down(s, p);
                }
                None
            }
        }
    }

    /// A step up for an input-bound trainer: to `n / (1 - w)`, at least one more.
    fn estimate(&mut self, s: Sample, p: &ScalePolicy) -> Option<Decision> {
        if s.wait <= p.input_bound || s.workers >= p.max_workers {
            return None;
        }
        let n = s.workers.max(1);
        let ceiling = self.ceiling.map(|(size, _)| size);
        if ceiling.is_some_and(|size| n >= size) {
            return None;
        }
        let busy = (1.0 - s.wait).max(0.05);
        // 4.0001x is 4 workers, not 5: the measurement is not that exact.
        let estimate = (f64::from(n) / busy - 0.05).ceil() as u32;
        // One sample (a cold start, a transient) may not send the fleet to its maximum at once.
        let mut to = p.clamp(estimate.clamp(n + 1, n.saturating_mul(MAX_JUMP)));
        if let Some(size) = ceiling {
            to = to.min(size);
        }
        if to <= s.workers {
            return None;
        }
        // The load changed: down-probes start patient again.
        self.patience = 1;
        self.undone_at = None;
        Some(self.change(
            s.workers,
            to,
            s,
            p,
            format!(
                "trainer input-bound ({s}): it could take about {:.1}x the data, estimate {estimate} worker(s)",
                1.0 / busy
            ),
        ))
    }

    fn judge_up(
        &mut self,
        from: u32,
        to: u32,
        before: Sample,
        s: Sample,
        p: &ScalePolicy,
    ) -> Option<Decision> {
        // The trainer's gain: in examples per second, or in the time it no longer waits (a
        // trainer of constant step time speeds up by (1 - w1) / (1 - w0)); either may show it.
        let by_wait = (1.0 - s.wait) / (1.0 - before.wait).max(0.05) - 1.0;
        let gain = gain(before.rate, s.rate).max(by_wait);
        if gain <= p.up_gain {
            // The step did not pay: back to where it was, and not tried again for a while.
            let hold = p.stable_periods.max(1).saturating_mul(4 * self.up_patience);
            self.ceiling = Some((from, hold));
            self.up_patience = (self.up_patience * 2).min(MAX_PATIENCE);
            let d = self.change(
                to,
                from,
                s,
                p,
                format!(
                    "{from} -> {to} worker(s) gained {:+.1}% (kept above {:.0}%): undone; now {s}",
                    gain * 100.0,
                    p.up_gain * 100.0
                ),
            );
            self.phase = Phase::Stable { periods: 0 };
            return Some(d);
        }
        self.up_patience = 1;
        if s.wait > p.input_bound && to < p.max_workers {
            let why = format!(
                "{from} -> {to} worker(s) gained {:+.1}% and the trainer still waits ({s})",
                gain * 100.0
            );
            return Some(self.change(to, to + 1, s, p, why));
        }
        self.phase = Phase::Stable { periods: 0 };
        None
    }

    fn judge_down(
        &mut self,
        from: u32,
        to: u32,
        before: Sample,
        s: Sample,
        p: &ScalePolicy,
    ) -> Option<Decision> {
        // What one worker fewer costs the trainer is the time it now waits for data: its wait
        // is measured to the millisecond, where the delivered rate moves in whole batches (a
        // trainer taking 5 batches a second shows +-20% from one second to the next).
        let waits_more = s.wait - before.wait;
        if waits_more >= p.down_loss || s.wait > p.input_bound {
            let d = self.change(
                to,
                from,
                s,
                p,
                format!(
                    "{from} -> {to} worker(s) made the trainer wait {:+.1} points (kept under {:.0}): undone; now {s}",
                    waits_more * 100.0,
                    p.down_loss * 100.0,
                ),
            );
            self.patience = (self.patience * 2).min(MAX_PATIENCE);
            self.undone_at = Some((before.rate, before.rate));
            self.phase = Phase::Stable { periods: 0 };
            return Some(d);
        }
        self.patience = 1;
        self.undone_at = None;
        if to > p.min_workers {
            let d = self.probe_down(s, p);
            // The next step down is judged against the wait where the descent began, so steps
            // that each cost a little cannot add up past `down_loss`.
            if let Phase::Probe { before: next, .. } = &mut self.phase {
                next.wait = next.wait.min(before.wait);
            }
            return d;
        }
        self.phase = Phase::Stable { periods: 0 };
        None
    }

    fn probe_down(&mut self, s: Sample, p: &ScalePolicy) -> Option<Decision> {
        let n = s.workers;
        if n <= p.min_workers {
            self.phase = Phase::Stable { periods: 0 };
            return None;
        }
        Some(self.change(
            n,
            n - 1,
            s,
            p,
            format!("the trainer does not wait ({s}): one worker fewer"),
        ))
    }

    fn change(&mut self, from: u32, to: u32, s: Sample, p: &ScalePolicy, why: String) -> Decision {
        self.phase = Phase::Probe {
            from,
            to,
            before: s,
            settle: p.settle_periods,
        };
        self.target = to;
        Decision {
            from,
            target: to,
            why,
        }
    }
}

/// The relative change from `before` to `now` (0 when nothing was measured before).
fn gain(before: f64, now: f64) -> f64 {
    if before <= f64::EPSILON {
        return if now > f64::EPSILON { 1.0 } else { 0.0 };
    }
    now / before - 1.0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A job whose trainer takes up to `trainer` examples/s from workers that make `per_worker`
    /// each; `noise` (-1 to 1) scales the measured rate by up to +-`spread`.
    fn measure(workers: u32, trainer: f64, per_worker: f64, noise: f64, spread: f64) -> Sample {
        let supply = f64::from(workers) * per_worker;
        let rate = supply.min(trainer) * (1.0 + noise * spread);
        let wait = (1.0 - supply / trainer).max(0.0) + (noise.abs() * 0.02);
        Sample {
            workers,
            rate,
            wait: wait.min(1.0),
        }
    }

    /// A deterministic noise sequence in -1..1 (no clock, no global RNG: the same trace every run).
    struct Noise(u64);
    impl Noise {
        fn next(&mut self) -> f64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((self.0 >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        }
    }

    /// Runs `periods` periods; the fleet follows every decision at once. Returns the targets
    /// after each period and every decision.
    fn run(
        scaler: &mut Scaler,
        policy: &ScalePolicy,
        periods: usize,
        trainer: impl Fn(usize) -> f64,
        spread: f64,
        seed: u64,
    ) -> (Vec<u32>, Vec<(usize, Decision)>) {
        let mut noise = Noise(seed);
        let mut workers = scaler.target();
        let mut sizes = Vec::new();
        let mut decisions = Vec::new();
        for t in 0..periods {
            let s = measure(workers, trainer(t), 100.0, noise.next(), spread);
            if let Some(d) = scaler.observe(s, policy) {
                workers = d.target;
                decisions.push((t, d));
            }
            sizes.push(workers);
        }
        (sizes, decisions)
    }

    fn policy() -> ScalePolicy {
        ScalePolicy {
            max_workers: 12,
            ..ScalePolicy::default()
        }
    }

    #[test]
    fn an_input_bound_job_grows_to_what_its_trainer_takes_and_stays() {
        let p = policy();
        let mut scaler = Scaler::new(1);
        let (sizes, decisions) = run(&mut scaler, &p, 300, |_| 400.0, 0.02, 1);
        // The first decision jumps from the estimate: a trainer waiting 75% takes 4x.
        assert_eq!(decisions[0].1.from, 1);
        // 75% waiting (plus the measurement noise): 4 or 5.
        assert!(
            (4..=5).contains(&decisions[0].1.target),
            "{:?}",
            decisions[0]
        );
        assert!(decisions[0].1.why.contains("input-bound"));
        // Converged: 4 or 5 workers but for the patient down-probes to 3 (each undone at once).
        let settled = &sizes[20..];
        let off = settled.iter().filter(|&&n| !(4..=5).contains(&n)).count();
        assert!(
            settled.iter().all(|&n| (3..=5).contains(&n)) && off * 20 <= settled.len(),
            "the fleet left 4..5 after converging: {settled:?}"
        );
        // Converged: over the last 200 periods, only the rare patient down-probe and its undo.
        let late = decisions.iter().filter(|(t, _)| *t >= 100).count();
        assert!(
            late <= 6,
            "{late} decisions after converging: {decisions:#?}"
        );
    }

    #[test]
    fn a_trainer_that_slows_down_gets_fewer_workers() {
        let p = policy();
        let mut scaler = Scaler::new(1);
        let trainer = |t: usize| if t < 60 { 800.0 } else { 200.0 };
        let (sizes, decisions) = run(&mut scaler, &p, 250, trainer, 0.02, 2);
        assert!(
            (8..=9).contains(&sizes[59]),
            "before the slow-down the fleet serves 800/s: {sizes:?}"
        );
        let end = *sizes.last().unwrap_or(&0);
        assert!(
            (2..=3).contains(&end),
            "a 200/s trainer needs 2 workers: {sizes:?}\n{decisions:#?}"
        );
        assert!(
            decisions
                .iter()
                .any(|(t, d)| *t >= 60 && !d.is_up() && d.why.contains("does not wait"))
        );
        // Never below what the trainer needs for long: every undershoot is undone at once.
        for w in sizes[60..].windows(3) {
            assert!(w.iter().any(|&n| n >= 2), "{sizes:?}");
        }
    }

    #[test]
    fn noise_alone_does_not_flap() {
        // Trainer-bound at 4 workers with 3% noise on every measurement.
        let p = policy();
        let mut scaler = Scaler::new(4);
        let (sizes, decisions) = run(&mut scaler, &p, 400, |_| 380.0, 0.03, 3);
        let ups = decisions.iter().filter(|(_, d)| d.is_up()).count();
        assert!(
            decisions.len() <= 16,
            "{} decisions in 400 periods of noise: {decisions:#?}",
            decisions.len()
        );
        assert!(ups <= 8, "{decisions:#?}");
        // Never two changes in consecutive periods: every change is measured after settling.
        for pair in decisions.windows(2) {
            assert!(pair[1].0 > pair[0].0 + 1, "{decisions:#?}");
        }
        assert!(sizes.iter().all(|&n| (3..=5).contains(&n)), "{sizes:?}");
    }

    #[test]
    fn a_step_up_that_does_not_pay_is_undone_and_not_retried_soon() {
        // The trainer waits (its own link is slow), but more workers do not help: the rate
        // stays flat whatever the fleet.
        let p = policy();
        let mut scaler = Scaler::new(2);
        let mut decisions = Vec::new();
        let mut workers = 2;
        for t in 0..100 {
            let s = Sample {
                workers,
                rate: 150.0,
                wait: 0.5,
            };
            if let Some(d) = scaler.observe(s, &p) {
                workers = d.target;
                decisions.push((t, d));
            }
        }
        assert_eq!(decisions[0].1.target, 4, "{decisions:#?}");
        assert_eq!(decisions[1].1.target, 2, "undone: {decisions:#?}");
        assert!(decisions[1].1.why.contains("undone"));
        // Retried after the ceiling's hold, and each failure holds twice as long.
        let ups: Vec<usize> = decisions
            .iter()
            .filter(|(_, d)| d.is_up())
            .map(|(t, _)| *t)
            .collect();
        assert!(ups.len() <= 3, "retried within the hold: {decisions:#?}");
        assert!(
            ups.len() < 3 || ups[2] - ups[1] > ups[1] - ups[0],
            "{ups:?}"
        );
        assert!(
            ups.len() < 2 || ups[1] - ups[0] >= 4 * p.stable_periods as usize,
            "{ups:?}"
        );
    }

    #[test]
    fn a_fleet_the_actuator_cannot_reach_is_taken_as_it_is() {
        let p = policy();
        let mut scaler = Scaler::new(1);
        let input_bound = Sample {
            workers: 1,
            rate: 100.0,
            wait: 0.75,
        };
        // The first sample of a new load only lets the workers warm up.
        assert_eq!(scaler.observe(input_bound, &p), None);
        let d = scaler.observe(input_bound, &p).expect("a step up");
        assert_eq!(d.target, 4);
        // The fleet stays at 2 (no room for more): no decision is measured against it...
        let stuck = Sample {
            workers: 2,
            rate: 200.0,
            wait: 0.5,
        };
        for _ in 0..p.stable_periods - 1 {
            assert_eq!(scaler.observe(stuck, &p), None);
        }
        // ... until a stable period has passed: then 2 is the target and is measured.
        let _ = scaler.observe(stuck, &p);
        assert_eq!(scaler.target(), 2);
    }

    #[test]
    fn the_bounds_hold() {
        let p = ScalePolicy {
            min_workers: 2,
            max_workers: 3,
            ..ScalePolicy::default()
        };
        let mut scaler = Scaler::new(1);
        let one = Sample {
            workers: 1,
            rate: 100.0,
            wait: 0.9,
        };
        assert_eq!(scaler.observe(one, &p).map(|d| d.target), Some(2));
        let mut scaler = Scaler::new(1);
        let (sizes, _) = run(&mut scaler, &p, 100, |_| 1000.0, 0.0, 4);
        assert!(sizes.iter().all(|&n| (1..=3).contains(&n)), "{sizes:?}");
        assert_eq!(*sizes.last().unwrap_or(&0), 3);
        let mut scaler = Scaler::new(3);
        let (sizes, _) = run(&mut scaler, &p, 100, |_| 10.0, 0.0, 5);
        assert_eq!(
            *sizes.last().unwrap_or(&0),
            2,
            "never under the minimum: {sizes:?}"
        );
    }

    #[test]
    fn small_down_steps_do_not_add_up_past_the_limit() {
        // Each worker fewer makes the trainer wait 2 more points: under the 3-point limit one
        // step at a time, over it from where the descent began after two.
        let p = ScalePolicy {
            stable_periods: 2,
            ..policy()
        };
        let mut scaler = Scaler::new(8);
        let mut workers = 8;
        let mut sizes = Vec::new();
        for _ in 0..12 {
            let s = Sample {
                workers,
                rate: 500.0,
                wait: 0.02 * f64::from(8 - workers),
            };
            if let Some(d) = scaler.observe(s, &p) {
                workers = d.target;
            }
            sizes.push(workers);
        }
        assert!(sizes.contains(&6), "it probes two steps down: {sizes:?}");
        assert!(sizes.iter().all(|&n| n >= 6), "{sizes:?}");
        // 6 is judged from where the descent began (4 points) and undone at once.
        let first_six = sizes.iter().position(|&n| n == 6).unwrap_or(0);
        assert_eq!(sizes[first_six + 2], 7, "undone: {sizes:?}");
    }

    #[test]
    fn the_first_step_up_is_at_most_four_times_the_fleet() {
        let p = ScalePolicy {
            max_workers: 64,
            ..policy()
        };
        let mut scaler = Scaler::new(2);
        let starved = Sample {
            workers: 2,
            rate: 10.0,
            wait: 0.99,
        };
        assert_eq!(scaler.observe(starved, &p), None);
        let d = scaler.observe(starved, &p).expect("a step up");
        assert_eq!(d.target, 8, "{d:?}");
    }
}
