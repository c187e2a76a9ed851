//! Test support for the fuzz tests of every crate (`*/tests/fuzz_*.rs`): what they assert about
//! a parser, and the tools to assert it. Used as a dev-dependency only; it depends on no other
//! workspace crate.
//!
//! # What a fuzz test asserts
//! A parser of bytes from the disk or the network, given any input:
//! - returns (an `Err` naming what was wrong, or a value): it never panics;
//! - returns within [`TIME_LIMIT`] ([`bounded`]): it never loops;
//! - never makes the process hold more than its memory limit: each fuzz test binary installs
//!   an [`Allocator`] as its global allocator, with a limit a little above what its parsers may
//!   legitimately hold ([`MEMORY_LIMIT`] unless the test says why it needs more). An allocation
//!   sized by a corrupt length field then fails, and the test binary aborts with "memory
//!   allocation of N bytes failed".
//!
//! # Inputs
//! Arbitrary bytes find shallow bugs; [`mutated`] finds deeper ones by mutating a valid input
//! (bit flips, boundary values written over integers, cuts, insertions, duplicated ranges).
//! Formats with checksums mutate the bytes the checksum covers and then fix the checksum, so the
//! mutation reaches the parser behind it (each test does that for its format).
//!
//! JSON payloads (journal records, checkpoints, cursors, specs) are mutated as values too
//! ([`json::mutated`]): one leaf replaced by a boundary value or a value of another type, a key
//! removed, an array repeated, so the input parses as JSON and reaches the code behind it.
//!
//! # Regressions
//! An input that once broke a parser is kept as a file under the crate's `tests/corpus/<name>/`
//! and replayed by a test through [`corpus`]; proptest's own `proptest-regressions/` files are
//! replayed too.
//!
//! # Cost
//! Case counts are small (CI runs every fuzz test on each commit, in debug, on two cores), with a
//! fixed seed. Locally, `CACHEW_FUZZ_SCALE=N` runs N times as many cases and
//! `CACHEW_FUZZ_SEED=random` (or a number) other ones.

pub mod json;

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, RngSeed};

/// The global allocator of a fuzz test binary: the system allocator with a limit on the bytes
/// the process holds at once. Declare it with [`allocator`]:
/// ```ignore
/// #[global_allocator]
/// static ALLOCATOR: cachew_fuzzing::Allocator = cachew_fuzzing::allocator(cachew_fuzzing::MEMORY_LIMIT);
/// ```
pub type Allocator = cap::Cap<std::alloc::System>;

/// The process-wide limit of a fuzz test binary: far above what any test input needs (inputs
/// are kilobytes, the parsers' legitimate buffers a few megabytes, two tests run at once), far
/// below what a length field read from corrupt bytes asks for (gigabytes).
pub const MEMORY_LIMIT: usize = 512 * 1024 * 1024;

/// The longest one parse of a fuzz input may take (debug build, a shared two-core machine):
/// inputs are kilobytes, so anything near this is a loop or work quadratic in a length field.
pub const TIME_LIMIT: Duration = Duration::from_secs(10);

/// The system allocator with a `limit` on the bytes held at once.
pub const fn allocator(limit: usize) -> Allocator {
    cap::Cap::new(std::alloc::System, limit)
}

/// Runs `f` on a thread of its own (with the default 2 MiB stack, as the daemons' threads have)
/// and returns its result. Panics if `f` panics (with its payload) or does not return within
/// [`TIME_LIMIT`]; `what` names the call in that message. A call that loops is left running on
/// its thread: the test fails, and the process ends with it.
pub fn bounded<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::Builder::new()
        .name(format!("fuzz: {what}"))
        .spawn(move || {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            let _ = tx.send(result);
        })
        .unwrap_or_else(|e| panic!("{what}: cannot start a thread: {e}"));
    match rx.recv_timeout(TIME_LIMIT) {
        Ok(Ok(value)) => {
            let _ = thread.join();
            value
        }
        Ok(Err(payload)) => {
            let _ = thread.join();
            std::panic::resume_unwind(payload)
        }
        Err(_) => panic!(
            "{what}: no answer within {TIME_LIMIT:?} (a loop, or work sized by a corrupt field)"
        ),
    }
}

/// The seed of every fuzz test unless `CACHEW_FUZZ_SEED` says otherwise.
pub const DEFAULT_SEED: u64 = 16;

/// The proptest configuration of a fuzz test: `cases` cases (times `CACHEW_FUZZ_SCALE` when
/// set), shrinking bounded in time so a failure in CI reports promptly, and a fixed seed
/// ([`DEFAULT_SEED`], or `CACHEW_FUZZ_SEED=N`; `CACHEW_FUZZ_SEED=random` for a new one each run):
/// CI runs the same cases on every commit, so a failure there is a change of the code, never
/// of the luck, and replays exactly.
pub fn config(cases: u32) -> Config {
    let scale = std::env::var("CACHEW_FUZZ_SCALE")
        .ok()
        .and_then(|s| s.parse::<u32>().ok())
        .filter(|s| *s > 0)
        .unwrap_or(1);
    let rng_seed = match std::env::var("CACHEW_FUZZ_SEED").ok().as_deref() {
        Some("random") => RngSeed::Random,
        Some(n) => RngSeed::Fixed(
            n.parse()
                .unwrap_or_else(|_| panic!("CACHEW_FUZZ_SEED={n}: a number or `random`")),
        ),
        None => RngSeed::Fixed(DEFAULT_SEED),
    };
    Config {
        cases: cases.saturating_mul(scale),
        max_shrink_time: 60_000,
        rng_seed,
        ..Config::default()
    }
}

/// One edit of a byte string. Positions are [`Index`]es, scaled to the length at the time the
/// edit is applied, so a sequence of edits stays meaningful whatever the earlier ones did.
#[derive(Debug, Clone)]
pub enum Mutation {
    /// Flips one bit.
    FlipBit(Index, u8),
    /// Writes one byte.
    SetByte(Index, u8),
    /// Writes a boundary value as a little-endian u16, u32 or u64 (big-endian too: some formats
    /// are).
    SetU16(Index, u16),
    SetU32(Index, u32, bool),
    SetU64(Index, u64, bool),
    /// Cuts the input at a position.
    Truncate(Index),
    /// Inserts bytes at a position.
    Insert(Index, Vec<u8>),
    /// Removes up to `n` bytes from a position.
    Remove(Index, usize),
    /// Copies up to `n` bytes from one position to another (inserting them).
    Duplicate(Index, Index, usize),
}

/// Integers at the edges where length and count arithmetic breaks.
pub fn boundary_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(1),
        Just(0x7f),
        Just(0x80),
        Just(0xff),
        Just(0xffff),
        Just(0x7fff_ffff),
        Just(0x8000_0000),
        Just(u64::from(u32::MAX)),
        Just(1 << 32),
        Just(i64::MAX as u64),
        Just(1 << 63),
        Just(u64::MAX),
        Just(u64::MAX - 1),
        any::<u64>(),
        0u64..4096,
    ]
}

/// A random [`Mutation`].
pub fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<Index>(), 0u8..8).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        2 => (any::<Index>(), prop_oneof![Just(0u8), Just(0xff), Just(0x7f), Just(0x80), any::<u8>()])
            .prop_map(|(i, v)| Mutation::SetByte(i, v)),
        1 => (any::<Index>(), boundary_u64()).prop_map(|(i, v)| Mutation::SetU16(i, v as u16)),
        2 => (any::<Index>(), boundary_u64(), any::<bool>())
            .prop_map(|(i, v, be)| Mutation::SetU32(i, v as u32, be)),
        2 => (any::<Index>(), boundary_u64(), any::<bool>())
            .prop_map(|(i, v, be)| Mutation::SetU64(i, v, be)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        1 => (any::<Index>(), proptest::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        1 => (any::<Index>(), 1usize..64).prop_map(|(i, n)| Mutation::Remove(i, n)),
        1 => (any::<Index>(), any::<Index>(), 1usize..64)
            .prop_map(|(from, to, n)| Mutation::Duplicate(from, to, n)),
    ]
}

/// Applies one mutation in place.
pub fn apply(data: &mut Vec<u8>, mutation: &Mutation) {
    let len = data.len();
    // The position of an index in `data` (0 when empty) and in `0..=len` (for cuts and
    // insertions).
    let at = |i: &Index| if len == 0 { 0 } else { i.index(len) };
    let gap = |i: &Index| i.index(len + 1);
    let write = |data: &mut Vec<u8>, i: &Index, bytes: &[u8]| {
        if len == 0 {
            return;
        }
        let start = at(i).min(len.saturating_sub(bytes.len()));
        for (slot, byte) in data.iter_mut().skip(start).zip(bytes) {
            *slot = *byte;
        }
    };
    match mutation {
        Mutation::FlipBit(i, bit) => {
            if let Some(byte) = data.get_mut(at(i)) {
                *byte ^= 1 << (bit % 8);
            }
        }
        Mutation::SetByte(i, v) => write(data, i, &[*v]),
        Mutation::SetU16(i, v) => write(data, i, &v.to_le_bytes()),
        Mutation::SetU32(i, v, big) => {
            let bytes = if *big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            };
            write(data, i, &bytes);
        }
        Mutation::SetU64(i, v, big) => {
            let bytes = if *big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            };
            write(data, i, &bytes);
        }
        Mutation::Truncate(i) => data.truncate(gap(i)),
        Mutation::Insert(i, bytes) => {
            let at = gap(i);
            data.splice(at..at, bytes.iter().copied());
        }
        Mutation::Remove(i, n) => {
            let start = gap(i);
            let end = start.saturating_add(*n).min(len);
            if start < end {
                data.drain(start..end);
            }
        }
        Mutation::Duplicate(from, to, n) => {
            if len == 0 {
                return;
            }
            let start = at(from);
            let end = start.saturating_add(*n).min(len);
            let copy: Vec<u8> = data.get(start..end).map(<[u8]>::to_vec).unwrap_or_default();
            let to = gap(to);
            data.splice(to..to, copy);
        }
    }
}

/// One to four random mutations.
pub fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    proptest::collection::vec(mutation(), 1..=4)
}

/// `seed` with one to four random mutations applied.
pub fn mutated(seed: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    mutations().prop_map(move |edits| {
        let mut data = seed.clone();
        for edit in &edits {
            apply(&mut data, edit);
        }
        data
    })
}

/// One of `seeds` (chosen at random) with one to four random mutations applied.
pub fn mutated_from(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    assert!(!seeds.is_empty(), "mutated_from needs at least one seed");
    (any::<Index>(), mutations()).prop_map(move |(pick, edits)| {
        let mut data = seeds
            .get(pick.index(seeds.len()))
            .cloned()
            .unwrap_or_default();
        for edit in &edits {
            apply(&mut data, edit);
        }
        data
    })
}

/// Arbitrary bytes, up to `max` of them.
pub fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..=max)
}

/// The files of a corpus directory (`tests/corpus/<name>/` of the calling crate), sorted by
/// name, with their bytes. Panics if the directory is missing or empty: a corpus that silently
/// vanished would make its regression test pass without testing anything.
pub fn corpus(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let entries = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("corpus {}: cannot read it: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "corpus {} holds no file: its regression test would test nothing",
        dir.display()
    );
    files
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("corpus file {}: {e}", path.display()));
            (path, bytes)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    #[test]
    fn mutations_stay_in_bounds_and_change_something() {
        let seed: Vec<u8> = (0u8..64).collect();
        let mut runner = TestRunner::new(config(512));
        let mut changed = 0;
        for _ in 0..512 {
            let value = mutated(seed.clone())
                .new_tree(&mut runner)
                .unwrap()
                .current();
            if value != seed {
                changed += 1;
            }
        }
        // Writing a value equal to the byte already there changes nothing; most edits do.
        assert!(
            changed > 400,
            "only {changed} of 512 mutations changed the input"
        );
    }

    #[test]
    fn mutations_of_empty_input_do_not_panic() {
        let mut runner = TestRunner::new(config(256));
        for _ in 0..256 {
            let _ = mutated(Vec::new()).new_tree(&mut runner).unwrap().current();
        }
    }

    #[test]
    fn bounded_returns_values_and_reports_panics() {
        assert_eq!(bounded("add", || 2 + 2), 4);
        let caught = std::panic::catch_unwind(|| bounded("boom", || panic!("parser panicked")));
        assert!(caught.is_err());
    }
}
