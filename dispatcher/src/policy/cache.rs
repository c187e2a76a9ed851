//! The `auto` cache policy: once workers have measured enough prefix computations and cache
//! reads for a job, choose whichever is cheaper per element. Pure: it reads the job and its
//! measurements and returns the [`Command::DecideCache`] to apply, if any.

use crate::soft::CacheSoft;
use crate::state::{CacheDecision, CachePolicy, Command, Job};

/// Prefix computations measured before `auto` decides.
pub const AUTO_MIN_PREFIX_SAMPLES: u64 = 64;
/// Cache reads measured before `auto` decides.
pub const AUTO_MIN_READ_SAMPLES: u64 = 8;

/// The decision for an `auto` job that has not decided yet and has enough measurements: get
/// when a read costs less than a computation of the prefix, compute otherwise.
pub fn decide(job: &Job, measured: &CacheSoft) -> Option<Command> {
    if job.cache_policy != CachePolicy::Auto
        || job.cache_decision.is_some()
        || measured.prefix_count < AUTO_MIN_PREFIX_SAMPLES
        || measured.read_count < AUTO_MIN_READ_SAMPLES
    {
        return None;
    }
    let compute = measured.prefix_us * 1000 / measured.prefix_count.max(1);
    let read = measured.read_us * 1000 / measured.read_count.max(1);
    Some(Command::DecideCache {
        job: job.id,
        decision: CacheDecision {
            get: read < compute,
            compute_ns_per_element: compute,
            read_ns_per_element: read,
        },
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn job(policy: CachePolicy) -> Job {
        Job {
            id: 3,
            name: "j".into(),
            dataset_id: "ds".into(),
            seed: 1,
            num_epochs: 2,
            num_splits: 10,
            num_consumers: 1,
            consumers: Vec::new(),
            assignments: BTreeMap::new(),
            finished: false,
            cache_policy: policy,
            cache_decision: None,
        }
    }

    /// `prefix_us` over 64 computations, `read_us` over 8 reads.
    fn measured(prefix_us: u64, read_us: u64) -> CacheSoft {
        CacheSoft {
            prefix_us,
            prefix_count: AUTO_MIN_PREFIX_SAMPLES,
            read_us,
            read_count: AUTO_MIN_READ_SAMPLES,
            ..CacheSoft::default()
        }
    }

    #[test]
    fn a_compute_bound_prefix_reads_the_cache() {
        // 100 us per computed element, 5 us per element read.
        let got = decide(&job(CachePolicy::Auto), &measured(6_400, 40));
        assert_eq!(
            got,
            Some(Command::DecideCache {
                job: 3,
                decision: CacheDecision {
                    get: true,
                    compute_ns_per_element: 100_000,
                    read_ns_per_element: 5_000,
                },
            })
        );
    }

    #[test]
    fn a_read_bound_cache_keeps_computing() {
        // 2 us per computed element, 50 us per element read.
        let got = decide(&job(CachePolicy::Auto), &measured(128, 400));
        assert_eq!(
            got,
            Some(Command::DecideCache {
                job: 3,
                decision: CacheDecision {
                    get: false,
                    compute_ns_per_element: 2_000,
                    read_ns_per_element: 50_000,
                },
            })
        );
    }

    #[test]
    fn no_decision_before_enough_samples_after_one_or_for_fixed_policies() {
        let mut few = measured(6_400, 40);
        few.read_count = AUTO_MIN_READ_SAMPLES - 1;
        assert_eq!(decide(&job(CachePolicy::Auto), &few), None);
        let mut few = measured(6_400, 40);
        few.prefix_count = AUTO_MIN_PREFIX_SAMPLES - 1;
        assert_eq!(decide(&job(CachePolicy::Auto), &few), None);
        let mut decided = job(CachePolicy::Auto);
        decided.cache_decision = Some(CacheDecision {
            get: false,
            compute_ns_per_element: 1,
            read_ns_per_element: 2,
        });
        assert_eq!(decide(&decided, &measured(6_400, 40)), None);
        for fixed in [CachePolicy::Compute, CachePolicy::Put, CachePolicy::Get] {
            assert_eq!(decide(&job(fixed), &measured(6_400, 40)), None);
        }
    }
}
