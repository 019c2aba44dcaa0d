//! Server discovery against a real DNS server and a real HTTPS well-known
//! server on loopback: IP literals, explicit ports, `.well-known/matrix/server`
//! delegation, SRV (`_matrix-fed._tcp`, then `_matrix._tcp`), the default
//! port, overrides and the cache; and a homeserver that finds its peer
//! through SRV alone.

mod common;

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use axum::serve::ListenerExt;
use axum::{http::HeaderMap, routing::get, Router};
use common::federation::{DnsRecord, Federation, TestCa, TestDns};
use engine::federation::{
    discovery::{ConnectTo, Discovery, DiscoveryOptions, Resolved},
    FederationError,
};
use reqwest::Method;
use ruma::ServerName;

const LOCAL: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// An HTTPS server answering `/.well-known/matrix/server` per `Host`, counting hits.
async fn well_known_server(
    ca: &TestCa,
    dir: &std::path::Path,
    answers: HashMap<&'static str, &'static str>,
) -> (u16, Arc<HashMap<String, AtomicUsize>>) {
    let names: Vec<&str> = answers.keys().copied().collect();
    let (cert, key) = ca.issue_files(dir, "well-known", &names);
    let config = homeserver::tls::server_config(&cert, &key).unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let listener = homeserver::tls::TlsListener::new(tcp, config).unwrap();
    let hits: Arc<HashMap<String, AtomicUsize>> = Arc::new(
        answers
            .keys()
            .map(|k| (k.to_string(), AtomicUsize::new(0)))
            .collect(),
    );
    let answers = Arc::new(answers);
    let counted = hits.clone();
    let app = Router::new().route(
        "/.well-known/matrix/server",
        get(move |headers: HeaderMap, uri: axum::http::Uri| {
            let (answers, hits) = (answers.clone(), counted.clone());
            async move {
                // HTTP/1.1 sends `Host`; HTTP/2 puts it in the URI.
                let host = headers
                    .get("host")
                    .and_then(|h| h.to_str().ok())
                    .or(uri.host())
                    .unwrap_or("")
                    .split(':')
                    .next()
                    .unwrap_or("")
                    .to_owned();
                if let Some(n) = hits.get(&host) {
                    n.fetch_add(1, Ordering::SeqCst);
                }
                match answers.get(host.as_str()) {
                    Some(body) => (
                        axum::http::StatusCode::OK,
                        [("cache-control", "max-age=3600")],
                        body.to_string(),
                    ),
                    None => (
                        axum::http::StatusCode::NOT_FOUND,
                        [("cache-control", "no-store")],
                        String::new(),
                    ),
                }
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener.tap_io(|_| {}), app).await });
    (port, hits)
}

fn resolved(tls: &str, port: u16, host: &str, connect: ConnectTo) -> Resolved {
    Resolved {
        tls_name: tls.to_owned(),
        port,
        host_header: host.to_owned(),
        connect,
    }
}

#[tokio::test]
async fn resolves_server_names_per_the_spec() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let (wk_port, hits) = well_known_server(
        &ca,
        dir.path(),
        HashMap::from([
            ("wk.test", r#"{"m.server": "delegated.test:4443"}"#),
            ("wk2.test", r#"{"m.server": "srvdeleg.test"}"#),
            ("wk3.test", r#"{"m.server": "127.0.0.2:9"}"#),
            ("badwk.test", "{not json"),
        ]),
    )
    .await;
    let dns = TestDns::start(vec![
        ("wk.test", DnsRecord::A(LOCAL)),
        ("wk2.test", DnsRecord::A(LOCAL)),
        ("wk3.test", DnsRecord::A(LOCAL)),
        ("badwk.test", DnsRecord::A(LOCAL)),
        ("srv.test", DnsRecord::A(LOCAL)),
        ("legacy.test", DnsRecord::A(LOCAL)),
        ("plain.test", DnsRecord::A(LOCAL)),
        (
            "_matrix-fed._tcp.srvdeleg.test",
            DnsRecord::Srv(10, 5, 5555, "target.test".into()),
        ),
        (
            "_matrix-fed._tcp.srv.test",
            DnsRecord::Srv(20, 0, 7000, "worse.test".into()),
        ),
        (
            "_matrix-fed._tcp.srv.test",
            DnsRecord::Srv(10, 0, 7777, "srvtarget.test".into()),
        ),
        (
            "_matrix._tcp.legacy.test",
            DnsRecord::Srv(0, 0, 8888, "legacytarget.test".into()),
        ),
        // Both exist: the current name wins over the deprecated one.
        (
            "_matrix._tcp.srv.test",
            DnsRecord::Srv(0, 0, 1, "old.test".into()),
        ),
    ])
    .await;
    let options = DiscoveryOptions {
        overrides: HashMap::from([
            ("over.test".to_owned(), "127.0.0.1:18448".to_owned()),
            ("over2.test".to_owned(), "box.test:18449".to_owned()),
        ]),
        dns_servers: vec![dns.addr],
        well_known_port: wk_port,
    };
    let roots = vec![reqwest::Certificate::from_pem(ca.pem.as_bytes()).unwrap()];
    let discovery = Discovery::new(options, &roots).unwrap();
    let resolve = |name: &'static str| {
        let discovery = discovery.clone();
        async move {
            discovery
                .resolve(&ServerName::parse(name).unwrap())
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"))
        }
    };
    let ip = |s: &str| ConnectTo::Ip(s.parse::<IpAddr>().unwrap());

    // IP literals and explicit ports: no lookups at all.
    assert_eq!(
        resolve("1.2.3.4").await,
        resolved("1.2.3.4", 8448, "1.2.3.4", ip("1.2.3.4"))
    );
    let v6 = resolve("[::1]:8449").await;
    assert_eq!(v6, resolved("::1", 8449, "[::1]:8449", ip("::1")));
    assert_eq!(v6.base_url(), "https://[::1]:8449");
    assert_eq!(
        resolve("explicit.test:1234").await,
        resolved(
            "explicit.test",
            1234,
            "explicit.test:1234",
            ConnectTo::TlsName
        )
    );
    assert_eq!(dns.count("explicit.test"), 0);

    // Well-known delegation: to host:port, to a host found by SRV, to an IP.
    assert_eq!(
        resolve("wk.test").await,
        resolved(
            "delegated.test",
            4443,
            "delegated.test:4443",
            ConnectTo::TlsName
        )
    );
    assert_eq!(
        resolve("wk2.test").await,
        resolved(
            "srvdeleg.test",
            5555,
            "srvdeleg.test",
            ConnectTo::Host("target.test".into())
        )
    );
    assert_eq!(
        resolve("wk3.test").await,
        resolved("127.0.0.2", 9, "127.0.0.2:9", ip("127.0.0.2"))
    );

    // No well-known: SRV by priority, then the deprecated SRV, then port 8448.
    assert_eq!(
        resolve("srv.test").await,
        resolved(
            "srv.test",
            7777,
            "srv.test",
            ConnectTo::Host("srvtarget.test".into())
        )
    );
    assert_eq!(
        resolve("legacy.test").await,
        resolved(
            "legacy.test",
            8888,
            "legacy.test",
            ConnectTo::Host("legacytarget.test".into())
        )
    );
    assert_eq!(
        resolve("plain.test").await,
        resolved("plain.test", 8448, "plain.test", ConnectTo::TlsName)
    );
    // A broken well-known, or a name without an address, falls through too.
    assert_eq!(
        resolve("badwk.test").await,
        resolved("badwk.test", 8448, "badwk.test", ConnectTo::TlsName)
    );
    assert_eq!(
        resolve("nowhere.test").await,
        resolved("nowhere.test", 8448, "nowhere.test", ConnectTo::TlsName)
    );

    // Overrides keep the server name for TLS and Host.
    assert_eq!(
        resolve("over.test").await,
        resolved("over.test", 18448, "over.test", ip("127.0.0.1"))
    );
    assert_eq!(
        resolve("over2.test").await,
        resolved(
            "over2.test",
            18449,
            "over2.test",
            ConnectTo::Host("box.test".into())
        )
    );
    assert_eq!(dns.count("over.test") + dns.count("over2.test"), 0);

    // The cache: a second resolution asks nobody.
    let (wk_hits, plain_srv) = (
        hits["wk.test"].load(Ordering::SeqCst),
        dns.count("_matrix-fed._tcp.plain.test"),
    );
    assert_eq!(wk_hits, 1);
    assert!(plain_srv >= 1);
    resolve("wk.test").await;
    resolve("plain.test").await;
    assert_eq!(hits["wk.test"].load(Ordering::SeqCst), 1);
    assert_eq!(dns.count("_matrix-fed._tcp.plain.test"), plain_srv);
    // ...until invalidated.
    discovery.invalidate(&ServerName::parse("wk.test").unwrap());
    resolve("wk.test").await;
    assert_eq!(hits["wk.test"].load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_homeserver_finds_its_peer_through_srv() {
    // hs1 has no override for hs2: DNS says `_matrix-fed._tcp.hs2.test` is
    // `box.test:<hs2's port>`, and `box.test` is 127.0.0.1. The certificate
    // must still be valid for hs2.test.
    let fed = Federation::start(2).await;
    let port = fed.addrs[1].port();
    let dns = TestDns::start(vec![
        (
            "_matrix-fed._tcp.hs2.test",
            DnsRecord::Srv(0, 0, port, "box.test".into()),
        ),
        ("box.test", DnsRecord::A(LOCAL)),
        // A second name for hs2 whose SRV leads to the same box: its
        // certificate is not valid for that name.
        (
            "_matrix-fed._tcp.alias.test",
            DnsRecord::Srv(0, 0, port, "box.test".into()),
        ),
    ])
    .await;
    let mut config = fed.servers[0].config.clone();
    let hs1_dir = tempfile::tempdir().unwrap();
    config.federation.overrides.remove("hs2.test");
    config.federation.dns_servers = vec![dns.addr];
    config.listeners.federation = Some(SocketAddr::from((LOCAL, 0)));
    config.signing_key_path = hs1_dir.path().join("signing.key");
    config.database.url = format!("sqlite://{}", hs1_dir.path().join("hs.db").display());
    let hs1 = homeserver::start(config).await.expect("start hs1 with DNS");
    let client = &hs1.services.federation.client;
    let keys = client
        .request(
            &ServerName::parse("hs2.test").unwrap(),
            Method::GET,
            "/_matrix/key/v2/server",
            None,
        )
        .await
        .expect("hs2 through SRV");
    assert_eq!(keys["server_name"], "hs2.test");
    assert!(dns.count("_matrix-fed._tcp.hs2.test") >= 1);
    let err = client
        .request(
            &ServerName::parse("alias.test").unwrap(),
            Method::GET,
            "/_matrix/key/v2/server",
            None,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, FederationError::Unreachable { .. }),
        "certificate name checked: {err:?}"
    );
    hs1.shutdown().await;
    fed.shutdown().await;
}
