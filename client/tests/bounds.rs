//! A client configured beyond the wire's bounds is refused at start, naming the setting, the
//! bound and the value, instead of being refused by a server it would retry forever.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use cachew_client::{ClientConfig, ClientError, JobClient};
use cachew_pipeline::PipelineSpec;
use cachew_proto::limits::{MAX_CONSUMERS, MAX_FETCH_ELEMENTS};

fn config() -> ClientConfig {
    let spec_path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/specs/tf-sample.toml");
    // Nobody listens on port 1: a client that got past its checks would wait for a dispatcher.
    let mut config = ClientConfig::new(
        "127.0.0.1:1",
        "bounds",
        PipelineSpec::load(&spec_path).unwrap(),
    );
    config.connect_timeout = Duration::from_secs(30);
    config
}

async fn refused(config: ClientConfig) -> String {
    let started = Instant::now();
    match JobClient::connect(config).await {
        Ok(_) => panic!("connected"),
        Err(e @ ClientError::Config(_)) => {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "it waited first"
            );
            e.to_string()
        }
        Err(other) => panic!("not a configuration error: {other}"),
    }
}

#[tokio::test]
async fn consumers_and_fetch_sizes_over_the_wire_bounds_are_refused_at_start() {
    let mut c = config();
    c.num_consumers = MAX_CONSUMERS + 1;
    let message = refused(c).await;
    assert!(
        message.contains("num consumers") && message.contains("4097") && message.contains("4096"),
        "{message}"
    );
    let mut c = config();
    c.fetch_elements = MAX_FETCH_ELEMENTS + 1;
    let message = refused(c).await;
    assert!(
        message.contains("fetch elements")
            && message.contains("65537")
            && message.contains("65536"),
        "{message}"
    );
}
