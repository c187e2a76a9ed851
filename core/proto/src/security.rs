//! Who may talk to this process, and whom it trusts: TLS (mutual where a CA is given to a
//! server) and the RPC tokens of [`crate::auth`]. One [`Security`] per process, set once from
//! the binary's [`SecurityFlags`] ([`configure`]) and read by [`crate::endpoint`],
//! [`crate::server`] and [`crate::incoming`], the one place channels and servers are built, so
//! no call site knows whether TLS or tokens are on.
//!
//! Without flags nothing changes: plain HTTP/2 and no token, as the local demo and the scenarios
//! run on loopback. A server bound to a non-loopback address without TLS or without tokens logs
//! a loud warning when it starts ([`warn_if_exposed`]).
//!
//! Certificates: a client verifies the server's certificate against the host it dials, which
//! is an IP address for cachew nodes (`127.0.0.x`, `10.x` namespace addresses, a pod IP): the
//! server's certificate needs that IP as a subject alternative name, or every client names the
//! expected DNS name with `--tls-server-name`. A server given `--tls-ca` requires a client
//! certificate signed by that CA on every connection (mutual TLS); a client given `--tls-ca`
//! trusts only that CA, and presents `--tls-cert` / `--tls-key` as its identity when given.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::auth::{Role, Token, Tokens};

/// Why the security flags cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error("cannot read {what} {}: {error}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Token(#[from] crate::auth::TokenError),
}

/// How long a TLS handshake may take before the connection is dropped (a peer that opens a
/// connection and sends nothing must not hold a slot).
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The TLS and token settings of a process, loaded and checked.
#[derive(Debug, Clone, Default)]
pub struct Security {
    /// How servers of this process accept connections (`None`: plain HTTP/2).
    pub(crate) server_tls: Option<ServerTlsConfig>,
    /// How clients of this process connect (`None`: plain HTTP/2).
    pub(crate) client_tls: Option<ClientTlsConfig>,
    /// Whether servers require a client certificate (mutual TLS).
    pub(crate) mutual: bool,
    /// The token this process sends on every call it makes.
    pub(crate) token: Option<Token>,
    /// The tokens this process's servers accept, per role (empty: no token required).
    pub(crate) accepted: Tokens,
}

/// Whether the process serves gRPC (a server needs an identity to speak TLS) or only calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// A daemon with servers (dispatcher, worker, cluster control) and clients.
    Serves,
    /// Only a client (the training client; the dashboard watching a cluster it did not start).
    CallsOnly,
}

impl Security {
    /// Plain HTTP/2, no tokens: today's loopback behaviour.
    pub fn none() -> Security {
        Security::default()
    }

    /// Whether clients of this process speak TLS.
    pub fn client_tls(&self) -> bool {
        self.client_tls.is_some()
    }

    /// Whether servers of this process speak TLS.
    pub fn server_tls(&self) -> bool {
        self.server_tls.is_some()
    }

    /// Whether servers of this process require a token on every call.
    pub fn tokens_required(&self) -> bool {
        !self.accepted.is_empty()
    }

    /// The token this process sends, if any.
    pub fn token(&self) -> Option<&Token> {
        self.token.as_ref()
    }

    /// The tokens servers of this process accept.
    pub fn accepted(&self) -> &Tokens {
        &self.accepted
    }

    /// Loads and checks the settings the flags name, for a process on `side`.
    pub fn load(flags: &SecurityFlags, side: Side) -> Result<Security, SecurityError> {
        let cert = flags
            .tls_cert
            .as_deref()
            .map(|p| read(p, "--tls-cert"))
            .transpose()?;
        let key = flags
            .tls_key
            .as_deref()
            .map(|p| read(p, "--tls-key"))
            .transpose()?;
        let ca = flags
            .tls_ca
            .as_deref()
            .map(|p| read(p, "--tls-ca"))
            .transpose()?;
        let identity = match (cert, key) {
            (Some(cert), Some(key)) => Some(Identity::from_pem(cert, key)),
            (None, None) => None,
            (Some(_), None) => {
                return Err(SecurityError::Invalid(
                    "--tls-cert needs --tls-key (the certificate's private key)".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(SecurityError::Invalid(
                    "--tls-key needs --tls-cert (the certificate of that key)".into(),
                ));
            }
        };
        if flags.tls_server_name.is_some() && ca.is_none() {
            return Err(SecurityError::Invalid(
                "--tls-server-name needs --tls-ca (the CA that signed the servers' certificates)"
                    .into(),
            ));
        }
        let mut security = Security::none();
        if let Some(identity) = &identity {
            let mut server = ServerTlsConfig::new()
                .identity(identity.clone())
                .timeout(HANDSHAKE_TIMEOUT);
            if let Some(ca) = &ca {
                server = server.client_ca_root(Certificate::from_pem(ca));
                security.mutual = true;
            }
            tonic::transport::Server::builder()
                .tls_config(server.clone())
                .map_err(|e| {
                    SecurityError::Invalid(format!(
                        "--tls-cert / --tls-key / --tls-ca are not a usable server identity: {}",
                        error_chain(&e)
                    ))
                })?;
            security.server_tls = Some(server);
        } else if ca.is_some() && side == Side::Serves {
            return Err(SecurityError::Invalid(
                "--tls-ca on a process that serves needs --tls-cert and --tls-key (its servers \
                 speak TLS only with an identity)"
                    .into(),
            ));
        }
        if let Some(ca) = &ca {
            let mut client = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(ca))
                .timeout(HANDSHAKE_TIMEOUT);
            if let Some(identity) = identity {
                client = client.identity(identity);
            }
            if let Some(name) = &flags.tls_server_name {
                client = client.domain_name(name.clone());
            }
            tonic::transport::Endpoint::from_static("https://127.0.0.1:1")
                .tls_config(client.clone())
                .map_err(|e| {
                    SecurityError::Invalid(format!(
                        "--tls-ca / --tls-cert / --tls-key are not a usable client \
                         configuration: {}",
                        error_chain(&e)
                    ))
                })?;
            security.client_tls = Some(client);
        } else if identity.is_some() && side == Side::CallsOnly {
            return Err(SecurityError::Invalid(
                "--tls-cert / --tls-key on a client need --tls-ca (the CA that signed the \
                 servers' certificates)"
                    .into(),
            ));
        }
        security.token = match (&flags.token_file, &flags.token) {
            (Some(path), _) => Some(Token::read(path, "--token-file")?),
            (None, Some(value)) => Some(Token::new(value.clone(), "CACHEW_TOKEN")?),
            (None, None) => None,
        };
        for (role, path) in [
            (Role::Worker, &flags.worker_token_file),
            (Role::Trainer, &flags.trainer_token_file),
            (Role::Admin, &flags.admin_token_file),
        ] {
            if let Some(path) = path {
                security
                    .accepted
                    .insert(role, Token::read(path, role.flag())?);
            }
        }
        Ok(security)
    }
}

fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, SecurityError> {
    std::fs::read(path).map_err(|error| SecurityError::Read {
        what,
        path: path.to_path_buf(),
        error,
    })
}

/// An error and its sources, one after the other.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

static SECURITY: RwLock<Option<Arc<Security>>> = RwLock::new(None);

/// Sets the process's security. Binaries call it once from their flags before they open any
/// connection; a launcher that runs clusters one after another (the scenario runner) sets the
/// settings of each before starting it. Channels and servers already built keep theirs.
pub fn configure(security: Security) {
    *SECURITY.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(security));
}

/// Sets the process's security like [`configure`] and returns the settings it replaces (for a
/// launcher that restores them once its cluster is gone).
pub fn replace(security: Security) -> Arc<Security> {
    SECURITY
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .replace(Arc::new(security))
        .unwrap_or_default()
}

/// Puts back settings [`replace`] returned.
pub fn restore(security: Arc<Security>) {
    *SECURITY.write().unwrap_or_else(|p| p.into_inner()) = Some(security);
}

/// The process's security (none unless [`configure`]d).
pub fn current() -> Arc<Security> {
    SECURITY
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .unwrap_or_default()
}

/// Logs a loud warning when a server listens beyond loopback without TLS or without tokens:
/// then anyone who reaches the port may register a worker, read another trainer's data or
/// kill nodes.
pub fn warn_if_exposed(address: SocketAddr, security: &Security) {
    if address.ip().is_loopback() {
        return;
    }
    let mut missing = Vec::new();
    if !security.server_tls() {
        missing.push("TLS (--tls-cert, --tls-key, --tls-ca)");
    }
    if !security.tokens_required() {
        missing.push("tokens (--worker-token-file, --trainer-token-file, --admin-token-file)");
    }
    if !missing.is_empty() {
        tracing::warn!(
            "SECURITY: listening on {address}, reachable beyond this host, without {}: anyone \
             who can reach this port can call every RPC (register workers, read jobs' data, \
             kill nodes). See the README's Security section.",
            missing.join(" and ")
        );
    }
}

/// Logs a loud warning (once per process) when this process calls a peer beyond loopback in
/// plaintext although it was given credentials: a token sent without TLS (`--token-file`
/// without `--tls-ca`) can be read off the wire, and a server identity without `--tls-ca` makes
/// this process's own calls plain.
pub fn warn_if_plaintext(address: &str, security: &Security) {
    static WARNED: std::sync::Once = std::sync::Once::new();
    if security.client_tls() || !(security.token.is_some() || security.server_tls()) {
        return;
    }
    if is_loopback_address(address) {
        return;
    }
    let (although, exposed) = if security.token.is_some() {
        ("sends a token", "the token and the data")
    } else {
        ("serves TLS", "the data")
    };
    WARNED.call_once(|| {
        tracing::warn!(
            "SECURITY: calling {address} without TLS (no --tls-ca) although this process \
             {although}: anyone on the path can read {exposed}. Give --tls-ca (the CA that \
             signed the servers' certificates)."
        );
    });
}

/// Whether `address` (`host:port`) names this host: a loopback IP or `localhost`.
fn is_loopback_address(address: &str) -> bool {
    let host = address
        .rsplit_once(':')
        .map_or(address, |(host, _)| host)
        .trim_start_matches('[')
        .trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The clap flags every binary offers for TLS and tokens.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SecurityFlags {
    /// PEM certificate (chain) of this process: its servers' TLS identity, and its client
    /// certificate where a server requires one. Servers' certificates need the IP address
    /// clients dial as a subject alternative name (or see --tls-server-name).
    #[arg(long, value_name = "PEM", env = "CACHEW_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "PEM", env = "CACHEW_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificate. Clients trust only servers whose certificate it signed; servers
    /// require every client to present a certificate it signed (mutual TLS).
    #[arg(long, value_name = "PEM", env = "CACHEW_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// The name clients expect in servers' certificates, instead of the host they dial (an IP
    /// address, matched against the certificate's IP subject alternative names).
    #[arg(long, value_name = "NAME", env = "CACHEW_TLS_SERVER_NAME")]
    pub tls_server_name: Option<String>,
    /// File holding the token this process sends on every call (its role's token: worker,
    /// trainer or admin). Surrounding whitespace is ignored.
    #[arg(long, value_name = "PATH", env = "CACHEW_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// The token this process sends, from the environment only (for containers); --token-file
    /// wins when both are set.
    #[arg(long, hide = true, env = "CACHEW_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// File holding the token this process's servers accept from workers (RegisterWorker,
    /// WorkerHeartbeat, GetDataset). Once any *-token-file is given, every call needs a token.
    #[arg(long, value_name = "PATH", env = "CACHEW_WORKER_TOKEN_FILE")]
    pub worker_token_file: Option<PathBuf>,
    /// File holding the token this process's servers accept from trainers (GetOrCreateJob,
    /// ClientHeartbeat, ReleaseConsumer, GetElements).
    #[arg(long, value_name = "PATH", env = "CACHEW_TRAINER_TOKEN_FILE")]
    pub trainer_token_file: Option<PathBuf>,
    /// File holding the token this process's servers accept from operators (WatchStatus,
    /// DrainWorker, PinWorkers, cluster control's ListNodes and Act).
    #[arg(long, value_name = "PATH", env = "CACHEW_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
}

impl SecurityFlags {
    /// Loads the settings and configures the process with them.
    pub fn apply(&self, side: Side) -> Result<(), SecurityError> {
        configure(Security::load(self, side)?);
        Ok(())
    }

    /// The command-line flags that give another process these settings (for a launcher that
    /// starts nodes with their credentials); the token of `CACHEW_TOKEN` is not passed on.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        let mut path = |flag: &str, p: &Option<PathBuf>| {
            if let Some(p) = p {
                args.push(flag.to_string());
                args.push(p.display().to_string());
            }
        };
        path("--tls-cert", &self.tls_cert);
        path("--tls-key", &self.tls_key);
        path("--tls-ca", &self.tls_ca);
        path("--token-file", &self.token_file);
        path("--worker-token-file", &self.worker_token_file);
        path("--trainer-token-file", &self.trainer_token_file);
        path("--admin-token-file", &self.admin_token_file);
        if let Some(name) = &self.tls_server_name {
            args.push("--tls-server-name".into());
            args.push(name.clone());
        }
        args
    }
}

#[cfg(test)]
mod tests {
    use super::is_loopback_address;

    #[test]
    fn loopback_addresses_are_this_host_and_others_are_not() {
        for a in ["127.0.0.1:50051", "127.0.0.9:1", "localhost:7", "[::1]:80"] {
            assert!(is_loopback_address(a), "{a}");
        }
        for a in [
            "10.0.0.2:50051",
            "[fe80::1]:80",
            "dispatcher:50051",
            "0.0.0.0:1",
        ] {
            assert!(!is_loopback_address(a), "{a}");
        }
    }
}
