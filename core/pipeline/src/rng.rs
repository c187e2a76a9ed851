//! Per-record random generators.
//!
//! Every random choice the pipeline makes for a record (its place in the epoch order, its crop
//! window, its flip) comes from a generator seeded by `(seed, epoch, record id, stream)`, never
//! from a shared stream, so the choice does not depend on which worker processes the record, in
//! which order, or how often. The seed material is SHA-256 of those values; the generator is
//! xoshiro256++ (value-stable across rand releases); conversions to floats and ranges are done
//! here with integer arithmetic so they are identical on every host.

use rand::SeedableRng;
use rand::rand_core::Rng;
use rand::rngs::Xoshiro256PlusPlus;
use sha2::{Digest, Sha256};

/// Which decision a generator is for. Streams keep decisions independent: adding an op does not
/// change another op's draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// A record's sort key within its split.
    RecordOrder,
    /// A split's sort key within its epoch (the "record id" is the split id).
    SplitOrder,
    /// The op at this index of the pipeline spec.
    Op(u32),
}

impl Stream {
    fn code(self) -> u64 {
        match self {
            Stream::RecordOrder => 1,
            Stream::SplitOrder => 2,
            Stream::Op(i) => 0x100 + u64::from(i),
        }
    }
}

/// A deterministic generator for one record and one decision.
#[derive(Debug, Clone)]
pub struct RecordRng {
    inner: Xoshiro256PlusPlus,
}

impl RecordRng {
    pub fn new(seed: u64, epoch: u64, id: u64, stream: Stream) -> RecordRng {
        let mut h = Sha256::new();
        h.update(b"cachew-rng/v1");
        h.update(seed.to_le_bytes());
        h.update(epoch.to_le_bytes());
        h.update(id.to_le_bytes());
        h.update(stream.code().to_le_bytes());
        let digest = h.finalize();
        let mut material = [0u8; 32];
        material.copy_from_slice(&digest);
        RecordRng {
            inner: Xoshiro256PlusPlus::from_seed(material),
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.inner.next_u64()
    }

    /// Uniform in [0, 1) with 53 bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [lo, hi).
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.next_f64()
    }

    /// Uniform integer in [0, n] (inclusive), by multiply-shift.
    pub fn below_inclusive(&mut self, n: u64) -> u64 {
        let span = u128::from(n) + 1;
        ((u128::from(self.next_u64()) * span) >> 64) as u64
    }
}

/// The sort key of `id` for `stream` in (seed, epoch): permutations sort by it.
pub fn order_key(seed: u64, epoch: u64, id: u64, stream: Stream) -> u64 {
    RecordRng::new(seed, epoch, id, stream).next_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_inputs_same_draws_and_streams_differ() {
        let a: Vec<u64> = {
            let mut r = RecordRng::new(7, 1, 42, Stream::Op(3));
            (0..4).map(|_| r.next_u64()).collect()
        };
        let b: Vec<u64> = {
            let mut r = RecordRng::new(7, 1, 42, Stream::Op(3));
            (0..4).map(|_| r.next_u64()).collect()
        };
        assert_eq!(a, b);
        assert_ne!(
            order_key(7, 1, 42, Stream::Op(3)),
            order_key(7, 1, 42, Stream::Op(4))
        );
        assert_ne!(
            order_key(7, 1, 42, Stream::RecordOrder),
            order_key(7, 2, 42, Stream::RecordOrder)
        );
    }

    const GOLDEN_FIRST_DRAW: u64 = 0x6f94_e059_8e6b_cbd4;

    #[test]
    fn golden_values_pin_the_generator() {
        // If this changes, every delivered order and crop changes: that is a format break.
        let mut r = RecordRng::new(1, 2, 3, Stream::RecordOrder);
        let got = r.next_u64();
        println!("golden {got:#018x}");
        assert_eq!(got, GOLDEN_FIRST_DRAW);
        let f = r.next_f64();
        assert!((0.0..1.0).contains(&f));
        for n in [0u64, 1, 5, 1000] {
            assert!(r.below_inclusive(n) <= n);
        }
    }
}
