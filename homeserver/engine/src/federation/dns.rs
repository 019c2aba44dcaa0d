//! Name lookups for server discovery: addresses (A/AAAA) and SRV records.
//!
//! Without configured DNS servers, addresses come from the system resolver
//! (getaddrinfo, so `/etc/hosts` applies) and SRV records from hickory with
//! the system's `/etc/resolv.conf`. With `[federation] dns_servers`, hickory
//! asks those servers for both (tests point it at a loopback DNS server).

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use hickory_resolver::{
    config::{NameServerConfig, ResolverConfig},
    name_server::TokioConnectionProvider,
    proto::xfer::Protocol,
    TokioResolver,
};

/// Name lookups: A/AAAA through the system (getaddrinfo, so `/etc/hosts`
/// applies) or the configured DNS servers, SRV through hickory.
pub struct Dns {
    hickory: Option<TokioResolver>,
    use_system_for_addresses: bool,
}

/// One SRV answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SrvTarget {
    pub target: String,
    pub port: u16,
    pub priority: u16,
    pub weight: u16,
}

impl Dns {
    pub fn new(servers: &[SocketAddr]) -> Self {
        if servers.is_empty() {
            let hickory = match TokioResolver::builder_tokio() {
                Ok(builder) => Some(builder.build()),
                Err(e) => {
                    tracing::warn!(error = %e, "no system DNS configuration: SRV discovery is off");
                    None
                }
            };
            return Self {
                hickory,
                use_system_for_addresses: true,
            };
        }
        let mut config = ResolverConfig::new();
        for addr in servers {
            config.add_name_server(NameServerConfig::new(*addr, Protocol::Udp));
            config.add_name_server(NameServerConfig::new(*addr, Protocol::Tcp));
        }
        let resolver =
            TokioResolver::builder_with_config(config, TokioConnectionProvider::default()).build();
        Self {
            hickory: Some(resolver),
            use_system_for_addresses: false,
        }
    }

    pub async fn lookup_ip(&self, host: &str) -> std::io::Result<Vec<IpAddr>> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        match (&self.hickory, self.use_system_for_addresses) {
            (Some(resolver), false) => {
                let found = resolver
                    .lookup_ip(host)
                    .await
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                Ok(found.iter().collect())
            }
            _ => Ok(tokio::net::lookup_host((host, 0))
                .await?
                .map(|a| a.ip())
                .collect()),
        }
    }

    /// SRV answers for `name`, best first (lowest priority, then highest weight).
    /// Lookup failures read as "no record".
    pub async fn lookup_srv(&self, name: &str) -> Vec<SrvTarget> {
        let Some(resolver) = &self.hickory else {
            return Vec::new();
        };
        let Ok(found) = resolver.srv_lookup(name).await else {
            return Vec::new();
        };
        let mut targets: Vec<SrvTarget> = found
            .iter()
            .map(|srv| SrvTarget {
                target: srv.target().to_utf8().trim_end_matches('.').to_owned(),
                port: srv.port(),
                priority: srv.priority(),
                weight: srv.weight(),
            })
            // A lone "." target means the service is decidedly not available.
            .filter(|t| !t.target.is_empty())
            .collect();
        targets.sort_by_key(|t| (t.priority, std::cmp::Reverse(t.weight)));
        targets
    }
}

/// Plain DNS for the well-known fetch.
pub(super) struct DnsResolver(pub(super) Arc<Dns>);

impl reqwest::dns::Resolve for DnsResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let dns = self.0.clone();
        Box::pin(async move {
            let ips = dns.lookup_ip(name.as_str()).await?;
            let addrs: reqwest::dns::Addrs =
                Box::new(ips.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}
