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
//!
//! Consumers: consumer `c` of `n` reads the epoch positions `c, c + n, c + 2n, ...` of every epoch,
//! epoch after epoch. [`ConsumerCursor`] is where a consumer stands in that sequence and
//! [`ConsumerOrder`] is the one implementation of its arithmetic (how many positions per epoch,
//! which position the n-th one is, the window of positions due next): the dispatcher assigns
//! with it and the client fetches with it, so both walk the same sequence.

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

/// A consumer's place in its sequence of positions: the epoch, the n-th of its positions in that
/// epoch (`ordinal`), and the index within that position's split of the next element. Everything
/// before it has been delivered. The dispatcher journals it, the client reports it and saves it
/// in its cursor file, and the wire carries it as `v1::Cursor`: its JSON form
/// (`{"epoch":..,"ordinal":..,"index":..}`) is part of those formats and must not change.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct ConsumerCursor {
    pub epoch: u64,
    /// The n-th of this consumer's positions in the epoch.
    pub ordinal: u32,
    /// Index within that position's split of the next element to deliver.
    pub index: u32,
}

/// One of a consumer's positions: the epoch, the n-th of the consumer's positions in it, and
/// the epoch position it is (the index into [`SplitPlan::split_order`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConsumerSlot {
    pub epoch: u64,
    pub ordinal: u32,
    pub position: u32,
}

/// The sequence of positions consumer `consumer` of `num_consumers` reads: positions `consumer,
/// consumer + n, ...` of each epoch's `num_splits`, for `num_epochs` epochs (0 = unbounded). It
/// owns the consumer-position arithmetic; it knows nothing of which split sits at a position
/// (that is [`SplitPlan::split_order`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumerOrder {
    num_splits: u32,
    consumer: u32,
    num_consumers: u32,
    num_epochs: u64,
}

impl ConsumerOrder {
    pub fn new(num_splits: u32, consumer: u32, num_consumers: u32, num_epochs: u64) -> Self {
        ConsumerOrder {
            num_splits,
            consumer,
            num_consumers: num_consumers.max(1),
            num_epochs,
        }
    }

    pub fn consumer(&self) -> u32 {
        self.consumer
    }

    /// At least 1.
    pub fn num_consumers(&self) -> u32 {
        self.num_consumers
    }

    /// 0 = unbounded.
    pub fn num_epochs(&self) -> u64 {
        self.num_epochs
    }

    /// How many positions this consumer reads per epoch.
    pub fn positions_per_epoch(&self) -> u32 {
        consumer_positions(self.num_splits, self.consumer, self.num_consumers)
    }

    /// The epoch position of this consumer's `ordinal`-th one.
    pub fn position(&self, ordinal: u32) -> u32 {
        self.consumer + ordinal * self.num_consumers
    }

    /// The ordinal of `position` among this consumer's positions (`position` must be one of
    /// them: see [`ConsumerOrder::owns`]).
    pub fn ordinal_of(&self, position: u32) -> u32 {
        position / self.num_consumers
    }

    /// Whether `position` is one of this consumer's.
    pub fn owns(&self, position: u32) -> bool {
        position % self.num_consumers == self.consumer
    }

    /// The same place with the ordinal inside the epoch: a cursor that stands at (or past) the
    /// end of an epoch moves to the start of the one it lands in. A consumer with no positions
    /// stands at the end of the job (epoch `num_epochs`, or where it is if that is later).
    pub fn normalize(&self, mut cursor: ConsumerCursor) -> ConsumerCursor {
        let per = self.positions_per_epoch();
        if per == 0 {
            return ConsumerCursor {
                epoch: self.num_epochs.max(cursor.epoch),
                ordinal: 0,
                index: 0,
            };
        }
        if cursor.ordinal >= per {
            cursor.epoch = cursor.epoch.saturating_add(u64::from(cursor.ordinal / per));
            cursor.ordinal %= per;
            cursor.index = 0;
        }
        cursor
    }

    /// Whether a consumer at `cursor` has consumed every epoch (never, for an unbounded job).
    pub fn is_done(&self, cursor: ConsumerCursor) -> bool {
        self.num_epochs > 0 && self.normalize(cursor).epoch >= self.num_epochs
    }

    /// Whether the position `ordinal` of `epoch` lies before `cursor` (was delivered).
    pub fn is_before(&self, epoch: u64, ordinal: u32, cursor: ConsumerCursor) -> bool {
        let cur = self.normalize(cursor);
        (epoch, ordinal) < (cur.epoch, cur.ordinal)
    }

    /// This consumer's positions from `cursor`'s on (its own first), in order, until the last
    /// epoch ends (forever for an unbounded job; nothing for a consumer with no positions).
    /// Take as many as the window holds.
    pub fn window(&self, cursor: ConsumerCursor) -> Window {
        let next = (self.positions_per_epoch() > 0).then(|| self.normalize(cursor));
        Window { order: *self, next }
    }
}

/// The positions [`ConsumerOrder::window`] walks.
#[derive(Debug, Clone)]
pub struct Window {
    order: ConsumerOrder,
    next: Option<ConsumerCursor>,
}

impl Iterator for Window {
    type Item = ConsumerSlot;

    fn next(&mut self) -> Option<ConsumerSlot> {
        let cur = self.next?;
        if self.order.num_epochs > 0 && cur.epoch >= self.order.num_epochs {
            self.next = None;
            return None;
        }
        self.next = Some(self.order.normalize(ConsumerCursor {
            ordinal: cur.ordinal + 1,
            ..cur
        }));
        Some(ConsumerSlot {
            epoch: cur.epoch,
            ordinal: cur.ordinal,
            position: self.order.position(cur.ordinal),
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

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

    /// The JSON form is part of the dispatcher journal and the client's cursor file.
    #[test]
    fn consumer_cursor_json_is_pinned() {
        let c = ConsumerCursor {
            epoch: 3,
            ordinal: 7,
            index: 12,
        };
        let json = r#"{"epoch":3,"ordinal":7,"index":12}"#;
        assert_eq!(serde_json::to_string(&c).unwrap(), json);
        assert_eq!(serde_json::from_str::<ConsumerCursor>(json).unwrap(), c);
    }

    /// Consumer `c`'s positions of one epoch, found by looking at every position.
    fn brute_positions(num_splits: u32, c: u32, n: u32) -> Vec<u32> {
        (0..num_splits).filter(|p| p % n.max(1) == c).collect()
    }

    /// Consumer `c`'s sequence over `epochs` epochs as (epoch, ordinal, position), by enumeration.
    fn brute_sequence(num_splits: u32, c: u32, n: u32, epochs: u64) -> Vec<ConsumerSlot> {
        let mine = brute_positions(num_splits, c, n);
        (0..epochs)
            .flat_map(|epoch| {
                mine.iter()
                    .enumerate()
                    .map(move |(k, &position)| ConsumerSlot {
                        epoch,
                        ordinal: k as u32,
                        position,
                    })
            })
            .collect()
    }

    proptest! {
        #[test]
        fn consumer_order_matches_an_enumeration(
            num_splits in 0u32..40,
            n in 0u32..6,
            c_pick in 0u32..6,
            num_epochs in 0u64..4,
            epoch in 0u64..5,
            ordinal_pick in 0u32..100,
            index in 0u32..5,
            window in 0usize..40,
        ) {
            let c = c_pick % n.max(1);
            let order = ConsumerOrder::new(num_splits, c, n, num_epochs);
            let mine = brute_positions(num_splits, c, n);
            let per = mine.len() as u32;
            prop_assert_eq!(order.positions_per_epoch(), per);
            prop_assert_eq!(consumer_positions(num_splits, c, n), per);
            for (k, &p) in mine.iter().enumerate() {
                prop_assert_eq!(order.position(k as u32), p);
                prop_assert_eq!(order.ordinal_of(p), k as u32);
            }
            for p in 0..num_splits {
                prop_assert_eq!(order.owns(p), mine.contains(&p));
            }
            // A cursor anywhere up to two epochs past its own epoch's end.
            let ordinal = ordinal_pick % (2 * per + 2);
            let cursor = ConsumerCursor { epoch, ordinal, index };
            let normalized = order.normalize(cursor);
            if per == 0 {
                prop_assert_eq!(
                    normalized,
                    ConsumerCursor { epoch: num_epochs.max(epoch), ordinal: 0, index: 0 }
                );
                prop_assert_eq!(order.window(cursor).count(), 0);
                prop_assert_eq!(order.is_done(cursor), num_epochs > 0);
            } else {
                // Walk forward one epoch at a time.
                let (mut e, mut o) = (epoch, ordinal);
                while o >= per {
                    e += 1;
                    o -= per;
                }
                let i = if ordinal < per { index } else { 0 };
                prop_assert_eq!(normalized, ConsumerCursor { epoch: e, ordinal: o, index: i });
                // The window is the enumerated sequence from the cursor's slot on.
                let epochs = if num_epochs == 0 { e + 3 } else { num_epochs };
                let expected: Vec<ConsumerSlot> = brute_sequence(num_splits, c, n, epochs)
                    .into_iter()
                    .filter(|s| (s.epoch, s.ordinal) >= (e, o))
                    .take(window)
                    .collect();
                let got: Vec<ConsumerSlot> = order.window(cursor).take(window).collect();
                if num_epochs == 0 {
                    prop_assert_eq!(&got[..expected.len().min(got.len())], &expected[..]);
                    prop_assert_eq!(got.len(), window);
                } else {
                    prop_assert_eq!(got, expected);
                }
                for s in brute_sequence(num_splits, c, n, epoch + 3) {
                    prop_assert_eq!(
                        order.is_before(s.epoch, s.ordinal, cursor),
                        (s.epoch, s.ordinal) < (e, o)
                    );
                }
                prop_assert_eq!(order.is_done(cursor), num_epochs > 0 && e >= num_epochs);
            }
        }
    }

    /// Every consumer of a job together reads each position of each epoch exactly once.
    #[test]
    fn consumers_partition_every_epoch() {
        for num_splits in 0..20 {
            for n in 1..5 {
                let mut seen: Vec<(u64, u32)> = (0..n)
                    .flat_map(|c| {
                        ConsumerOrder::new(num_splits, c, n, 2)
                            .window(ConsumerCursor::default())
                            .map(|s| (s.epoch, s.position))
                    })
                    .collect();
                seen.sort_unstable();
                let all: Vec<(u64, u32)> = (0..2)
                    .flat_map(|e| (0..num_splits).map(move |p| (e, p)))
                    .collect();
                assert_eq!(seen, all, "{num_splits} splits, {n} consumers");
            }
        }
    }

    #[test]
    fn empty_dataset_has_no_splits() {
        let plan = SplitPlan::new(0, 10, true);
        assert_eq!(plan.num_splits(), 0);
        assert!(plan.epoch_order(1, 0).is_empty());
    }
}
