//! Requests that decode but carry arbitrary values: every field of the dispatcher's requests
//! drawn from boundary values and from the ids a session really holds (so that a request can
//! name a real worker, job, consumer, epoch or lease with the rest of it wrong).

use cachew_fuzzing::boundary_u64;
use cachew_proto::v1;
use proptest::prelude::*;
use prost::Message;

use crate::rpc::Rpc;
use crate::session::Requests;

/// A real value or a boundary one.
fn near(real: u64) -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => Just(real),
        1 => Just(real + 1),
        1 => Just(real.saturating_sub(1)),
        2 => boundary_u64(),
    ]
}

fn small_u32() -> impl Strategy<Value = u32> {
    prop_oneof![
        6 => 0u32..8,
        1 => Just(u32::MAX),
        1 => Just(i32::MAX as u32),
        1 => any::<u32>(),
    ]
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("10.0.0.1:5051".to_string()),
        Just("x".repeat(5000)),
        "\\PC{0,12}",
    ]
}

fn key(job: u64) -> impl Strategy<Value = Option<v1::TaskKey>> {
    proptest::option::of(
        (near(job), near(0), small_u32()).prop_map(|(job_id, epoch, position)| v1::TaskKey {
            job_id,
            epoch,
            position,
        }),
    )
}

fn progress(job: u64) -> impl Strategy<Value = v1::TaskProgress> {
    (
        key(job),
        near(1),
        small_u32(),
        small_u32(),
        small_u32(),
        small_u32(),
        any::<bool>(),
    )
        .prop_map(
            |(key, lease, split, produced, acked, len, idle)| v1::TaskProgress {
                key,
                lease,
                split,
                produced,
                acked,
                len,
                idle,
            },
        )
}

fn cursor() -> impl Strategy<Value = Option<v1::Cursor>> {
    proptest::option::of(
        (near(0), small_u32(), small_u32()).prop_map(|(epoch, ordinal, index)| v1::Cursor {
            epoch,
            ordinal,
            index,
        }),
    )
}

fn encode<M: Message>(rpc: Rpc) -> impl Fn(M) -> (Rpc, Vec<u8>) {
    move |m| (rpc, m.encode_to_vec())
}

/// Any request of any RPC, with arbitrary field values.
pub fn request(seeds: &'static Requests) -> BoxedStrategy<(Rpc, Vec<u8>)> {
    let job = seeds.release.job_id;
    let worker = seeds.worker_heartbeat.worker_id;
    let generation = seeds.release.consumer_generation;
    prop_oneof![
        (
            text(),
            any::<bool>(),
            proptest::collection::vec(progress(job), 0..4),
            small_u32(),
            near(worker)
        )
            .prop_map(
                |(address, standby, tasks, threads, worker_id)| v1::RegisterWorkerRequest {
                    address,
                    standby,
                    tasks,
                    threads,
                    worker_id,
                }
            )
            .prop_map(encode(Rpc::RegisterWorker)),
        (
            near(worker),
            proptest::collection::vec(progress(job), 0..4),
            small_u32(),
            near(1),
            any::<bool>(),
            any::<bool>(),
            proptest::collection::vec(any::<u32>(), 0..3),
        )
            .prop_map(
                move |(worker_id, tasks, free_slots, incarnation, draining, left, committed)| {
                    v1::WorkerHeartbeatRequest {
                        worker_id,
                        tasks,
                        free_slots,
                        incarnation,
                        address: seeds.worker_heartbeat.address.clone(),
                        draining,
                        left,
                        cache: vec![v1::CacheReport {
                            job_id: job,
                            committed,
                            ..Default::default()
                        }],
                        ..Default::default()
                    }
                }
            )
            .prop_map(encode(Rpc::WorkerHeartbeat)),
        (
            near(seeds.job.seed),
            near(seeds.job.num_epochs),
            small_u32(),
            prop_oneof![Just(-1i32), Just(0), Just(1), any::<i32>()],
            any::<bool>(),
            cursor(),
            prop_oneof![0i32..5, any::<i32>()],
        )
            .prop_map(
                move |(
                    seed,
                    num_epochs,
                    num_consumers,
                    consumer_index,
                    resume,
                    cursor,
                    cache_policy,
                )| {
                    v1::GetOrCreateJobRequest {
                        // A new job half the time: the session's job is fixed in seed and shape.
                        job_name: if seed % 2 == 0 {
                            "other".into()
                        } else {
                            seeds.job.job_name.clone()
                        },
                        seed,
                        num_epochs,
                        num_consumers,
                        consumer_index,
                        resume,
                        cursor,
                        cache_policy,
                        ..seeds.job.clone()
                    }
                }
            )
            .prop_map(encode(Rpc::GetOrCreateJob)),
        (
            near(job),
            small_u32(),
            near(generation),
            cursor(),
            boundary_u64(),
            proptest::collection::vec(
                (near(0), small_u32(), near(1)).prop_map(|(epoch, position, lease)| {
                    v1::TaskLease {
                        epoch,
                        position,
                        lease,
                    }
                }),
                0..4,
            ),
            proptest::collection::vec(text(), 0..3),
            prop_oneof![
                Just(f64::NAN),
                Just(f64::INFINITY),
                Just(-1.0),
                Just(0.5),
                any::<f64>()
            ],
            proptest::collection::vec(
                (near(0), boundary_u64(), any::<f64>()).prop_map(|(epoch, examples, ips)| {
                    v1::EpochReport {
                        epoch,
                        examples,
                        images_per_sec: ips,
                        ..Default::default()
                    }
                }),
                0..3,
            ),
        )
            .prop_map(
                |(
                    job_id,
                    consumer_index,
                    consumer_generation,
                    cursor,
                    delivered_examples,
                    known,
                    unreachable_workers,
                    ratio,
                    reports,
                )| {
                    v1::ClientHeartbeatRequest {
                        job_id,
                        consumer_index,
                        consumer_generation,
                        cursor,
                        delivered_examples,
                        known,
                        unreachable_workers,
                        wait_seconds_total: ratio * 100.0,
                        input_wait_ratio: ratio,
                        reports,
                        ..Default::default()
                    }
                },
            )
            .prop_map(encode(Rpc::ClientHeartbeat)),
        (near(job), small_u32(), near(generation))
            .prop_map(
                |(job_id, consumer_index, consumer_generation)| v1::ReleaseConsumerRequest {
                    job_id,
                    consumer_index,
                    consumer_generation,
                }
            )
            .prop_map(encode(Rpc::ReleaseConsumer)),
        (near(worker), text())
            .prop_map(|(worker_id, address)| v1::DrainWorkerRequest { worker_id, address })
            .prop_map(encode(Rpc::DrainWorker)),
        proptest::option::of(small_u32())
            .prop_map(|workers| v1::PinWorkersRequest { workers })
            .prop_map(encode(Rpc::PinWorkers)),
        boundary_u64()
            .prop_map(|events_after| v1::WatchStatusRequest { events_after })
            .prop_map(encode(Rpc::WatchStatus)),
    ]
    .boxed()
}
