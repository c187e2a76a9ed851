//! Fuzz tests of what the dispatcher decodes: every RPC request (arbitrary bytes and mutated
//! valid requests, decoded with prost and served by the real `DispatcherService` handlers), and
//! its journal (records and snapshots decoded by `durable`, then applied through `State::apply`
//! as replay does). See `cachew_fuzzing` for what is asserted: no panic, no loop, no allocation
//! past the limit, and an error that names what was wrong.

#![allow(clippy::unwrap_used)]

#[path = "../common/mod.rs"]
mod common;
mod fields;
mod journal;
mod rpc;
mod session;

#[global_allocator]
static ALLOCATOR: cachew_fuzzing::Allocator =
    cachew_fuzzing::allocator(cachew_fuzzing::MEMORY_LIMIT);
