//! Certificates made at run time for tests and scenarios (feature `certs`): a throw-away CA and
//! the certificates it signs, each with the IP addresses its node is dialled at as subject
//! alternative names (and its name as a DNS name, for `--tls-server-name`). Nothing here is
//! meant for production: keys live only in the temporary directory of the run that made them.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// Why a certificate could not be made or written.
#[derive(Debug, thiserror::Error)]
#[error("certificate {what}: {reason}")]
pub struct CertError {
    what: String,
    reason: String,
}

fn fail(what: &str, reason: impl std::fmt::Display) -> CertError {
    CertError {
        what: what.to_string(),
        reason: reason.to_string(),
    }
}

/// A certificate authority that signs certificates for nodes and clients.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority").finish_non_exhaustive()
    }
}

/// A certificate and its private key, in PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

/// Where an [`Issued`] certificate was written.
#[derive(Debug, Clone)]
pub struct IssuedFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Authority {
    /// A new CA named `name`, with a fresh key.
    pub fn new(name: &str) -> Result<Authority, CertError> {
        let key = KeyPair::generate().map_err(|e| fail(name, e))?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| fail(name, e))?;
        params.distinguished_name = named(name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).map_err(|e| fail(name, e))?;
        Ok(Authority {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA's certificate (what `--tls-ca` names).
    pub fn ca_pem(&self) -> &str {
        &self.pem
    }

    /// Writes the CA's certificate to `path`.
    pub fn write_ca(&self, path: &Path) -> Result<(), CertError> {
        std::fs::write(path, &self.pem).map_err(|e| fail(&path.display().to_string(), e))
    }

    /// A certificate for `name`, valid as a server at `ips` (and DNS name `name`) and as a
    /// client.
    pub fn issue(&self, name: &str, ips: &[IpAddr]) -> Result<Issued, CertError> {
        let key = KeyPair::generate().map_err(|e| fail(name, e))?;
        let mut sans: Vec<String> = ips.iter().map(IpAddr::to_string).collect();
        sans.push(name.to_string());
        let mut params = CertificateParams::new(sans).map_err(|e| fail(name, e))?;
        params.distinguished_name = named(name);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| fail(name, e))?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

impl Issued {
    /// Writes `DIR/STEM.pem` and `DIR/STEM.key` (the key readable by its owner only).
    pub fn write(&self, dir: &Path, stem: &str) -> Result<IssuedFiles, CertError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let files = IssuedFiles {
            cert: dir.join(format!("{stem}.pem")),
            key: dir.join(format!("{stem}.key")),
        };
        let what = |p: &Path| p.display().to_string();
        std::fs::write(&files.cert, &self.cert_pem).map_err(|e| fail(&what(&files.cert), e))?;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&files.key)
            .and_then(|mut f| f.write_all(self.key_pem.as_bytes()))
            .map_err(|e| fail(&what(&files.key), e))?;
        Ok(files)
    }
}

fn named(name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn
}
