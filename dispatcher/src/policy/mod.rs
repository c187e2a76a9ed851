//! Decisions taken on a timer or from soft measurements, as pure functions: they read the
//! [`State`](crate::state::State), the [`Soft`](crate::soft::Soft) facts and the time they are
//! given, and return [`Command`](crate::state::Command)s. The service applies those through
//! `State::apply` like every other command, so they are journaled and replayed like any other,
//! and every decision path is testable without sockets, clocks or disks.
//!
//! - [`liveness`]: dead and late workers, silent consumers, the dispatcher's own stalls.
//! - [`autoscale`]: how many workers the fleet needs (`Scaler::observe`).
//! - [`cache`]: when `auto` chooses between reading the cache and computing.
//! - [`retention`]: which finished or abandoned jobs, dead workers and unused datasets leave.

pub mod autoscale;
pub mod cache;
pub mod liveness;
pub mod retention;
