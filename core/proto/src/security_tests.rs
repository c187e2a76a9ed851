//! The refusals of [`crate::security`] and [`crate::auth`] over real sockets: servers built by
//! [`crate::server_with`], clients by [`crate::endpoint_with`], certificates made by
//! [`crate::certs`]. Each test fails if the check it names were removed.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use tonic::{Request, Response, Status};

use crate::certs::Authority;
use crate::security::{Security, SecurityFlags, Side};
use crate::v1;
use crate::v1::cluster_control_client::ClusterControlClient;
use crate::v1::cluster_control_server::{ClusterControl, ClusterControlServer};
use crate::{WorkerClient, WorkerServer};

/// Answers every call (the check in front of it is what is tested).
#[derive(Debug, Default)]
struct Open;

#[tonic::async_trait]
impl ClusterControl for Open {
    async fn list_nodes(
        &self,
        _: Request<v1::ListNodesRequest>,
    ) -> Result<Response<v1::ListNodesResponse>, Status> {
        Ok(Response::new(v1::ListNodesResponse::default()))
    }

    async fn act(&self, _: Request<v1::ActRequest>) -> Result<Response<v1::ActResponse>, Status> {
        Ok(Response::new(v1::ActResponse::default()))
    }
}

#[tonic::async_trait]
impl crate::Worker for Open {
    async fn get_elements(
        &self,
        _: Request<v1::GetElementsRequest>,
    ) -> Result<Response<v1::GetElementsResponse>, Status> {
        Ok(Response::new(v1::GetElementsResponse::default()))
    }
}

/// Serves both services with `security` on a free loopback port; returns its address.
async fn serve(security: &Security, ip: Ipv4Addr) -> String {
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    let server = crate::server_with(security)
        .expect("server")
        .add_service(ClusterControlServer::new(Open))
        .add_service(WorkerServer::new(Open))
        .serve_with_incoming(crate::incoming(listener));
    tokio::spawn(server);
    address
}

struct Pki {
    dir: tempfile::TempDir,
    ca: PathBuf,
}

impl Pki {
    /// A CA, and a node certificate for 127.0.0.1 (also usable as a client's).
    fn new() -> Pki {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = Authority::new("test-ca").expect("CA");
        let ca_path = dir.path().join("ca.pem");
        ca.write_ca(&ca_path).expect("write CA");
        let localhost = [IpAddr::V4(Ipv4Addr::LOCALHOST)];
        for name in ["node", "trainer"] {
            ca.issue(name, &localhost)
                .expect("issue")
                .write(dir.path(), name)
                .expect("write");
        }
        ca.issue("elsewhere", &[IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))])
            .expect("issue")
            .write(dir.path(), "elsewhere")
            .expect("write");
        let rogue = Authority::new("rogue-ca").expect("CA");
        rogue
            .issue("rogue", &localhost)
            .expect("issue")
            .write(dir.path(), "rogue")
            .expect("write");
        Pki { dir, ca: ca_path }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Flags with `--tls-ca` and the identity `who` (none: no certificate).
    fn flags(&self, who: Option<&str>) -> SecurityFlags {
        SecurityFlags {
            tls_ca: Some(self.ca.clone()),
            tls_cert: who.map(|w| self.path(&format!("{w}.pem"))),
            tls_key: who.map(|w| self.path(&format!("{w}.key"))),
            ..SecurityFlags::default()
        }
    }

    fn token(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, format!("{text}\n")).expect("write token");
        path
    }
}

fn load(flags: &SecurityFlags, side: Side) -> Security {
    Security::load(flags, side).expect("security")
}

async fn list(address: &str, client: &Security) -> Result<(), Status> {
    let endpoint = crate::endpoint_with(address, client).map_err(|e| Status::internal(e.0))?;
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| Status::unavailable(format!("connect: {e:?}")))?;
    ClusterControlClient::new(channel)
        .list_nodes(v1::ListNodesRequest {})
        .await
        .map(|_| ())
}

async fn fetch(address: &str, client: &Security) -> Result<(), Status> {
    let endpoint = crate::endpoint_with(address, client).map_err(|e| Status::internal(e.0))?;
    WorkerClient::new(endpoint.connect_lazy())
        .get_elements(v1::GetElementsRequest::default())
        .await
        .map(|_| ())
}

#[tokio::test]
async fn mutual_tls_refuses_clients_without_a_certificate_of_its_ca() {
    let pki = Pki::new();
    let server = load(&pki.flags(Some("node")), Side::Serves);
    assert!(server.server_tls() && server.mutual);
    let address = serve(&server, Ipv4Addr::LOCALHOST).await;

    list(
        &address,
        &load(&pki.flags(Some("trainer")), Side::CallsOnly),
    )
    .await
    .expect("a client with a certificate of the CA is served");
    let no_cert = list(&address, &load(&pki.flags(None), Side::CallsOnly)).await;
    assert!(
        no_cert.is_err(),
        "a client without a certificate was served"
    );
    let rogue = list(&address, &load(&pki.flags(Some("rogue")), Side::CallsOnly)).await;
    assert!(rogue.is_err(), "a certificate of another CA was accepted");
    // A call (not only a connection) refused for its certificate is known as a refusal: callers
    // stop instead of retrying it forever as a broken connection.
    for who in [None, Some("rogue")] {
        let status = fetch(&address, &load(&pki.flags(who), Side::CallsOnly))
            .await
            .expect_err("served without a certificate of the CA");
        assert!(
            crate::auth::is_refusal(&status),
            "{who:?}: not recognised as a refusal: {status:?}"
        );
    }
    let plain = list(&address, &Security::none()).await;
    assert!(
        plain.is_err(),
        "a plain-text client was served by a TLS server"
    );
}

#[tokio::test]
async fn clients_verify_the_servers_ip_address_or_the_name_they_are_given() {
    let pki = Pki::new();
    // This server's certificate names 127.0.0.2 (and the DNS name `elsewhere`), not 127.0.0.1.
    let wrong_ip = load(&pki.flags(Some("elsewhere")), Side::Serves);
    let address = serve(&wrong_ip, Ipv4Addr::LOCALHOST).await;
    let client = load(&pki.flags(Some("trainer")), Side::CallsOnly);
    assert!(
        list(&address, &client).await.is_err(),
        "a certificate for another IP address was accepted"
    );
    // Not verifying the server's certificate is retried (it may clear up), not final.
    let status = fetch(&address, &client).await.expect_err("served");
    assert!(!crate::auth::is_refusal(&status), "{status:?}");
    let named = SecurityFlags {
        tls_server_name: Some("elsewhere".into()),
        ..pki.flags(Some("trainer"))
    };
    list(&address, &load(&named, Side::CallsOnly))
        .await
        .expect("--tls-server-name matches the certificate's DNS name");
    // A server without client authentication serves a client with only the CA.
    let one_way = SecurityFlags {
        tls_ca: None,
        ..pki.flags(Some("node"))
    };
    let server = load(&one_way, Side::Serves);
    assert!(server.server_tls() && !server.mutual);
    let address = serve(&server, Ipv4Addr::LOCALHOST).await;
    list(&address, &load(&pki.flags(None), Side::CallsOnly))
        .await
        .expect("TLS without client certificates");
}

#[tokio::test]
async fn tokens_are_required_and_each_role_reaches_only_its_methods() {
    let pki = Pki::new();
    let admin = pki.token("admin.token", "admin-secret");
    let trainer = pki.token("trainer.token", "trainer-secret");
    let worker = pki.token("worker.token", "worker-secret");
    let server = load(
        &SecurityFlags {
            admin_token_file: Some(admin.clone()),
            trainer_token_file: Some(trainer.clone()),
            worker_token_file: Some(worker.clone()),
            ..pki.flags(Some("node"))
        },
        Side::Serves,
    );
    let address = serve(&server, Ipv4Addr::LOCALHOST).await;
    let sending = |token: Option<&Path>| {
        load(
            &SecurityFlags {
                token_file: token.map(Path::to_path_buf),
                ..pki.flags(Some("trainer"))
            },
            Side::CallsOnly,
        )
    };
    let code = |r: Result<(), Status>| r.err().map(|s| s.code());

    assert_eq!(code(list(&address, &sending(Some(&admin))).await), None);
    assert_eq!(
        code(list(&address, &sending(None)).await),
        Some(tonic::Code::Unauthenticated)
    );
    let wrong = pki.token("wrong.token", "admin-secreT");
    assert_eq!(
        code(list(&address, &sending(Some(&wrong))).await),
        Some(tonic::Code::Unauthenticated)
    );
    // A trainer cannot drive cluster control; a worker cannot fetch a trainer's data.
    let denied = list(&address, &sending(Some(&trainer))).await.err();
    assert_eq!(
        denied.as_ref().map(Status::code),
        Some(tonic::Code::PermissionDenied)
    );
    assert!(
        denied.is_some_and(|s| s.message().contains("needs a admin token")),
        "the refusal names the role needed"
    );
    assert_eq!(code(fetch(&address, &sending(Some(&trainer))).await), None);
    assert_eq!(
        code(fetch(&address, &sending(Some(&worker))).await),
        Some(tonic::Code::PermissionDenied)
    );
    // Without TLS the same checks hold (tokens and TLS are independent).
    let plain_server = load(
        &SecurityFlags {
            trainer_token_file: Some(trainer.clone()),
            ..SecurityFlags::default()
        },
        Side::Serves,
    );
    let address = serve(&plain_server, Ipv4Addr::LOCALHOST).await;
    let plain_trainer = load(
        &SecurityFlags {
            token_file: Some(trainer.clone()),
            ..SecurityFlags::default()
        },
        Side::CallsOnly,
    );
    assert_eq!(code(fetch(&address, &plain_trainer).await), None);
    assert_eq!(
        code(fetch(&address, &Security::none()).await),
        Some(tonic::Code::Unauthenticated)
    );
    // A role the server holds no token for is locked out, even with a valid-looking token.
    assert_eq!(
        code(list(&address, &plain_trainer).await),
        Some(tonic::Code::PermissionDenied)
    );
}

#[test]
fn bad_flags_are_refused_with_what_is_wrong() {
    let pki = Pki::new();
    let err = |flags: SecurityFlags, side| {
        Security::load(&flags, side)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    let only_ca = pki.flags(None);
    assert!(Security::load(&only_ca, Side::CallsOnly).is_ok());
    assert!(err(only_ca, Side::Serves).contains("--tls-cert and --tls-key"));
    let no_key = SecurityFlags {
        tls_key: None,
        ..pki.flags(Some("node"))
    };
    assert!(err(no_key, Side::Serves).contains("--tls-key"));
    let mismatched = SecurityFlags {
        tls_key: Some(pki.path("rogue.key")),
        ..pki.flags(Some("node"))
    };
    assert!(!err(mismatched, Side::Serves).is_empty());
    let garbage = pki.token("garbage.pem", "not a certificate");
    let bad_ca = SecurityFlags {
        tls_ca: Some(garbage),
        ..pki.flags(Some("node"))
    };
    assert!(!err(bad_ca, Side::Serves).is_empty());
    let missing = SecurityFlags {
        token_file: Some(pki.path("absent.token")),
        ..SecurityFlags::default()
    };
    assert!(err(missing, Side::CallsOnly).contains("absent.token"));
    // No flags: plain and open, as on loopback today.
    let none = load(&SecurityFlags::default(), Side::Serves);
    assert!(!none.server_tls() && !none.client_tls() && !none.tokens_required());
}
