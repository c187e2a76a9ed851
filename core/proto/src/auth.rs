//! RPC tokens: which role may call which method, the server-side check of every call
//! ([`AuthLayer`], keyed by the gRPC path) and the client side that sends the process's token
//! on every call ([`SendToken`]).
//!
//! A token travels as `authorization: Bearer <token>`. A server with no accepted token for any
//! role checks nothing (the loopback default). Once one is configured, every call needs a token:
//! none, or one the server does not know, is `Unauthenticated`; a known token of a role the
//! method does not allow is `PermissionDenied`. Both are final for the caller (a wrong token
//! does not become right by retrying). A role whose token the server was not given cannot call
//! its methods at all.
//!
//! Tokens are compared by their SHA-256 digests in constant time, against every accepted token
//! (no early exit), so neither the timing of a refusal nor the length tells an attacker how much
//! of a guess was right.
//!
//! | role | methods |
//! | --- | --- |
//! | worker | `Dispatcher/RegisterWorker`, `Dispatcher/WorkerHeartbeat`, `Dispatcher/GetDataset` |
//! | trainer | `Dispatcher/GetOrCreateJob`, `Dispatcher/ClientHeartbeat`, `Dispatcher/ReleaseConsumer`, `Worker/GetElements` |
//! | admin | `Dispatcher/WatchStatus`, `Dispatcher/DrainWorker`, `Dispatcher/PinWorkers`, `ClusterControl/ListNodes`, `ClusterControl/Act` |

use std::path::Path;
use std::task::{Context, Poll};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::codegen::http;
use tonic::metadata::MetadataValue;

/// Why a token cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read {what} {}: {error}", path.display())]
    Read {
        what: &'static str,
        path: std::path::PathBuf,
        error: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

/// The metadata key a token travels in.
pub const TOKEN_HEADER: &str = "authorization";

/// Who a caller is, as its token says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A worker process talking to the dispatcher.
    Worker,
    /// A training client, talking to the dispatcher and to workers.
    Trainer,
    /// An operator or a tool acting for one: the dashboard, scenarios, the autoscaler's actuator.
    Admin,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Worker => "worker",
            Role::Trainer => "trainer",
            Role::Admin => "admin",
        }
    }

    /// The flag that gives a server this role's token.
    pub fn flag(self) -> &'static str {
        match self {
            Role::Worker => "--worker-token-file",
            Role::Trainer => "--trainer-token-file",
            Role::Admin => "--admin-token-file",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The role that may call the method at `path` (`/cachew.v1.Service/Method`); `None` for a
/// path no role may call.
pub fn role_for(path: &str) -> Option<Role> {
    let method = path.strip_prefix("/cachew.v1.")?;
    Some(match method {
        "Dispatcher/RegisterWorker" | "Dispatcher/WorkerHeartbeat" | "Dispatcher/GetDataset" => {
            Role::Worker
        }
        "Dispatcher/GetOrCreateJob"
        | "Dispatcher/ClientHeartbeat"
        | "Dispatcher/ReleaseConsumer"
        | "Worker/GetElements" => Role::Trainer,
        "Dispatcher/WatchStatus"
        | "Dispatcher/DrainWorker"
        | "Dispatcher/PinWorkers"
        | "ClusterControl/ListNodes"
        | "ClusterControl/Act" => Role::Admin,
        _ => return None,
    })
}

/// A shared secret, ready to send as a header value and to compare.
#[derive(Clone)]
pub struct Token {
    header: MetadataValue<tonic::metadata::Ascii>,
    digest: [u8; 32],
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    /// A token from its text; `what` names where it came from in errors.
    pub fn new(text: String, what: &str) -> Result<Token, TokenError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(TokenError::Invalid(format!("{what}: the token is empty")));
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::Invalid(format!(
                "{what}: a token is printable ASCII without spaces"
            )));
        }
        let header = MetadataValue::try_from(format!("Bearer {text}"))
            .map_err(|e| TokenError::Invalid(format!("{what}: not a valid header value: {e}")))?;
        Ok(Token {
            header,
            digest: Sha256::digest(text.as_bytes()).into(),
        })
    }

    /// The token in the file at `path` (surrounding whitespace ignored).
    pub fn read(path: &Path, what: &'static str) -> Result<Token, TokenError> {
        let text = std::fs::read_to_string(path).map_err(|error| TokenError::Read {
            what,
            path: path.to_path_buf(),
            error,
        })?;
        Token::new(text, &format!("{what} {}", path.display()))
    }

    /// Whether a presented token (the text after `Bearer `) is this one, in time independent
    /// of where they differ.
    fn matches(&self, presented: &[u8; 32]) -> bool {
        self.digest.ct_eq(presented).into()
    }
}

/// The tokens a server accepts, per role.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    by_role: Vec<(Role, Token)>,
}

/// Why a call was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No token, or one the server does not accept.
    Unauthenticated(String),
    /// A known token of a role the method does not allow.
    PermissionDenied(String),
}

impl Refusal {
    pub fn into_status(self) -> tonic::Status {
        match self {
            Refusal::Unauthenticated(m) => tonic::Status::unauthenticated(m),
            Refusal::PermissionDenied(m) => tonic::Status::permission_denied(m),
        }
    }
}

impl Tokens {
    pub fn insert(&mut self, role: Role, token: Token) {
        self.by_role.push((role, token));
    }

    pub fn is_empty(&self) -> bool {
        self.by_role.is_empty()
    }

    /// Whether a call to `path` carrying `header` (the `authorization` value, if any) may go
    /// on. With no tokens configured every call may.
    pub fn check(&self, path: &str, header: Option<&[u8]>) -> Result<(), Refusal> {
        if self.is_empty() {
            return Ok(());
        }
        let Some(header) = header else {
            return Err(Refusal::Unauthenticated(format!(
                "{path} needs a token (`authorization: Bearer TOKEN`, sent by --token-file); \
                 none was sent"
            )));
        };
        let Some(presented) = header.strip_prefix(b"Bearer ") else {
            return Err(Refusal::Unauthenticated(format!(
                "{path}: the authorization header is not `Bearer TOKEN`"
            )));
        };
        let digest: [u8; 32] = Sha256::digest(presented.trim_ascii()).into();
        // Every accepted token is compared: how long a refusal takes says nothing about which.
        // One secret may serve several roles (the same file given to several flags): the call
        // goes on if any of them may make it.
        let needed = role_for(path);
        let (mut known, mut allowed) = (None, false);
        for (r, token) in &self.by_role {
            if token.matches(&digest) {
                known = Some(*r);
                allowed |= needed == Some(*r);
            }
        }
        let Some(role) = known else {
            return Err(Refusal::Unauthenticated(format!(
                "{path}: the token sent is not one this server accepts"
            )));
        };
        match needed {
            Some(_) if allowed => Ok(()),
            Some(needed) => Err(Refusal::PermissionDenied(format!(
                "{path} needs a {needed} token; a {role} token was sent"
            ))),
            None => Err(Refusal::PermissionDenied(format!(
                "{path} is not a method any role may call"
            ))),
        }
    }
}

/// The server-side check of every call: a tower layer for `Server::builder().layer(..)`.
#[derive(Debug, Clone)]
pub struct AuthLayer {
    tokens: std::sync::Arc<Tokens>,
}

impl AuthLayer {
    pub fn new(tokens: Tokens) -> AuthLayer {
        AuthLayer {
            tokens: std::sync::Arc::new(tokens),
        }
    }
}

impl<S> tower_layer::Layer<S> for AuthLayer {
    type Service = Authorized<S>;

    fn layer(&self, inner: S) -> Authorized<S> {
        Authorized {
            inner,
            tokens: self.tokens.clone(),
        }
    }
}

/// A service behind [`AuthLayer`]: a refused call is answered with its status and never
/// reaches the service.
#[derive(Debug, Clone)]
pub struct Authorized<S> {
    inner: S,
    tokens: std::sync::Arc<Tokens>,
}

impl<S, B> tower_service::Service<http::Request<B>> for Authorized<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future =
        futures::future::Either<S::Future, futures::future::Ready<Result<S::Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let header = request.headers().get(TOKEN_HEADER).map(|v| v.as_bytes());
        match self.tokens.check(request.uri().path(), header) {
            Ok(()) => futures::future::Either::Left(self.inner.call(request)),
            Err(refusal) => {
                let status = refusal.into_status();
                tracing::warn!("refused a call: {}", status.message());
                futures::future::Either::Right(futures::future::ready(Ok(status.into_http())))
            }
        }
    }
}

/// The client side: sends the process's token (if any) on every call of a channel.
#[derive(Debug, Clone, Default)]
pub struct SendToken {
    token: Option<Token>,
}

impl SendToken {
    pub fn new(token: Option<Token>) -> SendToken {
        SendToken { token }
    }
}

impl tonic::service::Interceptor for SendToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.token {
            request
                .metadata_mut()
                .insert(TOKEN_HEADER, token.header.clone());
        }
        Ok(request)
    }
}

/// Whether a status is a refusal of the caller's credentials: retrying with the same token or
/// certificate cannot succeed, so callers fail loudly instead of retrying it as transient.
pub fn is_refusal(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
    ) || is_tls_refusal(status)
}

/// What rustls says, somewhere in a failed call's error chain, when the peer refused this
/// process's certificate (it sends a fatal alert). The transport reports these as any broken
/// connection (`Unavailable`, `Unknown`); retrying with the same certificate cannot succeed.
/// A server certificate this process cannot verify (`invalid peer certificate`) is not among
/// them: it may clear up (a clock not yet synchronised at boot, a load balancer's default
/// certificate while the dispatcher starts, an address reused), so it is retried.
const TLS_REFUSALS: &[&str] = &[
    "received fatal alert: CertificateRequired",
    "received fatal alert: BadCertificate",
    "received fatal alert: UnknownCA",
    "received fatal alert: CertificateUnknown",
    "received fatal alert: UnsupportedCertificate",
    "received fatal alert: CertificateRevoked",
    "received fatal alert: CertificateExpired",
    "received fatal alert: AccessDenied",
];

/// Whether a failed call's status (its message and every error in its source chain) says a
/// TLS certificate was refused ([`TLS_REFUSALS`]).
pub fn is_tls_refusal(status: &tonic::Status) -> bool {
    let mut text = status.message().to_string();
    let mut source = std::error::Error::source(status);
    while let Some(s) = source {
        text.push('\n');
        text.push_str(&s.to_string());
        source = s.source();
    }
    TLS_REFUSALS.iter().any(|m| text.contains(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(text: &str) -> Token {
        Token::new(text.to_string(), "test").expect("a token")
    }

    fn tokens() -> Tokens {
        let mut t = Tokens::default();
        t.insert(Role::Worker, token("w-secret"));
        t.insert(Role::Trainer, token("t-secret"));
        t.insert(Role::Admin, token("a-secret"));
        t
    }

    const REGISTER: &str = "/cachew.v1.Dispatcher/RegisterWorker";
    const JOB: &str = "/cachew.v1.Dispatcher/GetOrCreateJob";
    const ACT: &str = "/cachew.v1.ClusterControl/Act";

    #[test]
    fn each_role_calls_its_methods_and_only_those() {
        let t = tokens();
        assert_eq!(t.check(REGISTER, Some(b"Bearer w-secret")), Ok(()));
        assert_eq!(t.check(JOB, Some(b"Bearer t-secret")), Ok(()));
        assert_eq!(t.check(ACT, Some(b"Bearer a-secret")), Ok(()));
        assert!(matches!(
            t.check(REGISTER, Some(b"Bearer t-secret")),
            Err(Refusal::PermissionDenied(m)) if m.contains("needs a worker token")
        ));
        assert!(matches!(
            t.check(ACT, Some(b"Bearer t-secret")),
            Err(Refusal::PermissionDenied(_))
        ));
        assert!(matches!(
            t.check(JOB, Some(b"Bearer w-secret")),
            Err(Refusal::PermissionDenied(_))
        ));
    }

    #[test]
    fn missing_wrong_or_malformed_tokens_are_unauthenticated() {
        let t = tokens();
        for header in [
            None,
            Some(&b"Bearer w-secreT"[..]),
            Some(b"Bearer "),
            Some(b"w-secret"),
            Some(b"Basic w-secret"),
        ] {
            assert!(
                matches!(t.check(REGISTER, header), Err(Refusal::Unauthenticated(_))),
                "{header:?}"
            );
        }
        // A role whose token the server was not given is locked out.
        let mut only_trainers = Tokens::default();
        only_trainers.insert(Role::Trainer, token("t-secret"));
        assert!(
            only_trainers
                .check(REGISTER, Some(b"Bearer w-secret"))
                .is_err()
        );
        // Unknown methods are nobody's.
        assert!(matches!(
            t.check("/other.Svc/Call", Some(b"Bearer a-secret")),
            Err(Refusal::PermissionDenied(_))
        ));
    }

    #[test]
    fn one_shared_secret_serves_every_role_it_was_given_for() {
        let mut shared = Tokens::default();
        for role in [Role::Worker, Role::Trainer, Role::Admin] {
            shared.insert(role, token("one-secret"));
        }
        for path in [REGISTER, JOB, ACT] {
            assert_eq!(
                shared.check(path, Some(b"Bearer one-secret")),
                Ok(()),
                "{path}"
            );
        }
        // Shared by workers and trainers only: admin methods stay closed to it.
        let mut two = Tokens::default();
        two.insert(Role::Worker, token("wt-secret"));
        two.insert(Role::Trainer, token("wt-secret"));
        two.insert(Role::Admin, token("a-secret"));
        assert_eq!(two.check(JOB, Some(b"Bearer wt-secret")), Ok(()));
        assert!(matches!(
            two.check(ACT, Some(b"Bearer wt-secret")),
            Err(Refusal::PermissionDenied(_))
        ));
    }

    #[test]
    fn no_tokens_configured_checks_nothing() {
        assert_eq!(Tokens::default().check(ACT, None), Ok(()));
    }

    #[test]
    fn every_method_of_the_protocol_has_a_role() {
        let proto = include_str!("../proto/cachew.proto");
        let mut service = "";
        let mut seen = 0;
        for line in proto.lines().map(str::trim) {
            if let Some(rest) = line.strip_prefix("service ") {
                service = rest.trim_end_matches('{').trim();
            } else if let Some(rest) = line.strip_prefix("rpc ") {
                let method = rest.split('(').next().unwrap_or_default().trim();
                let path = format!("/cachew.v1.{service}/{method}");
                assert!(role_for(&path).is_some(), "{path} has no role");
                seen += 1;
            }
        }
        assert_eq!(seen, 12);
    }

    #[test]
    fn bad_token_texts_are_refused_with_where_they_came_from() {
        let e = Token::new("  \n".into(), "--token-file /x").expect_err("empty");
        assert!(e.to_string().contains("--token-file /x"), "{e}");
        assert!(Token::new("a b".into(), "x").is_err());
        assert!(Token::new(" ok-token\n".into(), "x").is_ok());
    }
}
