//! Cachew-rs wire protocol: the generated gRPC code of `proto/cachew.proto` and conversions
//! between wire messages and pipeline types.
//!
//! Conversions from the wire never panic: a malformed message becomes a [`WireError`].

#[allow(clippy::all, clippy::pedantic, missing_debug_implementations)]
pub mod v1 {
    tonic::include_proto!("cachew.v1");
}

pub mod auth;
pub mod backoff;
#[cfg(any(test, feature = "certs"))]
pub mod certs;
pub mod daemon;
pub mod limits;
pub mod names;
pub mod net;
pub mod security;

use cachew_pipeline::{DType, Element, ElementBody, ElementId, Tensor};

pub use v1::dispatcher_client::DispatcherClient;
pub use v1::dispatcher_server::{Dispatcher, DispatcherServer};
pub use v1::worker_client::WorkerClient;
pub use v1::worker_server::{Worker, WorkerServer};

/// Metadata key on a refused fetch: the lease the worker holds for the task. Leases only grow,
/// so a client whose lease is newer knows the worker has not caught up yet (and retries), and a
/// client whose lease is older knows its location is stale (and waits for a new one).
pub const HELD_LEASE_HEADER: &str = "cachew-held-lease";

/// Largest gRPC message we accept (element batches can be large).
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

/// How many finished epochs' reports a client sends with every heartbeat, and the dispatcher
/// keeps per consumer (for the status stream and the dashboard).
pub const EPOCH_REPORTS_KEPT: usize = 32;

/// HTTP/2 flow-control windows and frame size for element traffic. The defaults (64 KiB
/// windows, 16 KiB frames) cost a wake-up per 64 KiB on loopback and halve throughput.
const STREAM_WINDOW: u32 = 16 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 64 * 1024 * 1024;
const FRAME_SIZE: u32 = 1024 * 1024;

/// Between TCP keepalive probes (the kernel counts them in whole seconds).
const TCP_KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// A channel of this process: every call on it carries the process's token (if any), and it
/// speaks TLS when the process is configured for it ([`security`]).
pub type Channel =
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, auth::SendToken>;

/// Where a [`Channel`] connects, with the process's TLS settings and token.
#[derive(Debug, Clone)]
pub struct Endpoint {
    inner: tonic::transport::Endpoint,
    token: auth::SendToken,
}

impl Endpoint {
    /// Connects now.
    pub async fn connect(&self) -> Result<Channel, tonic::transport::Error> {
        let channel = self.inner.connect().await?;
        Ok(Channel::new(channel, self.token.clone()))
    }

    /// A channel that connects on its first call.
    pub fn connect_lazy(&self) -> Channel {
        Channel::new(self.inner.connect_lazy(), self.token.clone())
    }
}

/// A client endpoint to `address` (HOST:PORT) tuned for element traffic, which notices a
/// silent peer within the process's [`net::timeouts`] (keepalive pings, TCP keepalive, connect
/// timeout), and speaks TLS and sends a token as the process's [`security::current`] says.
pub fn endpoint(address: &str) -> Result<Endpoint, WireError> {
    endpoint_with(address, &security::current())
}

/// [`endpoint`] with explicit security settings.
pub fn endpoint_with(address: &str, security: &security::Security) -> Result<Endpoint, WireError> {
    let t = net::timeouts();
    let scheme = if security.client_tls() {
        "https"
    } else {
        "http"
    };
    let mut inner = tonic::transport::Endpoint::from_shared(format!("{scheme}://{address}"))
        .map_err(|e| WireError(format!("bad address `{address}`: {e}")))?
        .connect_timeout(t.connect_timeout)
        .http2_keep_alive_interval(t.keepalive_interval)
        .keep_alive_timeout(t.keepalive_timeout)
        .keep_alive_while_idle(true)
        .tcp_keepalive(Some(t.tcp_timeout))
        .tcp_keepalive_interval(Some(TCP_KEEPALIVE_INTERVAL))
        .tcp_keepalive_retries(Some(3))
        .tcp_nodelay(true)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(FRAME_SIZE);
    if let Some(tls) = &security.client_tls {
        inner = inner
            .tls_config(tls.clone())
            .map_err(|e| WireError(format!("TLS to `{address}`: {e}")))?;
    }
    security::warn_if_plaintext(address, security);
    Ok(Endpoint {
        inner,
        token: auth::SendToken::new(security.token().cloned()),
    })
}

/// Why [`connect_dispatcher`] gave up.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    BadAddress(#[from] WireError),
    #[error("dispatcher {address} unreachable for {seconds:.1} s: {error}")]
    Unreachable {
        address: String,
        seconds: f64,
        error: String,
    },
}

/// Connects to the dispatcher at `address`, retrying with `backoff` until `timeout` has passed
/// (a dispatcher that starts after its workers and clients is normal). The first failure is
/// logged; a bad address fails at once.
pub async fn connect_dispatcher(
    address: &str,
    timeout: std::time::Duration,
    mut backoff: backoff::Backoff,
) -> Result<DispatcherClient<Channel>, ConnectError> {
    let endpoint = endpoint(address)?;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let error = match endpoint.connect().await {
            Ok(ch) => {
                return Ok(DispatcherClient::new(ch)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES));
            }
            Err(e) => e,
        };
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some(delay) = backoff.next_delay_within(remaining) else {
            return Err(ConnectError::Unreachable {
                address: address.to_string(),
                seconds: timeout.as_secs_f64(),
                error: error.to_string(),
            });
        };
        if backoff.attempts() == 1 {
            tracing::info!("waiting for the dispatcher at {address} ({error})");
        }
        tokio::time::sleep(delay).await;
    }
}

/// A server builder of this process: every call is checked against its tokens
/// ([`auth::AuthLayer`]).
pub type Server =
    tonic::transport::Server<tower_layer::Stack<auth::AuthLayer, tower_layer::Identity>>;

/// A server builder tuned for element traffic, which pings its clients and drops a connection
/// whose client stays silent past the process's [`net::timeouts`], speaks TLS (mutual when a
/// CA is configured) and checks every call's token as the process's [`security::current`]
/// says.
pub fn server() -> Result<Server, tonic::transport::Error> {
    server_with(&security::current())
}

/// [`server`] with explicit security settings.
pub fn server_with(security: &security::Security) -> Result<Server, tonic::transport::Error> {
    let t = net::timeouts();
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &security.server_tls {
        builder = builder.tls_config(tls.clone())?;
    }
    Ok(builder
        .http2_keepalive_interval(Some(t.keepalive_interval))
        .http2_keepalive_timeout(Some(t.keepalive_timeout))
        .tcp_nodelay(true)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(FRAME_SIZE)
        .layer(auth::AuthLayer::new(security.accepted().clone())))
}

/// The connections accepted on `listener`, with Nagle's algorithm off. `Server::tcp_nodelay`
/// only applies to listeners tonic binds itself; on ours, without this, a reply written as
/// several frames waits for the peer's delayed ACK (40 ms on Linux) before its last frame.
/// Accepted connections inherit the listener's `TCP_USER_TIMEOUT` (replies unacknowledged past
/// [`net::NetTimeouts::tcp_timeout`] close the connection) and get TCP keepalive.
///
/// A listener beyond loopback without TLS or tokens is warned about loudly
/// ([`security::warn_if_exposed`]).
pub fn incoming(listener: tokio::net::TcpListener) -> tonic::transport::server::TcpIncoming {
    let t = net::timeouts();
    if let Ok(address) = listener.local_addr() {
        security::warn_if_exposed(address, &security::current());
    }
    if let Err(e) = socket2::SockRef::from(&listener).set_tcp_user_timeout(Some(t.tcp_timeout)) {
        tracing::warn!("cannot set TCP_USER_TIMEOUT on the listener: {e}");
    }
    tonic::transport::server::TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(t.tcp_timeout))
        .with_keepalive_interval(Some(TCP_KEEPALIVE_INTERVAL))
        .with_keepalive_retries(Some(3))
}

/// A wire message that does not describe a valid value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed message: {0}")]
pub struct WireError(pub String);

impl From<DType> for v1::DType {
    fn from(d: DType) -> Self {
        match d {
            DType::Uint8 => v1::DType::DtypeUint8,
            DType::Int64 => v1::DType::DtypeInt64,
            DType::Float32 => v1::DType::DtypeFloat32,
        }
    }
}

pub fn tensor_to_wire(t: &Tensor) -> v1::TensorProto {
    v1::TensorProto {
        dtype: v1::DType::from(t.dtype) as i32,
        shape: t.shape.iter().map(|&d| d as u64).collect(),
        data: t.data.clone(),
    }
}

pub fn tensor_from_wire(t: v1::TensorProto) -> Result<Tensor, WireError> {
    let dtype = match v1::DType::try_from(t.dtype) {
        Ok(v1::DType::DtypeUint8) => DType::Uint8,
        Ok(v1::DType::DtypeInt64) => DType::Int64,
        Ok(v1::DType::DtypeFloat32) => DType::Float32,
        _ => return Err(WireError(format!("unknown dtype {}", t.dtype))),
    };
    let shape = t
        .shape
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| WireError(format!("dimension {d} too large"))))
        .collect::<Result<Vec<_>, _>>()?;
    Tensor::new(dtype, shape, t.data).map_err(|e| WireError(e.to_string()))
}

pub fn element_to_wire(e: &Element) -> v1::ElementProto {
    let (tensors, skipped) = match &e.body {
        ElementBody::Example(ts) => (ts.iter().map(tensor_to_wire).collect(), String::new()),
        ElementBody::Skipped(reason) => (Vec::new(), reason.clone()),
    };
    v1::ElementProto {
        epoch: e.id.epoch,
        split: e.id.split,
        index: e.id.index,
        record_id: e.record_id,
        record_sha256: e.record_sha256.to_vec(),
        tensors,
        skipped,
    }
}

pub fn element_from_wire(e: v1::ElementProto) -> Result<Element, WireError> {
    let record_sha256: [u8; 32] = e
        .record_sha256
        .as_slice()
        .try_into()
        .map_err(|_| WireError(format!("record hash of {} bytes", e.record_sha256.len())))?;
    let body = if e.skipped.is_empty() {
        ElementBody::Example(
            e.tensors
                .into_iter()
                .map(tensor_from_wire)
                .collect::<Result<Vec<_>, _>>()?,
        )
    } else {
        ElementBody::Skipped(e.skipped)
    };
    Ok(Element {
        id: ElementId {
            epoch: e.epoch,
            split: e.split,
            index: e.index,
        },
        record_id: e.record_id,
        record_sha256,
        body,
    })
}

/// Bytes an element occupies on the wire (approximately: its tensor data).
pub fn element_bytes(e: &Element) -> usize {
    match &e.body {
        ElementBody::Example(ts) => ts.iter().map(|t| t.data.len()).sum(),
        ElementBody::Skipped(r) => r.len(),
    }
}

impl v1::TaskKey {
    pub fn new(job_id: u64, epoch: u64, position: u32) -> Self {
        v1::TaskKey {
            job_id,
            epoch,
            position,
        }
    }
}

impl std::fmt::Display for v1::TaskKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "job {} epoch {} position {}",
            self.job_id, self.epoch, self.position
        )
    }
}

/// The wire form of a consumer's place (every field is a plain number, so both ways are
/// total).
impl From<cachew_pipeline::ConsumerCursor> for v1::Cursor {
    fn from(c: cachew_pipeline::ConsumerCursor) -> v1::Cursor {
        v1::Cursor {
            epoch: c.epoch,
            ordinal: c.ordinal,
            index: c.index,
        }
    }
}

impl From<v1::Cursor> for cachew_pipeline::ConsumerCursor {
    fn from(c: v1::Cursor) -> cachew_pipeline::ConsumerCursor {
        cachew_pipeline::ConsumerCursor {
            epoch: c.epoch,
            ordinal: c.ordinal,
            index: c.index,
        }
    }
}

impl v1::FetchFailure {
    /// A record failed the pipeline under `on_error = "fail"`: final for the job.
    pub fn deterministic(record_id: Option<u64>, reason: impl Into<String>) -> Self {
        v1::FetchFailure {
            kind: v1::fetch_failure::Kind::DeterministicPipelineError as i32,
            record_id,
            reason: reason.into(),
        }
    }

    /// Whether this failure ends the job (no other worker could do better).
    pub fn is_final(&self) -> bool {
        self.kind() == v1::fetch_failure::Kind::DeterministicPipelineError
    }

    /// The status a worker answers with: the failure travels as the status details.
    pub fn into_status(self) -> tonic::Status {
        use prost::Message;
        let message = self.reason.clone();
        tonic::Status::with_details(
            tonic::Code::Aborted,
            message,
            bytes::Bytes::from(self.encode_to_vec()),
        )
    }

    /// The failure a status carries, if any. A status without one (or with details that do
    /// not decode) carries none: it is transient, whatever its code.
    pub fn from_status(status: &tonic::Status) -> Option<Self> {
        use prost::Message;
        if status.details().is_empty() {
            return None;
        }
        v1::FetchFailure::decode(status.details())
            .ok()
            .filter(|f| f.kind() != v1::fetch_failure::Kind::Unspecified)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn element_round_trip_and_bad_input() {
        let e = Element {
            id: ElementId {
                epoch: 2,
                split: 7,
                index: 3,
            },
            record_id: 99,
            record_sha256: [5; 32],
            body: ElementBody::Example(vec![
                Tensor::from_f32(&[1.0, 2.0], vec![2]),
                Tensor::from_i64(&[4], vec![]),
            ]),
        };
        assert_eq!(element_from_wire(element_to_wire(&e)).unwrap(), e);
        let mut bad = element_to_wire(&e);
        bad.tensors[0].data = Bytes::from_static(b"abc");
        assert!(element_from_wire(bad).is_err());
        let mut bad = element_to_wire(&e);
        bad.record_sha256.pop();
        assert!(element_from_wire(bad).is_err());
        let mut bad = element_to_wire(&e);
        bad.tensors[1].dtype = 42;
        assert!(element_from_wire(bad).is_err());
    }

    #[test]
    fn cursor_round_trip() {
        use cachew_pipeline::ConsumerCursor;

        let c = ConsumerCursor {
            epoch: u64::MAX,
            ordinal: 7,
            index: u32::MAX,
        };
        let wire = v1::Cursor::from(c);
        assert_eq!(
            (wire.epoch, wire.ordinal, wire.index),
            (u64::MAX, 7, u32::MAX)
        );
        assert_eq!(ConsumerCursor::from(wire), c);
        assert_eq!(
            ConsumerCursor::from(v1::Cursor::default()),
            ConsumerCursor::default()
        );
    }
}

#[cfg(test)]
mod fetch_failure_tests {
    use super::v1;

    #[test]
    fn a_typed_failure_survives_the_status_and_nothing_else_is_one() {
        let status = v1::FetchFailure::deterministic(Some(17), "record 17: bad JPEG").into_status();
        let back = v1::FetchFailure::from_status(&status).expect("a failure");
        assert!(back.is_final());
        assert_eq!(back.record_id, Some(17));
        assert_eq!(back.reason, "record 17: bad JPEG");
        // Codes alone, even Internal as a torn HTTP/2 stream reports, carry no failure.
        for code in [
            tonic::Code::Internal,
            tonic::Code::Unknown,
            tonic::Code::Aborted,
        ] {
            assert_eq!(
                v1::FetchFailure::from_status(&tonic::Status::new(code, "h2 protocol error")),
                None
            );
        }
        // Details that are not a failure are none either.
        let junk = tonic::Status::with_details(
            tonic::Code::Internal,
            "x",
            bytes::Bytes::from_static(&[0xff, 0xff, 0xff]),
        );
        assert_eq!(v1::FetchFailure::from_status(&junk), None);
    }
}

#[cfg(test)]
mod incoming_tests {
    use tokio_stream::StreamExt;

    /// Accepted connections have Nagle's algorithm off (with it on, a reply's last frame waited
    /// 40 ms for the peer's delayed ACK).
    #[tokio::test]
    async fn accepted_connections_have_nodelay() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let mut incoming = super::incoming(listener);
        let _client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let accepted = incoming
            .next()
            .await
            .expect("a connection")
            .expect("accepted");
        assert!(accepted.nodelay().expect("nodelay"));
    }
}

#[cfg(test)]
mod security_tests;
