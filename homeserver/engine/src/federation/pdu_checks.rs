//! Checking PDUs received from other servers (Server-Server API, "Checks
//! performed on receipt of a PDU", steps 1-3): format, event id, room,
//! signatures and content hash. One PDU at a time for transactions, or a
//! whole `send_join` response at once.
//!
//! Each check is split into its CPU-bound parts (canonical JSON, reference
//! and content hashes, ed25519) and the key lookup between them, which may
//! read the database or fetch keys. For a batch the CPU-bound parts run on
//! blocking threads, a chunk per core, and the keys are read once per server
//! for the whole batch: joining a room with 10,000 members checks 10,000
//! events, and doing that one by one on one core kept the join above 5 s.

use std::sync::Arc;

use ruma::{
    room_version_rules::RoomVersionRules, signatures::PublicKeyMap, CanonicalJsonObject,
    CanonicalJsonValue, OwnedEventId, OwnedRoomId, RoomId, RoomVersionId,
};
use serde_json::{value::RawValue, Value};

use super::{
    keys::{check_event_signatures, signature_needs, KeyCache, SignatureNeeds},
    rooms::{event_id_of, to_object, CheckedPdu, RoomFederation},
    Verified,
};
use crate::{
    error::{Error, Result},
    events::{builder, Pdu},
};

/// Below this many events a batch is checked on the calling task: handing
/// work to other threads costs more than it saves.
const MIN_PARALLEL: usize = 64;

/// A PDU whose format, id and room passed, before its signatures are checked.
struct Prepared {
    event_id: OwnedEventId,
    object: CanonicalJsonObject,
    needs: SignatureNeeds,
}

impl RoomFederation {
    /// Checks a PDU received from another server: its format, id, signatures
    /// and content hash. An event whose content hash does not match is kept
    /// redacted, as the spec requires.
    pub async fn check_pdu(
        &self,
        room_id: &RoomId,
        version: &RoomVersionId,
        value: &Value,
    ) -> Result<CheckedPdu> {
        let rules = rules_of(version)?;
        let prepared = prepare(room_id, &rules, to_object(value)?)?;
        let map = self
            .fed
            .keys
            .event_key_map(&prepared.needs, &rules, &mut KeyCache::default())
            .await?;
        finish(room_id, &rules, prepared, &map)
    }

    /// [`Self::check_pdu`] for many PDUs, each still unparsed JSON (as
    /// received: parsing them is part of the work spread over the cores):
    /// one result per PDU, in order. Each event gets exactly the checks it
    /// would get alone.
    pub async fn check_pdus(
        &self,
        room_id: &RoomId,
        version: &RoomVersionId,
        raws: Vec<Box<RawValue>>,
    ) -> Result<Vec<Result<CheckedPdu>>> {
        let rules = Arc::new(rules_of(version)?);
        let room: Arc<OwnedRoomId> = Arc::new(room_id.to_owned());
        let prepared = {
            let (rules, room) = (rules.clone(), room.clone());
            parallel_map(raws, move |raw| {
                prepare(&room, &rules, object_of_raw(&raw)?)
            })
            .await?
        };
        // Keys: read once per server for the batch, fetched only if missing.
        let mut cache = KeyCache::default();
        let mut keyed = Vec::with_capacity(prepared.len());
        for p in prepared {
            keyed.push(match p {
                Ok(p) => match self
                    .fed
                    .keys
                    .event_key_map(&p.needs, &rules, &mut cache)
                    .await
                {
                    Ok(map) => Ok((p, map)),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            });
        }
        parallel_map(keyed, move |item| {
            let (p, map) = item?;
            finish(&room, &rules, p, &map)
        })
        .await
    }
}

fn rules_of(version: &RoomVersionId) -> Result<RoomVersionRules> {
    version
        .rules()
        .ok_or_else(|| Error::unsupported_room_version(version.as_str()))
}

/// A received PDU's JSON as a canonical JSON object. The parsed value is
/// moved into the canonical form, not serialised into it as
/// [`to_object`] must do for a borrowed value.
fn object_of_raw(raw: &RawValue) -> Result<CanonicalJsonObject> {
    let value: Value = serde_json::from_str(raw.get())
        .map_err(|e| Error::bad_json(format!("PDU is not JSON: {e}")))?;
    match CanonicalJsonValue::try_from(value) {
        Ok(CanonicalJsonValue::Object(o)) => Ok(o),
        Ok(_) => Err(Error::bad_json("PDU is not an object")),
        Err(e) => Err(Error::bad_json(format!("PDU is not canonical JSON: {e}"))),
    }
}

/// Format, event id and room; what the signature check will need.
fn prepare(
    room_id: &RoomId,
    rules: &RoomVersionRules,
    mut object: CanonicalJsonObject,
) -> Result<Prepared> {
    // Servers may attach `unsigned` data; it is not part of the signed event.
    object.remove("unsigned");
    ruma::state_res::check_pdu_format(&object, &rules.event_format)
        .map_err(|e| Error::bad_json(format!("invalid PDU: {e}")))?;
    let event_id = event_id_of(&object, rules)?;
    if let Some(CanonicalJsonValue::String(r)) = object.get("room_id") {
        if r != room_id.as_str() {
            return Err(Error::bad_json("PDU belongs to another room"));
        }
    }
    let needs = signature_needs(&object, rules)?;
    Ok(Prepared {
        event_id,
        object,
        needs,
    })
}

/// Signatures and content hash against `map`; a hash mismatch keeps the
/// event redacted.
fn finish(
    room_id: &RoomId,
    rules: &RoomVersionRules,
    prepared: Prepared,
    map: &PublicKeyMap,
) -> Result<CheckedPdu> {
    let Prepared {
        event_id,
        mut object,
        ..
    } = prepared;
    if check_event_signatures(map, &object, rules)? == Verified::Signatures {
        tracing::info!(%event_id, "content hash mismatch: keeping the event redacted");
        object = ruma::canonical_json::redact(object, &rules.redaction, None)
            .map_err(|e| Error::bad_json(format!("cannot redact PDU: {e}")))?;
    }
    let json = builder::canonical_string(&object);
    let pdu = Pdu::parse(event_id, room_id, &json)?;
    Ok(CheckedPdu { pdu, json })
}

/// `f` over `items`, in order, on blocking threads: one chunk per core. Small
/// batches run on the calling task.
async fn parallel_map<T, R, F>(items: Vec<T>, f: F) -> Result<Vec<R>>
where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(T) -> R + Send + Sync + 'static,
{
    if items.len() < MIN_PARALLEL {
        return Ok(items.into_iter().map(f).collect());
    }
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let chunk = items.len().div_ceil(threads);
    let f = Arc::new(f);
    let mut tasks = Vec::with_capacity(threads);
    let mut items = items.into_iter();
    loop {
        let part: Vec<T> = items.by_ref().take(chunk).collect();
        if part.is_empty() {
            break;
        }
        let f = f.clone();
        tasks.push(tokio::task::spawn_blocking(move || {
            part.into_iter().map(|t| f(t)).collect::<Vec<R>>()
        }));
    }
    let mut out = Vec::new();
    for task in tasks {
        out.extend(
            task.await
                .map_err(|e| Error::unknown(format!("checking PDUs: {e}")))?,
        );
    }
    Ok(out)
}
