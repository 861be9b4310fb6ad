//! HTTPS (and so `wss://` media) for `serve`: rustls with the ring provider, a certificate
//! chain and a private key from PEM files (`[server] tls_cert`, `tls_key`).
//!
//! Handshakes run on tasks of their own, each bounded by [`HANDSHAKE_TIMEOUT`], and only
//! finished ones reach the HTTP server: a client that opens a connection and never speaks
//! (or speaks plain HTTP to the TLS port) holds no one else up; it is dropped and counted
//! (`malformed{kind="tls_handshake"}` in `/metrics`).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::sources::Malformed;

/// Longest a client may take to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest certificate chain or key file read (a chain of ten 4096-bit certificates is
/// about 20 KB).
const MAX_PEM_BYTES: u64 = 1024 * 1024;
/// Finished handshakes waiting for the HTTP server to take them.
const READY_QUEUE: usize = 64;

/// The server's TLS settings from a PEM certificate chain (leaf first) and a PEM private key
/// (PKCS#8, PKCS#1 or SEC1). ALPN offers HTTP/1.1.
///
/// Errors name the file: unreadable, no certificate or key in it, or a key that does not
/// match the certificate.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor> {
    for (what, path) in [("certificate", cert), ("key", key)] {
        let m = std::fs::metadata(path)
            .with_context(|| format!("cannot read the TLS {what} {}", path.display()))?;
        if !m.is_file() {
            bail!(
                "the TLS {what} {} is not a regular file (a folder, a FIFO or a device)",
                path.display()
            );
        }
        if m.len() > MAX_PEM_BYTES {
            bail!(
                "the TLS {what} {} is {} bytes; a PEM {what} is a few KB (at most {MAX_PEM_BYTES} taken)",
                path.display(),
                m.len()
            );
        }
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("cannot read the TLS certificate {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("the TLS certificate {} is not valid PEM", cert.display()))?;
    if chain.is_empty() {
        bail!(
            "the TLS certificate {} holds no certificate (PEM \"BEGIN CERTIFICATE\" blocks)",
            cert.display()
        );
    }
    let private = PrivateKeyDer::from_pem_file(key).with_context(|| {
        format!(
            "cannot read a private key from {} (PEM: PKCS#8, PKCS#1 or SEC1)",
            key.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .with_context(|| {
            format!(
                "the TLS key {} does not go with the certificate {}",
                key.display(),
                cert.display()
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A listener whose connections have finished their TLS handshake (for `axum::serve`).
pub struct TlsListener {
    ready: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Accepts on `listener` and shakes hands on tasks of the current runtime.
    pub fn new(
        listener: TcpListener,
        acceptor: TlsAcceptor,
        malformed: Arc<Malformed>,
    ) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, ready) = tokio::sync::mpsc::channel(READY_QUEUE);
        tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors and the like: wait, do not spin.
                        tracing::warn!("accepting a connection: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                if tx.is_closed() {
                    return;
                }
                let (tx, acceptor, malformed) = (tx.clone(), acceptor.clone(), malformed.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => {
                            malformed.count("tls_handshake");
                            tracing::debug!("TLS handshake with {peer} failed: {e}");
                        }
                        Err(_) => {
                            malformed.count("tls_handshake");
                            tracing::debug!(
                                "TLS handshake with {peer} not finished in {} s",
                                HANDSHAKE_TIMEOUT.as_secs()
                            );
                        }
                    }
                });
            }
        });
        Ok(Self { ready, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accepting task ended (the runtime is going away): never resolve.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let e = format!("{:#}", acceptor(&cert, &key).err().unwrap());
        assert!(e.contains("cannot read the TLS certificate"), "{e}");
        std::fs::write(&cert, "not pem at all\n").unwrap();
        std::fs::write(&key, "not pem either\n").unwrap();
        let e = format!("{:#}", acceptor(&cert, &key).err().unwrap());
        assert!(e.contains("holds no certificate"), "{e}");
        // A device or a FIFO would be read forever: refused before reading.
        let e = format!(
            "{:#}",
            acceptor(Path::new("/dev/zero"), &key).err().unwrap()
        );
        assert!(e.contains("not a regular file"), "{e}");
        let made = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        std::fs::write(&cert, made.cert.pem()).unwrap();
        std::fs::write(
            &key,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let e = format!("{:#}", acceptor(&cert, &key).err().unwrap());
        assert!(e.contains("key.pem"), "{e}");
        let other = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        std::fs::write(&key, other.key_pair.serialize_pem()).unwrap();
        let e = format!("{:#}", acceptor(&cert, &key).err().unwrap());
        assert!(e.contains("does not go with the certificate"), "{e}");
        std::fs::write(&key, made.key_pair.serialize_pem()).unwrap();
        assert!(acceptor(&cert, &key).is_ok());
    }
}
