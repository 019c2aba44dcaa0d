//! Federation: the Server-Server API's transport and keys, below the HTTP
//! surface in the `federation` crate.
//!
//! - [`discovery`]: server name -> address, TLS name and `Host` header.
//! - [`client`]: signed, pooled HTTPS requests to other servers.
//! - [`authentication`]: the X-Matrix request signature, both directions.
//! - [`keys`], [`key_queries`] and [`notary`]: our signing keys, other
//!   servers' keys (fetched directly or through notaries), signature checks
//!   on requests and events, and answering notary queries.
//! - [`access`]: the `[federation] allow`/`deny` lists.

pub mod access;
pub mod authentication;
pub mod backfill;
pub mod client;
pub mod device_lists;
pub mod discovery;
pub mod dns;
pub mod e2ee;
pub mod edu;
pub mod hierarchy;
pub mod join_answer;
pub mod key_queries;
pub mod keys;
pub mod knock;
pub mod media;
pub mod membership;
pub mod notary;
pub mod pdu_checks;
pub mod public_rooms;
pub mod queries;
pub mod reads;
pub mod rooms;
pub mod sender;
pub mod transactions;

use std::sync::Arc;

use crate::core::Core;

pub use self::{
    access::ServerAccess,
    client::{FederationClient, FederationError, RawResponse},
    discovery::{Discovery, DiscoveryOptions, Resolved},
    keys::{ServerKeys, Verified, VerifyKey},
};

/// Everything federation needs, shared by the HTTP surface and the services.
pub struct Federation {
    pub client: FederationClient,
    pub discovery: Arc<Discovery>,
    pub keys: Arc<ServerKeys>,
    pub access: Arc<ServerAccess>,
}

impl Federation {
    /// Builds the transport from `[federation]` and records a signing-key
    /// rotation, if there was one.
    pub async fn new(core: Arc<Core>) -> anyhow::Result<Arc<Self>> {
        let config = &core.config.federation;
        let roots = client::load_trusted_roots(config)?;
        let discovery = Discovery::new(DiscoveryOptions::from_config(config), &roots)?;
        let access = Arc::new(ServerAccess::from_config(config));
        let client =
            FederationClient::new(core.clone(), discovery.clone(), access.clone(), &roots)?;
        let keys = Arc::new(ServerKeys::new(core, client.clone()).await?);
        Ok(Arc::new(Self {
            client,
            discovery,
            keys,
            access,
        }))
    }
}
