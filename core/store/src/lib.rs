//! Durable stores of Cachew-rs, both on fjall and both payload-agnostic (callers serialize):
//! the dispatcher's write-ahead [`Journal`] and a worker's [`CheckpointStore`].
//!
//! # Layout
//! - [`journal`]: [`Journal`], a gap-free sequence of records with group commit (one fsync per
//!   batch), compacted by snapshots of the caller's state; [`Recovery`] is what to replay.
//! - [`checkpoint`]: [`CheckpointStore`], periodic checksummed checkpoints (the last two kept)
//!   and a summary marker other processes read with [`CheckpointStore::peek`].
//! - [`frame`]: the checksummed value framing (length + CRC-32C) both stores use.
//! - [`fjall_journal`]: fjall's own journal format, and the check that runs on it before fjall
//!   opens it: a torn tail is cut and reported, damage before the tail is an error.
//! - `db`: the store directory (a lock file and `db/`, the fjall database) and engine settings.
//! - [`StoreError`]: the one error type; corruption names what and where.
//!
//! Every on-disk format is documented on the module that writes it, with its recovery rule.
//! Nothing here panics on data read from disk: every length is checked, and a value that fails
//! its checks is a [`StoreError::Corrupt`] naming the file and the sequence number, key or byte
//! offset. A store directory is opened by one store at a time (an advisory lock).

pub mod checkpoint;
mod db;
mod error;
pub mod fjall_journal;
pub mod frame;
pub mod journal;

pub use checkpoint::{Checkpoint, CheckpointStats, CheckpointStore, CheckpointSummary};
pub use db::{DB_DIR, LOCK_FILE};
pub use error::{Location, StoreError, io_is_disk_full};
pub use journal::{Journal, JournalOptions, JournalStats, Recovery};
