//! Rooms across servers: the service the federation endpoints and the client
//! API call for anything that involves another server's copy of a room.
//!
//! The work is split by the spec's sections: [`super::membership`] (joins,
//! leaves, invites), [`super::transactions`] (inbound PDUs and EDUs) and
//! [`super::reads`] (events, state and history served to other servers). This
//! file holds what they share: a received PDU once checked ([`CheckedPdu`],
//! checked in [`super::pdu_checks`]), and fetching events from another server.

use std::sync::Arc;

use http::Method;
use ruma::{
    room_version_rules::RoomVersionRules, CanonicalJsonObject, CanonicalJsonValue, EventId,
    OwnedEventId, RoomId, RoomVersionId, ServerName,
};
use serde_json::Value;

use super::{client::FederationError, Federation};
use crate::{
    core::Core,
    error::{Error, Result},
    events::Pdu,
    keys::KeysService,
    presence::PresenceService,
    receipts::ReceiptService,
    rooms::RoomService,
    to_device::ToDeviceService,
    typing::TypingService,
};

pub struct RoomFederation {
    pub core: Arc<Core>,
    pub rooms: RoomService,
    pub fed: Arc<Federation>,
    pub edus: EduServices,
}

/// The services federation hands ephemeral data and key requests to.
pub struct EduServices {
    pub keys: KeysService,
    pub typing: TypingService,
    pub receipts: ReceiptService,
    pub presence: PresenceService,
    pub to_device: ToDeviceService,
}

/// A received PDU whose id, signatures and content hash have been checked.
pub struct CheckedPdu {
    pub pdu: Pdu,
    /// Canonical JSON as stored (redacted when the content hash did not match).
    pub json: String,
}

impl RoomFederation {
    pub fn new(
        core: Arc<Core>,
        rooms: RoomService,
        fed: Arc<Federation>,
        edus: EduServices,
    ) -> Arc<Self> {
        Arc::new(Self {
            core,
            rooms,
            fed,
            edus,
        })
    }

    /// Fetches one event from `server`, checked (`GET /event/{eventId}`).
    pub async fn fetch_event(
        &self,
        server: &ServerName,
        room_id: &RoomId,
        version: &RoomVersionId,
        event_id: &EventId,
    ) -> Result<CheckedPdu> {
        let path = format!("/_matrix/federation/v1/event/{}", enc(event_id.as_str()));
        let response = self
            .fed
            .client
            .request(server, Method::GET, &path, None)
            .await
            .map_err(remote_error)?;
        let pdu = response["pdus"]
            .as_array()
            .and_then(|a| a.first())
            .ok_or_else(|| Error::unknown("remote /event answered without a PDU"))?;
        let checked = self.check_pdu(room_id, version, pdu).await?;
        if checked.pdu.event_id != event_id {
            return Err(Error::unknown("remote /event answered with another event"));
        }
        Ok(checked)
    }
}

/// A JSON value as a canonical JSON object.
pub fn to_object(value: &Value) -> Result<CanonicalJsonObject> {
    match ruma::canonical_json::to_canonical_value(value) {
        Ok(CanonicalJsonValue::Object(o)) => Ok(o),
        Ok(_) => Err(Error::bad_json("PDU is not an object")),
        Err(e) => Err(Error::bad_json(format!("PDU is not canonical JSON: {e}"))),
    }
}

/// The event id of a PDU: its reference hash (room versions 3 and later).
pub fn event_id_of(object: &CanonicalJsonObject, rules: &RoomVersionRules) -> Result<OwnedEventId> {
    let hash = ruma::signatures::reference_hash(object, rules)
        .map_err(|e| Error::bad_json(format!("cannot hash PDU: {e}")))?;
    EventId::parse(format!("${hash}")).map_err(|e| Error::bad_json(e.to_string()))
}

/// Percent-encodes a path segment.
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A failed request to another server, as our error: the remote's own
/// refusal keeps its status and code; an unreachable server is a 502.
pub fn remote_error(e: FederationError) -> Error {
    match &e {
        FederationError::Remote {
            status,
            errcode,
            message,
            ..
        } => {
            let code: &'static str = match errcode.as_str() {
                "M_FORBIDDEN" => "M_FORBIDDEN",
                "M_NOT_FOUND" => "M_NOT_FOUND",
                "M_INCOMPATIBLE_ROOM_VERSION" => "M_INCOMPATIBLE_ROOM_VERSION",
                "M_UNSUPPORTED_ROOM_VERSION" => "M_UNSUPPORTED_ROOM_VERSION",
                "M_BAD_JSON" => "M_BAD_JSON",
                "M_LIMIT_EXCEEDED" => "M_LIMIT_EXCEEDED",
                _ => "M_UNKNOWN",
            };
            let status = if (400..600).contains(status) {
                *status
            } else {
                502
            };
            Error::new(status, code, format!("Remote server: {message}"))
        }
        _ => Error::new(502, "M_UNKNOWN", e.to_string()),
    }
}
