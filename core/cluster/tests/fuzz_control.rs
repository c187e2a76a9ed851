//! Fuzz tests of cluster control's request decoding: `ActRequest` and `ListNodesRequest` from
//! arbitrary bytes and mutated valid requests, served by the real `ControlService` over a
//! backend that records what reaches it. A reply or a status naming what was wrong, and nothing
//! past the documented bounds (`MAX_NODES_PER_REQUEST`, `MAX_NODE_NAME`, `MAX_SCALE_COUNT`)
//! ever reaches a backend. See `cachew_fuzzing`.

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

use cachew_cluster::backend::{Backend, Targets};
use cachew_cluster::control::{
    ControlService, MAX_NODE_NAME, MAX_NODES_PER_REQUEST, MAX_SCALE_COUNT,
};
use cachew_fuzzing::{bounded, bytes, config};
use cachew_proto::v1;
use cachew_proto::v1::cluster_control_server::ClusterControl;
use proptest::prelude::*;
use prost::Message;
use tonic::Request;

#[global_allocator]
static ALLOCATOR: cachew_fuzzing::Allocator =
    cachew_fuzzing::allocator(cachew_fuzzing::MEMORY_LIMIT);

/// A backend that records every action it is asked for.
#[derive(Debug, Default, Clone)]
struct Recorder {
    acts: Arc<Mutex<Vec<(v1::Action, Targets, u32)>>>,
}

#[tonic::async_trait]
impl Backend for Recorder {
    async fn list(&self) -> Result<Vec<v1::NodeInfo>, String> {
        Ok(vec![v1::NodeInfo {
            name: "worker-1".into(),
            ..Default::default()
        }])
    }

    async fn act(&self, action: v1::Action, targets: &Targets, count: u32) -> Vec<String> {
        self.acts
            .lock()
            .unwrap()
            .push((action, targets.clone(), count));
        Vec::new()
    }
}

fn valid_acts() -> Vec<Vec<u8>> {
    [
        v1::ActRequest {
            action: v1::Action::Kill as i32,
            nodes: vec!["worker-1".into(), "worker-2".into()],
            ..Default::default()
        },
        v1::ActRequest {
            action: v1::Action::Scale as i32,
            role: v1::NodeRole::Worker as i32,
            count: 4,
            ..Default::default()
        },
        v1::ActRequest {
            action: v1::Action::Restart as i32,
            every_role: true,
            ..Default::default()
        },
    ]
    .iter()
    .map(Message::encode_to_vec)
    .collect()
}

fn check(data: Vec<u8>) {
    bounded("ClusterControl", move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let recorder = Recorder::default();
        let service = ControlService::with_backend(recorder.clone());
        runtime.block_on(async {
            if let Ok(req) = v1::ListNodesRequest::decode(&data[..]) {
                service.list_nodes(Request::new(req)).await.unwrap();
            }
            let Ok(req) = v1::ActRequest::decode(&data[..]) else {
                return;
            };
            if let Err(status) = service.act(Request::new(req)).await {
                assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
                assert!(!status.message().is_empty());
            }
        });
        for (action, targets, count) in recorder.acts.lock().unwrap().iter() {
            assert_ne!(*action, v1::Action::Unspecified);
            assert!(*count <= MAX_SCALE_COUNT);
            if let Targets::Named(names) = targets {
                assert!(names.len() <= MAX_NODES_PER_REQUEST);
                assert!(names.iter().all(|n| n.len() <= MAX_NODE_NAME));
            }
        }
    });
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn arbitrary_requests(data in bytes(96)) {
        check(data);
    }

    #[test]
    fn mutated_requests(data in cachew_fuzzing::mutated_from(valid_acts())) {
        check(data);
    }
}

#[test]
fn the_valid_requests_reach_the_backend() {
    for data in valid_acts() {
        let recorder = Recorder::default();
        let service = ControlService::with_backend(recorder.clone());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let req = v1::ActRequest::decode(&data[..]).unwrap();
        runtime.block_on(service.act(Request::new(req))).unwrap();
        assert_eq!(recorder.acts.lock().unwrap().len(), 1);
    }
}
