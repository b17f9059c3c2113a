//! `wss://`: the signaling listener with rustls, certificate and key from PEM files.
//!
//! Each handshake runs in its connection's own task with the header-read timeout (see
//! `listen`), so a client that stalls its handshake holds up nobody else's.

use crate::sync::lock;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio_rustls::rustls;
use tokio_rustls::TlsAcceptor;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The PEM held no certificate or no private key.
    #[error("{0}")]
    Pem(String),
    /// rustls refused the certificate and key.
    #[error("invalid certificate or key: {0}")]
    Rustls(#[from] rustls::Error),
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// A TLS acceptor for the certificate chain and private key in `cert` and `key` (PEM).
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read(cert)?)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem(format!("{}: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(TlsError::Pem(format!("{}: no certificate", cert.display())));
    }
    let key = PrivateKeyDer::from_pem_slice(&read(key)?)
        .map_err(|e| TlsError::Pem(format!("{}: no private key ({e})", key.display())))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(chain, key)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The certificate and key in force, reloadable (SIGHUP) without dropping anyone: a
/// reload swaps the acceptor that new handshakes use; connections already up keep theirs.
pub struct CertStore {
    cert: PathBuf,
    key: PathBuf,
    current: Mutex<TlsAcceptor>,
}

impl CertStore {
    /// Loads `cert` and `key` (PEM).
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<CertStore>, TlsError> {
        Ok(Arc::new(CertStore {
            current: Mutex::new(acceptor(cert, key)?),
            cert: cert.to_owned(),
            key: key.to_owned(),
        }))
    }

    /// Reads the files again. On error the previous certificate stays in force.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = acceptor(&self.cert, &self.key)?;
        *lock(&self.current) = fresh;
        Ok(())
    }

    /// The acceptor for a new handshake.
    pub fn acceptor(&self) -> TlsAcceptor {
        lock(&self.current).clone()
    }
}
