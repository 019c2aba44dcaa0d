//! Server discovery: from a server name to where its federation API listens
//! (Server-Server API, "Resolving server names").
//!
//! The steps, in the spec's order:
//! 1. an IP literal connects to that address (port 8448 unless given);
//! 2. a hostname with an explicit port connects there;
//! 3. `https://<hostname>/.well-known/matrix/server` may delegate to another
//!    `host[:port]`, which is then resolved by steps 1-2 and 4-6, with the
//!    delegated name as the TLS name and `Host` header;
//! 4. an SRV record `_matrix-fed._tcp.<hostname>`;
//! 5. the deprecated `_matrix._tcp.<hostname>`;
//! 6. `<hostname>:8448`.
//!
//! Static overrides from `[federation] overrides` bypass all of this (private
//! deployments, tests): the server name stays the TLS name and `Host` header,
//! only the address connected to changes.
//!
//! Results are cached: well-known answers by their `Cache-Control`/`Expires`
//! (between 5 minutes and 48 hours, a day when unstated), a missing or broken
//! well-known for an hour.
//!
//! The HTTP client connects to `https://<tls_name>:<port>` and asks
//! [`TargetResolver`] for the addresses of `<tls_name>`; that resolver answers
//! from what discovery found (an SRV target, an override), so certificate
//! validation always happens against the name the spec requires.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use parking_lot::{Mutex, RwLock};
use ruma::{OwnedServerName, ServerName};

use super::dns::DnsResolver;
pub use super::dns::{Dns, SrvTarget};

/// The federation port when none is published.
pub const DEFAULT_PORT: u16 = 8448;
const WELL_KNOWN_MIN_TTL: Duration = Duration::from_secs(5 * 60);
const WELL_KNOWN_MAX_TTL: Duration = Duration::from_secs(48 * 3600);
const WELL_KNOWN_DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);
/// How long a missing or broken well-known (and the fallback result) is kept.
const WELL_KNOWN_ERROR_TTL: Duration = Duration::from_secs(3600);
const WELL_KNOWN_MAX_BYTES: usize = 50 * 1024;
const WELL_KNOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// Where requests for one server go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// The host of request URLs: the name the certificate must be valid for
    /// (an IP literal for IP-literal server names).
    pub tls_name: String,
    pub port: u16,
    /// The `Host` header to send.
    pub host_header: String,
    /// Where the connection actually goes.
    pub connect: ConnectTo,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnectTo {
    /// Resolve `tls_name` itself.
    TlsName,
    /// Resolve this host instead (an SRV target or an override's host).
    Host(String),
    /// Connect to this address.
    Ip(IpAddr),
}

impl Resolved {
    /// `https://<tls_name>:<port>`, brackets around IPv6 literals.
    pub fn base_url(&self) -> String {
        match self.tls_name.parse::<IpAddr>() {
            Ok(IpAddr::V6(ip)) => format!("https://[{ip}]:{}", self.port),
            _ => format!("https://{}:{}", self.tls_name, self.port),
        }
    }
}

/// Why a server name could not be resolved.
#[derive(Debug, thiserror::Error)]
#[error("cannot resolve {server}: {reason}")]
pub struct DiscoveryError {
    pub server: String,
    pub reason: String,
}

/// Settings for [`Discovery`], normally from `[federation]`.
#[derive(Clone, Debug)]
pub struct DiscoveryOptions {
    /// Server name -> `host:port` or `ip:port`.
    pub overrides: HashMap<String, String>,
    /// DNS servers for SRV and address lookups; empty: the system's.
    pub dns_servers: Vec<SocketAddr>,
    /// The port `.well-known/matrix/server` is fetched from: 443 per the spec;
    /// tests serve it elsewhere.
    pub well_known_port: u16,
}

impl DiscoveryOptions {
    pub fn from_config(config: &crate::config::Federation) -> Self {
        Self {
            overrides: config
                .overrides
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            dns_servers: config.dns_servers.clone(),
            well_known_port: 443,
        }
    }
}

/// Resolves server names, with the spec's steps, overrides and a cache.
pub struct Discovery {
    overrides: HashMap<String, (String, u16)>,
    dns: Arc<Dns>,
    /// TLS name -> where connections for it go; read by [`TargetResolver`].
    targets: RwLock<HashMap<String, ConnectTo>>,
    cache: Mutex<HashMap<OwnedServerName, (Resolved, Instant)>>,
    well_known_http: reqwest::Client,
    well_known_port: u16,
}

impl Discovery {
    /// `roots` are the extra trusted CA certificates for the well-known fetch.
    pub fn new(
        options: DiscoveryOptions,
        roots: &[reqwest::Certificate],
    ) -> anyhow::Result<Arc<Self>> {
        let mut overrides = HashMap::new();
        for (server, target) in &options.overrides {
            let (host, port) = split_host_port(target)
                .filter(|(_, port)| port.is_some())
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "federation.overrides.{server}: expected host:port, got {target:?}"
                    )
                })?;
            overrides.insert(
                server.to_ascii_lowercase(),
                (host, port.unwrap_or(DEFAULT_PORT)),
            );
        }
        let dns = Arc::new(Dns::new(&options.dns_servers));
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .dns_resolver(Arc::new(DnsResolver(dns.clone())))
            .timeout(WELL_KNOWN_TIMEOUT)
            .redirect(reqwest::redirect::Policy::limited(5))
            .http1_only();
        for root in roots {
            builder = builder.add_root_certificate(root.clone());
        }
        Ok(Arc::new(Self {
            overrides,
            dns,
            targets: RwLock::new(HashMap::new()),
            cache: Mutex::new(HashMap::new()),
            well_known_http: builder.build()?,
            well_known_port: options.well_known_port,
        }))
    }

    pub fn dns(&self) -> &Arc<Dns> {
        &self.dns
    }

    /// Where requests for `server` go.
    pub async fn resolve(&self, server: &ServerName) -> Result<Resolved, DiscoveryError> {
        let name = server.as_str().to_ascii_lowercase();
        if let Some((host, port)) = self.overrides.get(&name) {
            let connect = match host.parse::<IpAddr>() {
                Ok(ip) => ConnectTo::Ip(ip),
                Err(_) => ConnectTo::Host(host.clone()),
            };
            let (tls_name, _) = split_host_port(&name).unwrap_or((name.clone(), None));
            return Ok(self.remember(Resolved {
                tls_name,
                port: *port,
                host_header: server.as_str().to_owned(),
                connect,
            }));
        }
        let cached = self.cache.lock().get(server).cloned();
        if let Some((resolved, expires)) = cached {
            if Instant::now() < expires {
                return Ok(self.remember(resolved));
            }
        }
        let (resolved, ttl) = self.resolve_uncached(server).await?;
        if let Some(ttl) = ttl {
            self.cache
                .lock()
                .insert(server.to_owned(), (resolved.clone(), Instant::now() + ttl));
        }
        Ok(self.remember(resolved))
    }

    /// Forgets the cached result for `server` (after its connections failed,
    /// say), so the next request resolves it afresh.
    pub fn invalidate(&self, server: &ServerName) {
        self.cache.lock().remove(server);
    }

    fn remember(&self, resolved: Resolved) -> Resolved {
        let mut targets = self.targets.write();
        match &resolved.connect {
            ConnectTo::TlsName => targets.remove(&resolved.tls_name),
            other => targets.insert(resolved.tls_name.clone(), other.clone()),
        };
        resolved
    }

    /// Steps 1-6; the duration is how long the answer may be cached (`None`:
    /// not worth caching).
    async fn resolve_uncached(
        &self,
        server: &ServerName,
    ) -> Result<(Resolved, Option<Duration>), DiscoveryError> {
        let error = |reason: &str| DiscoveryError {
            server: server.to_string(),
            reason: reason.to_owned(),
        };
        let (host, port) = split_host_port(server.as_str()).ok_or_else(|| error("invalid"))?;
        // Steps 1 and 2: nothing to look up.
        if host.parse::<IpAddr>().is_ok() || port.is_some() {
            return Ok((direct(&host, port, server.as_str()), None));
        }
        // Step 3: delegation through .well-known.
        match self.fetch_well_known(&host).await {
            Ok((delegated, ttl)) => {
                let (d_host, d_port) = split_host_port(&delegated)
                    .ok_or_else(|| error("the well-known names an invalid server"))?;
                if d_host.parse::<IpAddr>().is_ok() || d_port.is_some() {
                    return Ok((direct(&d_host, d_port, &delegated), Some(ttl)));
                }
                let resolved = self.resolve_srv(&d_host).await;
                return Ok((resolved, Some(ttl)));
            }
            Err(reason) => {
                tracing::debug!(%server, %reason, "no usable .well-known/matrix/server");
            }
        }
        // Steps 4-6.
        Ok((self.resolve_srv(&host).await, Some(WELL_KNOWN_ERROR_TTL)))
    }

    /// Steps 4-6 for `host` (the TLS name and `Host` header).
    async fn resolve_srv(&self, host: &str) -> Resolved {
        for prefix in ["_matrix-fed._tcp", "_matrix._tcp"] {
            if let Some(best) = self
                .dns
                .lookup_srv(&format!("{prefix}.{host}."))
                .await
                .first()
            {
                return Resolved {
                    tls_name: host.to_owned(),
                    port: best.port,
                    host_header: host.to_owned(),
                    connect: ConnectTo::Host(best.target.clone()),
                };
            }
        }
        direct(host, None, host)
    }

    /// `m.server` from `https://<host>/.well-known/matrix/server`, and how long
    /// to keep it.
    async fn fetch_well_known(&self, host: &str) -> Result<(String, Duration), String> {
        let url = format!(
            "https://{host}:{}/.well-known/matrix/server",
            self.well_known_port
        );
        let mut response = self
            .well_known_http
            .get(&url)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("status {}", response.status()));
        }
        let ttl = cache_ttl(response.headers());
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
            body.extend_from_slice(&chunk);
            if body.len() > WELL_KNOWN_MAX_BYTES {
                return Err("response too large".to_owned());
            }
        }
        let json: serde_json::Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        let delegated = json
            .get("m.server")
            .and_then(|v| v.as_str())
            .ok_or("no m.server string")?;
        ServerName::parse(delegated).map_err(|e| format!("m.server {delegated:?}: {e}"))?;
        Ok((delegated.to_owned(), ttl))
    }
}

fn direct(host: &str, port: Option<u16>, host_header: &str) -> Resolved {
    Resolved {
        tls_name: host.to_owned(),
        port: port.unwrap_or(DEFAULT_PORT),
        host_header: host_header.to_owned(),
        connect: match host.parse::<IpAddr>() {
            Ok(ip) => ConnectTo::Ip(ip),
            Err(_) => ConnectTo::TlsName,
        },
    }
}

/// `host[:port]`, `1.2.3.4[:port]` or `[::1][:port]` -> (host without brackets, port).
pub fn split_host_port(s: &str) -> Option<(String, Option<u16>)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        ip.parse::<std::net::Ipv6Addr>().ok()?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?.parse().ok()?),
        };
        return Some((ip.to_owned(), port));
    }
    match s.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => {
            Some((host.to_ascii_lowercase(), Some(port.parse().ok()?)))
        }
        Some(_) => None,
        None if s.is_empty() => None,
        None => Some((s.to_ascii_lowercase(), None)),
    }
}

/// The well-known's lifetime from `Cache-Control: max-age` or `Expires`,
/// clamped to the spec's recommended bounds.
fn cache_ttl(headers: &http::HeaderMap) -> Duration {
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let from_cache_control = header(http::header::CACHE_CONTROL).and_then(|cc| {
        cc.split(',').map(str::trim).find_map(|directive| {
            if directive.eq_ignore_ascii_case("no-store")
                || directive.eq_ignore_ascii_case("no-cache")
            {
                return Some(Duration::ZERO);
            }
            let (name, value) = directive.split_once('=')?;
            name.trim()
                .eq_ignore_ascii_case("max-age")
                .then(|| {
                    value
                        .trim()
                        .trim_matches('"')
                        .parse()
                        .ok()
                        .map(Duration::from_secs)
                })
                .flatten()
        })
    });
    let from_expires = || {
        let expires = httpdate::parse_http_date(header(http::header::EXPIRES)?).ok()?;
        Some(
            expires
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO),
        )
    };
    from_cache_control
        .or_else(from_expires)
        .unwrap_or(WELL_KNOWN_DEFAULT_TTL)
        .clamp(WELL_KNOWN_MIN_TTL, WELL_KNOWN_MAX_TTL)
}

/// The federation client's resolver: a TLS name goes where discovery said.
pub struct TargetResolver(pub Arc<Discovery>);

impl reqwest::dns::Resolve for TargetResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let discovery = self.0.clone();
        Box::pin(async move {
            let target = discovery.targets.read().get(name.as_str()).cloned();
            let ips = match target {
                Some(ConnectTo::Ip(ip)) => vec![ip],
                Some(ConnectTo::Host(host)) => discovery.dns.lookup_ip(&host).await?,
                Some(ConnectTo::TlsName) | None => discovery.dns.lookup_ip(name.as_str()).await?,
            };
            if ips.is_empty() {
                return Err(format!("no address for {}", name.as_str()).into());
            }
            let addrs: reqwest::dns::Addrs =
                Box::new(ips.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_hosts_and_ports() {
        assert_eq!(
            split_host_port("example.org"),
            Some(("example.org".into(), None))
        );
        assert_eq!(
            split_host_port("Example.org:8449"),
            Some(("example.org".into(), Some(8449)))
        );
        assert_eq!(
            split_host_port("1.2.3.4:5"),
            Some(("1.2.3.4".into(), Some(5)))
        );
        assert_eq!(split_host_port("[::1]"), Some(("::1".into(), None)));
        assert_eq!(
            split_host_port("[::1]:8448"),
            Some(("::1".into(), Some(8448)))
        );
        assert_eq!(split_host_port("a:b"), None);
        assert_eq!(split_host_port("[nope]:1"), None);
        assert_eq!(split_host_port(""), None);
    }

    #[test]
    fn well_known_ttl_from_headers() {
        let mut h = http::HeaderMap::new();
        assert_eq!(cache_ttl(&h), WELL_KNOWN_DEFAULT_TTL);
        h.insert(
            http::header::CACHE_CONTROL,
            "public, max-age=7200".parse().unwrap(),
        );
        assert_eq!(cache_ttl(&h), Duration::from_secs(7200));
        h.insert(http::header::CACHE_CONTROL, "max-age=1".parse().unwrap());
        assert_eq!(cache_ttl(&h), WELL_KNOWN_MIN_TTL);
        h.insert(
            http::header::CACHE_CONTROL,
            "max-age=99999999".parse().unwrap(),
        );
        assert_eq!(cache_ttl(&h), WELL_KNOWN_MAX_TTL);
        h.remove(http::header::CACHE_CONTROL);
        let in_3h = SystemTime::now() + Duration::from_secs(3 * 3600 + 30);
        h.insert(
            http::header::EXPIRES,
            httpdate::fmt_http_date(in_3h).parse().unwrap(),
        );
        let ttl = cache_ttl(&h);
        assert!(
            ttl > Duration::from_secs(3 * 3600 - 5) && ttl <= Duration::from_secs(3 * 3600 + 30)
        );
    }
}
