//! TLS for the QUIC endpoint: a development certificate generated on first start (and its
//! SHA-256 fingerprint, which clients pin), or a real chain from files.

use std::{
    fs,
    path::{Path, PathBuf},
    sync::Arc,
};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, pem::PemObject};
use sha2::{Digest, Sha256};

/// Where the certificate comes from.
#[derive(Clone, Debug)]
pub enum CertSource {
    /// Generate (once) a self-signed certificate in `<data>/tls/`.
    Dev,
    /// A PEM certificate chain and private key.
    Files {
        /// The chain, leaf first.
        chain: PathBuf,
        /// The key.
        key: PathBuf,
    },
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// Reading or writing the certificate files failed.
    #[error("{path}: {source}")]
    Io {
        /// Which file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The files do not hold a usable certificate and key.
    #[error("certificate: {0}")]
    Invalid(String),
}

/// A certificate chain and key ready for rustls, with the leaf's fingerprint.
pub struct Identity {
    /// The chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The private key.
    pub key: PrivateKeyDer<'static>,
    /// SHA-256 of the leaf certificate, lower-case hex: what clients pin.
    pub fingerprint: String,
}

/// SHA-256 fingerprint of a DER certificate, lower-case hex.
pub fn fingerprint(cert: &[u8]) -> String {
    hex::encode(Sha256::digest(cert))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Loads the identity for `source`, generating the development one on first use.
pub fn load(source: &CertSource, data_dir: &Path) -> Result<Identity, TlsError> {
    match source {
        CertSource::Files { chain, key } => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(chain)
                .map_err(|e| TlsError::Invalid(format!("{}: {e}", chain.display())))?
                .collect::<Result<_, _>>()
                .map_err(|e| TlsError::Invalid(e.to_string()))?;
            let leaf = chain
                .first()
                .ok_or_else(|| TlsError::Invalid("empty certificate chain".into()))?;
            let fingerprint = fingerprint(leaf);
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| TlsError::Invalid(format!("{}: {e}", key.display())))?;
            Ok(Identity {
                chain,
                key,
                fingerprint,
            })
        }
        CertSource::Dev => {
            let dir = data_dir.join("tls");
            let (cert_path, key_path) = (dir.join("dev-cert.der"), dir.join("dev-key.der"));
            if !cert_path.exists() || !key_path.exists() {
                fs::create_dir_all(&dir).map_err(io(&dir))?;
                let generated = rcgen::generate_simple_self_signed(vec![
                    "localhost".to_owned(),
                    "sotto-signaling".to_owned(),
                ])
                .map_err(|e| TlsError::Invalid(e.to_string()))?;
                write_private(&key_path, &generated.signing_key.serialize_der())?;
                fs::write(&cert_path, generated.cert.der()).map_err(io(&cert_path))?;
            }
            let cert = fs::read(&cert_path).map_err(io(&cert_path))?;
            let key = fs::read(&key_path).map_err(io(&key_path))?;
            Ok(Identity {
                fingerprint: fingerprint(&cert),
                chain: vec![CertificateDer::from(cert)],
                key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
            })
        }
    }
}

/// Writes a secret file readable by its owner only (mode 0600), atomically.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(io(&tmp))?;
    fs::rename(&tmp, path).map_err(io(path))
}

/// The rustls server configuration: TLS 1.3 only, ALPN `sotto/1`.
pub fn server_config(id: Identity) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .map_err(|e| TlsError::Invalid(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(id.chain, id.key)
    .map_err(|e| TlsError::Invalid(e.to_string()))?;
    cfg.alpn_protocols = vec![sotto_proto::ALPN.to_vec()];
    Ok(Arc::new(cfg))
}
