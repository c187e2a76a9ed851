//! Fuzz tests of the wire conversions: every message the services receive decodes from
//! arbitrary bytes without a panic (prost), and the conversions of decoded-but-arbitrary
//! messages into pipeline types (`element_from_wire`, `tensor_from_wire`,
//! `FetchFailure::from_status`, the vocabulary enums of `names`) return a value or a
//! `WireError` naming what was wrong. Elements are also mutated from valid encodings, so the
//! mutation reaches the tensor checks behind the protobuf layer. See `cachew_fuzzing`.

#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use cachew_fuzzing::{boundary_u64, bounded, bytes, config, mutated};
use cachew_pipeline::{DType, Element, ElementBody, ElementId, Tensor};
use cachew_proto::{element_from_wire, element_to_wire, names, tensor_from_wire, v1};
use proptest::prelude::*;
use prost::Message;

#[global_allocator]
static ALLOCATOR: cachew_fuzzing::Allocator =
    cachew_fuzzing::allocator(cachew_fuzzing::MEMORY_LIMIT);

/// Decodes `bytes` as every request and response message a process receives.
fn decode_every_message(bytes: &[u8]) {
    macro_rules! each {
        ($($t:ty),* $(,)?) => {$(
            if let Err(e) = <$t>::decode(bytes) {
                assert!(!e.to_string().is_empty());
            }
        )*};
    }
    each!(
        v1::RegisterWorkerRequest,
        v1::RegisterWorkerResponse,
        v1::WorkerHeartbeatRequest,
        v1::WorkerHeartbeatResponse,
        v1::GetDatasetRequest,
        v1::GetDatasetResponse,
        v1::GetOrCreateJobRequest,
        v1::GetOrCreateJobResponse,
        v1::ClientHeartbeatRequest,
        v1::ClientHeartbeatResponse,
        v1::ReleaseConsumerRequest,
        v1::DrainWorkerRequest,
        v1::DrainWorkerResponse,
        v1::PinWorkersRequest,
        v1::PinWorkersResponse,
        v1::WatchStatusRequest,
        v1::ClusterStatus,
        v1::GetElementsRequest,
        v1::GetElementsResponse,
        v1::FetchFailure,
        v1::ListNodesRequest,
        v1::ListNodesResponse,
        v1::ActRequest,
        v1::ActResponse,
    );
}

fn element() -> Element {
    Element {
        id: ElementId {
            epoch: 2,
            split: 7,
            index: 3,
        },
        record_id: 99,
        record_sha256: [5; 32],
        body: ElementBody::Example(vec![
            Tensor::from_f32(&[1.0, 2.0], vec![2]),
            Tensor::new(
                DType::Uint8,
                vec![2, 2, 1],
                Bytes::from_static(&[1, 2, 3, 4]),
            )
            .unwrap(),
        ]),
    }
}

/// Converts a decoded element: a value whose tensors hold exactly their bytes, or an error.
fn check_element(e: v1::ElementProto) {
    match element_from_wire(e) {
        Ok(element) => {
            if let ElementBody::Example(tensors) = &element.body {
                for t in tensors {
                    let want = t
                        .shape
                        .iter()
                        .try_fold(t.dtype.size(), |acc, &d| acc.checked_mul(d));
                    assert_eq!(want, Some(t.data.len()));
                }
            }
            // What converted converts back to the same message.
            let _ = element_to_wire(&element);
        }
        Err(e) => assert!(e.to_string().starts_with("malformed message: "), "{e}"),
    }
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn every_message_from_arbitrary_bytes(data in bytes(256)) {
        bounded("decode every message", move || decode_every_message(&data));
    }

    #[test]
    fn every_message_from_mutated_elements(data in mutated(v1::GetElementsResponse {
        elements: vec![element_to_wire(&element())],
        end_of_split: false,
        split_len: 50,
    }.encode_to_vec())) {
        bounded("decode every message", move || {
            decode_every_message(&data);
            if let Ok(reply) = v1::GetElementsResponse::decode(&data[..]) {
                for e in reply.elements {
                    check_element(e);
                }
            }
        });
    }

    #[test]
    fn tensors_with_arbitrary_shapes(
        dtype in prop_oneof![Just(0i32), Just(1), Just(2), Just(3), any::<i32>()],
        shape in proptest::collection::vec(boundary_u64(), 0..6),
        data in bytes(64),
    ) {
        let t = v1::TensorProto { dtype, shape, data: Bytes::from(data) };
        bounded("tensor_from_wire", move || match tensor_from_wire(t) {
            Ok(t) => {
                let want = t.shape.iter().try_fold(t.dtype.size(), |acc, &d| acc.checked_mul(d));
                assert_eq!(want, Some(t.data.len()));
                let _ = t.num_elements();
                let _ = t.row(0);
            }
            Err(e) => assert!(e.to_string().starts_with("malformed message: "), "{e}"),
        });
    }

    #[test]
    fn fetch_failures_in_status_details(
        code in 0i32..17,
        details in prop_oneof![bytes(64), mutated(v1::FetchFailure::deterministic(Some(4), "bad jpeg").encode_to_vec())],
    ) {
        let status = tonic::Status::with_details(tonic::Code::from_i32(code), "x", Bytes::from(details));
        bounded("FetchFailure::from_status", move || {
            if let Some(failure) = v1::FetchFailure::from_status(&status) {
                let _ = failure.is_final();
                let _ = failure.into_status();
            }
        });
    }

    #[test]
    fn vocabulary_values(raw in any::<i32>()) {
        // Raw enum values from the wire: a known one or an error naming it, never a panic.
        let _ = names::label::<v1::WorkerState>(raw);
        let _ = names::label::<v1::EventKind>(raw);
        let _ = names::label::<v1::CacheMode>(raw);
        let _ = names::label::<v1::DropReason>(raw);
        let _ = names::label::<v1::ProcessState>(raw);
        let _ = names::label::<v1::NodeRole>(raw);
        if let Err(e) = names::known::<v1::EventKind>(raw) {
            prop_assert!(e.to_string().contains(&raw.to_string()), "{}", e);
        }
    }
}

#[test]
fn the_seed_element_round_trips() {
    let e = element();
    let back = element_from_wire(element_to_wire(&e)).unwrap();
    assert_eq!(back.id, e.id);
    assert_eq!(back.record_sha256, e.record_sha256);
}
