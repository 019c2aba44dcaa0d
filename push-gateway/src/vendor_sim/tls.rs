//! TLS for the APNs simulator: a throw-away CA and a certificate for
//! `localhost` / `127.0.0.1` signed by it, and a listener that hands axum
//! connections after their handshake. HTTP/2 only, as APNs.

use std::{net::SocketAddr, sync::Arc};

use anyhow::Context;
use axum::{extract::connect_info::Connected, serve::IncomingStream};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{
    rustls::{
        self,
        pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer},
    },
    server::TlsStream,
    TlsAcceptor,
};

/// A CA certificate (PEM, for the client to trust) and a server config whose
/// certificate it signed.
pub struct TestPki {
    pub ca_pem: String,
    pub server: Arc<rustls::ServerConfig>,
}

pub fn test_pki() -> anyhow::Result<TestPki> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "push-gateway vendor-sim CA");
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf_key = KeyPair::generate()?;
    let mut leaf_params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let leaf = leaf_params.signed_by(&leaf_key, &issuer)?;

    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let chain: Vec<CertificateDer<'static>> = vec![leaf.der().clone()];
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("simulator certificate")?;
    server.alpn_protocols = vec![b"h2".to_vec()];
    Ok(TestPki {
        ca_pem: ca_cert.pem(),
        server: Arc::new(server),
    })
}

/// Accepts TCP connections and completes the TLS handshake before handing
/// them to axum. Failed handshakes are dropped.
pub struct TlsListener {
    pub tcp: TcpListener,
    pub acceptor: TlsAcceptor,
    /// Connections accepted so far (numbers the next [`Conn`]).
    pub accepted: u64,
}

/// One accepted connection: handlers see it as `ConnectInfo<Conn>` and can
/// keep per-connection state, as APNs does for provider tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Conn {
    pub peer: SocketAddr,
    /// Unique per listener.
    pub serial: u64,
}

impl Connected<IncomingStream<'_, TlsListener>> for Conn {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        *stream.remote_addr()
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = Conn;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (tcp, addr) = match self.tcp.accept().await {
                Ok(conn) => conn,
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            };
            if let Ok(stream) = self.acceptor.accept(tcp).await {
                self.accepted += 1;
                let conn = Conn {
                    peer: addr,
                    serial: self.accepted,
                };
                return (stream, conn);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(Conn {
            peer: self.tcp.local_addr()?,
            serial: 0,
        })
    }
}
