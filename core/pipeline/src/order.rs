//! Deterministic splits and epoch order.
//!
//! Splits are consecutive ranges of `split_records` record ids (the last may be shorter). The
//! order of an epoch is a pure function of (number of records, split size, seed, epoch, shuffle):
//! - splits are sorted by a key drawn for (seed, epoch, split id);
//! - the records of a split are sorted by a key drawn for (seed, epoch, record id);
//! - the epoch is the concatenation of the splits in that order.
//!
//! Element `(epoch, split, index)` is the `index`-th record of `split` in its epoch order, so any
//! process can compute any element on its own, in any order, any number of times.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::rng::{Stream, order_key};

/// Identity of an element: which epoch, which split, which position in the split's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ElementId {
    pub epoch: u64,
    pub split: u32,
    pub index: u32,
}

impl std::fmt::Display for ElementId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "e{}/s{}/#{}", self.epoch, self.split, self.index)
    }
}

/// How a dataset is cut into splits and ordered per epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitPlan {
    pub num_records: u64,
    pub split_records: u32,
    pub shuffle: bool,
}

impl SplitPlan {
    pub fn new(num_records: u64, split_records: u32, shuffle: bool) -> SplitPlan {
        SplitPlan {
            num_records,
            split_records: split_records.max(1),
            shuffle,
        }
    }

    pub fn num_splits(&self) -> u32 {
        self.num_records.div_ceil(u64::from(self.split_records)) as u32
    }

    /// Record ids of `split`, in id order.
    pub fn split_range(&self, split: u32) -> Range<u64> {
        let start = u64::from(split) * u64::from(self.split_records);
        let end = (start + u64::from(self.split_records)).min(self.num_records);
        start.min(end)..end
    }

    pub fn split_len(&self, split: u32) -> u32 {
        let r = self.split_range(split);
        (r.end - r.start) as u32
    }

    /// The splits of `epoch` in delivery order.
    pub fn split_order(&self, seed: u64, epoch: u64) -> Vec<u32> {
        let mut splits: Vec<u32> = (0..self.num_splits()).collect();
        if self.shuffle {
            splits.sort_by_cached_key(|&s| {
                (order_key(seed, epoch, u64::from(s), Stream::SplitOrder), s)
            });
        }
        splits
    }

    /// The record ids of `split` in `epoch`, in delivery order.
    pub fn record_order(&self, seed: u64, epoch: u64, split: u32) -> Vec<u64> {
        let mut ids: Vec<u64> = self.split_range(split).collect();
        if self.shuffle {
            ids.sort_by_cached_key(|&id| (order_key(seed, epoch, id, Stream::RecordOrder), id));
        }
        ids
    }

    /// The full canonical order of an epoch: (element id, record id) for every record.
    pub fn epoch_order(&self, seed: u64, epoch: u64) -> Vec<(ElementId, u64)> {
        let mut out = Vec::with_capacity(self.num_records as usize);
        for split in self.split_order(seed, epoch) {
            for (index, record) in self
                .record_order(seed, epoch, split)
                .into_iter()
                .enumerate()
            {
                out.push((
                    ElementId {
                        epoch,
                        split,
                        index: index as u32,
                    },
                    record,
                ));
            }
        }
        out
    }
}

/// How many of an epoch's `num_splits` positions consumer `consumer` of `num_consumers` reads
/// (consumer c reads positions c, c + n, c + 2n, ...).
pub fn consumer_positions(num_splits: u32, consumer: u32, num_consumers: u32) -> u32 {
    if consumer >= num_splits {
        0
    } else {
        (num_splits - consumer).div_ceil(num_consumers.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_cover_every_record_once() {
        let plan = SplitPlan::new(103, 10, true);
        assert_eq!(plan.num_splits(), 11);
        assert_eq!(plan.split_range(10), 100..103);
        let mut all: Vec<u64> = plan.epoch_order(3, 0).into_iter().map(|(_, r)| r).collect();
        all.sort_unstable();
        assert_eq!(all, (0..103).collect::<Vec<_>>());
    }

    #[test]
    fn epochs_differ_and_repeat() {
        let plan = SplitPlan::new(500, 50, true);
        assert_eq!(plan.epoch_order(9, 1), plan.epoch_order(9, 1));
        assert_ne!(plan.epoch_order(9, 1), plan.epoch_order(9, 2));
        assert_ne!(plan.epoch_order(9, 1), plan.epoch_order(10, 1));
        let unshuffled = SplitPlan::new(500, 50, false);
        let ids: Vec<u64> = unshuffled
            .epoch_order(9, 1)
            .into_iter()
            .map(|(_, r)| r)
            .collect();
        assert_eq!(ids, (0..500).collect::<Vec<_>>());
    }

    #[test]
    fn empty_dataset_has_no_splits() {
        let plan = SplitPlan::new(0, 10, true);
        assert_eq!(plan.num_splits(), 0);
        assert!(plan.epoch_order(1, 0).is_empty());
    }
}
