//! A small federation on loopback: N homeservers named `hs1.test`,
//! `hs2.test`, ..., each with a federation TLS listener whose certificate a
//! test CA (made at test time) issued, each trusting that CA and reaching the
//! others through `[federation] overrides`.
//!
//! ```ignore
//! let fed = Federation::start(3).await;
//! let alice = fed.servers[0].register("alice").await;
//! ```
//!
//! Federation ports are picked before the servers start (bound to port 0 and
//! released), so every server's overrides can name every other server, and a
//! [`TestServer::restart`] comes back on the same federation port.

#![allow(dead_code)]

use std::{net::SocketAddr, path::PathBuf};

use engine::config::Config;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

use std::time::Duration;

use super::{Client, TestServer};

/// A test CA that issues server certificates.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate, PEM.
    pub pem: String,
}

impl TestCa {
    pub fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "homeserver federation test CA");
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        TestCa {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate for `names` (DNS names or IP literals): `(cert PEM, key PEM)`.
    pub fn issue(&self, names: &[&str]) -> (String, String) {
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("certificate params");
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("certificate");
        (cert.pem(), key.serialize_pem())
    }

    /// Writes a certificate for `names` into `dir` as `<stem>.crt`/`<stem>.key`.
    pub fn issue_files(
        &self,
        dir: &std::path::Path,
        stem: &str,
        names: &[&str],
    ) -> (PathBuf, PathBuf) {
        let (cert, key) = self.issue(names);
        let (cert_path, key_path) = (
            dir.join(format!("{stem}.crt")),
            dir.join(format!("{stem}.key")),
        );
        std::fs::write(&cert_path, cert).expect("write certificate");
        std::fs::write(&key_path, key).expect("write key");
        (cert_path, key_path)
    }
}

/// N federating homeservers on loopback.
pub struct Federation {
    pub servers: Vec<TestServer>,
    pub ca: TestCa,
    /// The CA certificate file every server trusts.
    pub ca_path: PathBuf,
    /// Each server's federation address, by index.
    pub addrs: Vec<SocketAddr>,
    dir: tempfile::TempDir,
}

/// `hs1.test` for index 0.
pub fn server_name(index: usize) -> String {
    format!("hs{}.test", index + 1)
}

/// Free loopback ports, all held until every one is picked so they differ.
fn free_ports(n: usize) -> Vec<SocketAddr> {
    let listeners: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr"))
        .collect()
}

impl Federation {
    pub async fn start(n: usize) -> Self {
        Self::start_with(n, |_, _| {}).await
    }

    /// Like [`Federation::start`], with `adjust(index, config)` applied to each
    /// server's config last.
    pub async fn start_with(n: usize, adjust: impl Fn(usize, &mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = TestCa::new();
        let ca_path = dir.path().join("ca.crt");
        std::fs::write(&ca_path, &ca.pem).expect("write CA");
        let addrs = free_ports(n);
        let overrides: std::collections::BTreeMap<String, String> = addrs
            .iter()
            .enumerate()
            .map(|(i, addr)| (server_name(i), addr.to_string()))
            .collect();
        let mut servers = Vec::with_capacity(n);
        for (i, addr) in addrs.iter().enumerate() {
            let name = server_name(i);
            let (cert, key) = ca.issue_files(dir.path(), &name, &[&name]);
            let overrides = overrides.clone();
            let ca_path = ca_path.clone();
            let server = TestServer::start_with(|config| {
                config.server_name = name.clone();
                config.listeners.federation = Some(*addr);
                config.tls.cert_path = Some(cert);
                config.tls.key_path = Some(key);
                config.federation.trusted_ca_paths = vec![ca_path];
                config.federation.overrides = overrides;
                adjust(i, config);
            })
            .await;
            servers.push(server);
        }
        Federation {
            servers,
            ca,
            ca_path,
            addrs,
            dir,
        }
    }

    pub fn server_name(&self, index: usize) -> String {
        server_name(index)
    }

    /// `https://hsN.test:<port>`: a server's federation listener, for
    /// [`Federation::http`].
    pub fn federation_url(&self, index: usize) -> String {
        format!(
            "https://{}:{}",
            server_name(index),
            self.addrs[index].port()
        )
    }

    /// A plain HTTPS client (no signing) that trusts the test CA and reaches
    /// every `hsN.test` on its federation port.
    pub fn http(&self) -> reqwest::Client {
        let mut builder = reqwest::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(self.ca.pem.as_bytes()).expect("CA PEM"),
            )
            .timeout(std::time::Duration::from_secs(60));
        for (i, addr) in self.addrs.iter().enumerate() {
            builder = builder.resolve(&server_name(i), *addr);
        }
        builder.build().expect("client")
    }

    /// A scratch directory that lives as long as the federation.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    pub async fn shutdown(self) {
        for server in self.servers {
            server.shutdown().await;
        }
    }
}

/// A DNS server on loopback (UDP and TCP on one port) answering from a fixed
/// table, for discovery tests: `dns_servers = [dns.addr]` points a server's
/// SRV and address lookups at it.
pub struct TestDns {
    pub addr: SocketAddr,
    /// Questions received, as `name TYPE` (lowercase name, no trailing dot).
    pub queries: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// One answer of [`TestDns`].
#[derive(Clone, Debug)]
pub enum DnsRecord {
    A(std::net::Ipv4Addr),
    /// `(priority, weight, port, target)`
    Srv(u16, u16, u16, String),
}

impl TestDns {
    /// `records`: `(name, record)` pairs; a name may have several.
    pub async fn start(records: Vec<(&str, DnsRecord)>) -> Self {
        use hickory_proto::rr::{rdata, Name, RData};
        let mut table: std::collections::HashMap<String, Vec<RData>> = Default::default();
        for (name, record) in records {
            let rdata = match record {
                DnsRecord::A(ip) => RData::A(rdata::A(ip)),
                DnsRecord::Srv(priority, weight, port, target) => RData::SRV(rdata::SRV::new(
                    priority,
                    weight,
                    port,
                    Name::from_ascii(format!("{target}.")).expect("SRV target"),
                )),
            };
            table
                .entry(name.to_ascii_lowercase())
                .or_default()
                .push(rdata);
        }
        let table = std::sync::Arc::new(table);
        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind UDP");
        let addr = udp.local_addr().expect("addr");
        let tcp = tokio::net::TcpListener::bind(addr).await.expect("bind TCP");
        let queries = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (t, q) = (table.clone(), queries.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok((len, peer)) = udp.recv_from(&mut buf).await {
                if let Some(reply) = dns_answer(&buf[..len], &t, &q) {
                    let _ = udp.send_to(&reply, peer).await;
                }
            }
        });
        let (t, q) = (table, queries.clone());
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut conn, _)) = tcp.accept().await {
                let (t, q) = (t.clone(), q.clone());
                tokio::spawn(async move {
                    // Length-prefixed messages (RFC 1035 section 4.2.2).
                    loop {
                        let Ok(len) = conn.read_u16().await else {
                            return;
                        };
                        let mut msg = vec![0u8; len as usize];
                        if conn.read_exact(&mut msg).await.is_err() {
                            return;
                        }
                        let Some(reply) = dns_answer(&msg, &t, &q) else {
                            return;
                        };
                        if conn.write_u16(reply.len() as u16).await.is_err()
                            || conn.write_all(&reply).await.is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
        TestDns { addr, queries }
    }

    /// How many questions named `name` (any type) arrived.
    pub fn count(&self, name: &str) -> usize {
        let prefix = format!("{} ", name.to_ascii_lowercase());
        self.queries
            .lock()
            .unwrap()
            .iter()
            .filter(|q| q.starts_with(&prefix))
            .count()
    }
}

fn dns_answer(
    query: &[u8],
    table: &std::collections::HashMap<String, Vec<hickory_proto::rr::RData>>,
    log: &std::sync::Mutex<Vec<String>>,
) -> Option<Vec<u8>> {
    use hickory_proto::{
        op::{Message, MessageType, ResponseCode},
        rr::Record,
    };
    let request = Message::from_vec(query).ok()?;
    let mut response = Message::new();
    response
        .set_id(request.id())
        .set_message_type(MessageType::Response)
        .set_op_code(request.op_code())
        .set_recursion_desired(request.recursion_desired())
        .set_recursion_available(true)
        .set_authoritative(true);
    let mut answered = false;
    for question in request.queries() {
        response.add_query(question.clone());
        let name = question
            .name()
            .to_utf8()
            .trim_end_matches('.')
            .to_ascii_lowercase();
        log.lock()
            .unwrap()
            .push(format!("{name} {}", question.query_type()));
        for rdata in table.get(&name).into_iter().flatten() {
            if rdata.record_type() == question.query_type() {
                response.add_answer(Record::from_rdata(
                    question.name().clone(),
                    60,
                    rdata.clone(),
                ));
                answered = true;
            }
        }
    }
    if !answered {
        response.set_response_code(ResponseCode::NXDomain);
    }
    response.to_vec().ok()
}

// ----- Waiting for replication -------------------------------------------

/// Waits (by /sync long-polls) until `pred` holds for the room's timeline
/// bodies on `client`; returns the bodies.
pub async fn wait_for_bodies(
    client: &Client,
    room_id: &str,
    pred: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let bodies = timeline_bodies(client, room_id).await;
        if pred(&bodies) {
            return bodies;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out; {} has {bodies:?}",
            client.user_id
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every `m.room.message` body of the room, oldest first, via /messages.
pub async fn timeline_bodies(client: &Client, room_id: &str) -> Vec<String> {
    let r = client
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=200",
            super::enc(room_id)
        ))
        .await;
    if r.status != 200 {
        return Vec::new();
    }
    let v = r.ok();
    let mut bodies: Vec<String> = v["chunk"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["type"] == "m.room.message")
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect();
    bodies.reverse();
    bodies
}

/// Waits until `client` sees `user` with `membership` in the room's state.
pub async fn wait_for_membership(client: &Client, room_id: &str, user: &str, membership: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = client.get_state(room_id, "m.room.member", user).await;
        if r.status == 200 && r.ok()["membership"] == membership {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} never saw {user} as {membership}",
            client.user_id
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `POST /join/{roomId}?via=server`: joins through another server.
pub async fn join_via(client: &Client, room_id: &str, server: &str) -> super::Response {
    client
        .post(
            &format!(
                "/_matrix/client/v3/join/{}?via={}",
                super::enc(room_id),
                super::enc(server)
            ),
            serde_json::json!({}),
        )
        .await
}
