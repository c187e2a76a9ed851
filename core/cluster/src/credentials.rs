//! Credentials of a secured local cluster ([`crate::LocalClusterBuilder::secure`]): a fresh CA,
//! certificates and role tokens made at launch under the run directory (`tls/`), and the flags
//! that give each node its share: the dispatcher accepts the three roles' tokens, workers send
//! the worker token and accept the trainer token, clients send the trainer token, and the
//! launching process (its status follower, its cluster-control endpoint, its scaler) holds the
//! admin token. Every connection is mutual TLS. Nothing is kept after the run.
//!
//! Certificates name 127.0.0.1 (loopback nodes are verified by IP address) and the DNS name
//! [`NODE_NAME`], which clients expect with `--tls-server-name` when nodes run in network
//! namespaces (their addresses are not known before launch).

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use cachew_proto::certs::{Authority, IssuedFiles};
use cachew_proto::security::SecurityFlags;

use crate::{ClusterError, Result};

/// The DNS name in every node's certificate.
pub const NODE_NAME: &str = "cachew-node";

/// The files of a secured cluster's credentials.
#[derive(Debug, Clone)]
pub struct Credentials {
    ca: PathBuf,
    node: IssuedFiles,
    trainer: IssuedFiles,
    admin: IssuedFiles,
    worker_token: PathBuf,
    trainer_token: PathBuf,
    admin_token: PathBuf,
    /// Clients expect [`NODE_NAME`] rather than the address they dial.
    by_name: bool,
}

fn invalid(e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Invalid(format!("cluster credentials: {e}"))
}

impl Credentials {
    /// Makes a CA, the certificates of nodes, trainers and the launcher, and one token per role,
    /// under `dir` (created). `by_name`: nodes are verified by [`NODE_NAME`], not by address.
    pub fn create(dir: &Path, by_name: bool) -> Result<Credentials> {
        std::fs::create_dir_all(dir)?;
        let authority = Authority::new("cachew-test-ca").map_err(invalid)?;
        let ca = dir.join("ca.pem");
        authority.write_ca(&ca).map_err(invalid)?;
        let loopback = [IpAddr::V4(Ipv4Addr::LOCALHOST)];
        let issue = |name: &str, stem: &str| -> Result<IssuedFiles> {
            authority
                .issue(name, &loopback)
                .and_then(|i| i.write(dir, stem))
                .map_err(invalid)
        };
        Ok(Credentials {
            ca,
            node: issue(NODE_NAME, "node")?,
            trainer: issue("cachew-trainer", "trainer")?,
            admin: issue("cachew-admin", "admin")?,
            worker_token: token(dir, "worker")?,
            trainer_token: token(dir, "trainer")?,
            admin_token: token(dir, "admin")?,
            by_name,
        })
    }

    fn tls(&self, identity: &IssuedFiles) -> SecurityFlags {
        SecurityFlags {
            tls_cert: Some(identity.cert.clone()),
            tls_key: Some(identity.key.clone()),
            tls_ca: Some(self.ca.clone()),
            tls_server_name: self.by_name.then(|| NODE_NAME.to_string()),
            ..SecurityFlags::default()
        }
    }

    /// The dispatcher's: it accepts every role's token.
    pub fn dispatcher(&self) -> SecurityFlags {
        SecurityFlags {
            worker_token_file: Some(self.worker_token.clone()),
            trainer_token_file: Some(self.trainer_token.clone()),
            admin_token_file: Some(self.admin_token.clone()),
            ..self.tls(&self.node)
        }
    }

    /// A worker's: it sends the worker token and serves trainers.
    pub fn worker(&self) -> SecurityFlags {
        SecurityFlags {
            token_file: Some(self.worker_token.clone()),
            trainer_token_file: Some(self.trainer_token.clone()),
            ..self.tls(&self.node)
        }
    }

    /// A training client's: it sends the trainer token.
    pub fn client(&self) -> SecurityFlags {
        SecurityFlags {
            token_file: Some(self.trainer_token.clone()),
            ..self.tls(&self.trainer)
        }
    }

    /// The launching process's: it sends the admin token and accepts it on its cluster-control
    /// endpoint.
    pub fn launcher(&self) -> SecurityFlags {
        SecurityFlags {
            token_file: Some(self.admin_token.clone()),
            admin_token_file: Some(self.admin_token.clone()),
            ..self.tls(&self.admin)
        }
    }

    /// The token files by role name (`worker`, `trainer`, `admin`), for tests that call nodes.
    pub fn token_file(&self, role: cachew_proto::auth::Role) -> &Path {
        match role {
            cachew_proto::auth::Role::Worker => &self.worker_token,
            cachew_proto::auth::Role::Trainer => &self.trainer_token,
            cachew_proto::auth::Role::Admin => &self.admin_token,
        }
    }
}

/// A random token (32 bytes from the kernel, in hex) in `DIR/ROLE.token`, readable by its owner
/// only.
fn token(dir: &Path, role: &str) -> Result<PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    let text: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let path = dir.join(format!("{role}.token"));
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)?
        .write_all(text.as_bytes())?;
    Ok(path)
}
