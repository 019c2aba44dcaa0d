//! TLS for the federation listener (rustls, ring provider).
//!
//! [`TlsListener`] plugs into `axum::serve`: a background task accepts TCP
//! connections and runs each handshake in its own task, so one slow or
//! silent peer never holds up the others; finished handshakes are handed to
//! `accept`. Failed handshakes are logged and dropped.

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use anyhow::Context;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::mpsc,
    task::JoinHandle,
};
use tokio_rustls::{
    rustls::{
        self,
        pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
    },
    server::TlsStream,
    TlsAcceptor,
};

/// How long a peer may take to complete the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Completed handshakes waiting for the HTTP server to pick them up.
const BACKLOG: usize = 128;

/// A server configuration from a PEM certificate chain (leaf first) and a PEM
/// private key (PKCS#8, PKCS#1 or SEC1). Offers HTTP/2 and HTTP/1.1 by ALPN.
pub fn server_config(
    cert_path: &Path,
    key_path: &Path,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let certs = CertificateDer::pem_file_iter(cert_path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading TLS certificates from {}", cert_path.display()))?;
    if certs.is_empty() {
        anyhow::bail!("no certificate in {}", cert_path.display());
    }
    let key = PrivateKeyDer::from_pem_file(key_path)
        .with_context(|| format!("reading TLS private key from {}", key_path.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("TLS certificate and key do not match")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A TCP listener that yields connections after their TLS handshake.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local_addr: SocketAddr,
    acceptor: JoinHandle<()>,
}

impl TlsListener {
    pub fn new(listener: TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(BACKLOG);
        let acceptor = tokio::spawn(accept_loop(listener, TlsAcceptor::from(config), tx));
        Ok(Self {
            ready,
            local_addr,
            acceptor,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept loop only ends when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "federation listener: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    let _ = ready.send((tls, peer)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::serve::ListenerExt;
    use axum::{extract::ConnectInfo, routing::get, Router};

    // A test-only CA and a certificate for "hs.test" it issued (P-256, valid
    // until 2125). Made with openssl; the key protects nothing.
    const CA_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBoDCCAUegAwIBAgIUT22b4h/IVT9ys0xFOw8EZqizOYIwCgYIKoZIzj0EAwIw
HTEbMBkGA1UEAwwSaG9tZXNlcnZlciB0ZXN0IENBMCAXDTI2MTEyODIyMDMxN1oY
DzIxMjYxMTA0MjIwMzE3WjAdMRswGQYDVQQDDBJob21lc2VydmVyIHRlc3QgQ0Ew
WTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAASAym7fCb1P/sKvjnFrP+DX6sp2+Aek
etlv9grgzVA0W2WoHp5VnIG8Yxc9WuYFh/Z2A9G/X/vCDG4ZkND2Kr7io2MwYTAd
BgNVHQ4EFgQU2szFlwbtuvVzg3Edj0uMVKsG4eQwHwYDVR0jBBgwFoAU2szFlwbt
uvVzg3Edj0uMVKsG4eQwDwYDVR0TAQH/BAUwAwEB/zAOBgNVHQ8BAf8EBAMCAgQw
CgYIKoZIzj0EAwIDRwAwRAIgbxiENh4A6EJHQ3pf5hTQOUL+XNf6lSypPmuWCFEh
hR0CIDpPiqI6e1qbsAF/tRQdm3Zw6D8PkXB0uekakfwBv28W
-----END CERTIFICATE-----
";
    const CERT_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBuTCCAV6gAwIBAgIUVVwH86gJtM8Ea/6k5S6gwSWUZskwCgYIKoZIzj0EAwIw
HTEbMBkGA1UEAwwSaG9tZXNlcnZlciB0ZXN0IENBMCAXDTI2MTEyODIyMDMxOFoY
DzIxMjYxMTA0MjIwMzE4WjASMRAwDgYDVQQDDAdocy50ZXN0MFkwEwYHKoZIzj0C
AQYIKoZIzj0DAQcDQgAE8+REPEPBIH7KUmG0mr/Pm5YImTN87kuZui4zXRX+YIoU
0m3ZwYGDpgE7XE6CXnXoLgmG0CjQaxCWo5hIi/pVx6OBhDCBgTASBgNVHREECzAJ
ggdocy50ZXN0MAkGA1UdEwQCMAAwEwYDVR0lBAwwCgYIKwYBBQUHAwEwCwYDVR0P
BAQDAgeAMB0GA1UdDgQWBBSEbgjES6cu3+WuTLpDf69dX7jg7DAfBgNVHSMEGDAW
gBTazMWXBu269XODcR2PS4xUqwbh5DAKBggqhkjOPQQDAgNJADBGAiEAkvB2NBbh
PemV+FzO6TcmPc6E2Zvp2X97KjZqv1hvosgCIQDgiJEOMlLCxLsYeY4/tBOcNkq0
ukdYbz/bargU1h4+wg==
-----END CERTIFICATE-----
";
    const KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgAeZwLkWTUvIqHxs2
rC5+ihlFtMO1m82AnF8abZdLqf6hRANCAATz5EQ8Q8EgfspSYbSav8+blgiZM3zu
S5m6LjNdFf5gihTSbdnBgYOmATtcToJedeguCYbQKNBrEJajmEiL+lXH
-----END PRIVATE KEY-----
";

    async fn serve() -> (SocketAddr, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        std::fs::write(&cert, CERT_PEM).unwrap();
        std::fs::write(&key, KEY_PEM).unwrap();
        let config = server_config(&cert, &key).unwrap();
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let listener = TlsListener::new(tcp, config).unwrap();
        let addr = axum::serve::Listener::local_addr(&listener).unwrap();
        let app = Router::new().route(
            "/peer",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.ip().to_string() }),
        );
        tokio::spawn(async move {
            axum::serve(
                listener.tap_io(|_| {}),
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
        });
        (addr, dir)
    }

    fn client(addr: SocketAddr, trust_ca: bool) -> reqwest::Client {
        let mut builder = reqwest::Client::builder().resolve("hs.test", addr);
        if trust_ca {
            builder = builder
                .add_root_certificate(reqwest::Certificate::from_pem(CA_PEM.as_bytes()).unwrap());
        }
        builder.build().unwrap()
    }

    #[tokio::test]
    async fn serves_https_with_the_configured_certificate() {
        let (addr, _dir) = serve().await;
        // A peer that connects and never says anything holds up nobody else.
        let _silent = TcpStream::connect(addr).await.unwrap();
        let url = format!("https://hs.test:{}/peer", addr.port());
        let body = client(addr, true)
            .get(&url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(body, "127.0.0.1");
        // Without the CA the certificate is rejected.
        assert!(client(addr, false).get(&url).send().await.is_err());
    }

    #[test]
    fn rejects_a_key_that_is_not_pem() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        std::fs::write(&cert, CERT_PEM).unwrap();
        std::fs::write(&key, "not a key").unwrap();
        assert!(server_config(&cert, &key).is_err());
        assert!(server_config(&dir.path().join("missing"), &key).is_err());
    }
}
