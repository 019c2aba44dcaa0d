//! Authorisation of a new event against the room's current state, by the room
//! version's rules (ruma's `state-res` implements the spec's rule list).

use std::{collections::HashMap, sync::Arc};

use ruma::{events::StateEventType, room_version_rules::AuthorizationRules, EventId};

use super::Pdu;
use crate::error::{Error, Result};

/// Current state keyed by `(type, state_key)`.
pub type StateMap = HashMap<(String, String), Arc<Pdu>>;

/// Runs the state-independent and state-dependent auth rules. `by_id` resolves the
/// event's `auth_events`.
pub fn check(
    rules: &AuthorizationRules,
    pdu: &Pdu,
    state: &StateMap,
    by_id: &HashMap<&EventId, &Pdu>,
) -> Result<()> {
    ruma::state_res::check_state_independent_auth_rules(rules, pdu, |id: &EventId| {
        by_id.get(id).copied()
    })
    .map_err(|reason| Error::forbidden(format!("Event not authorised: {reason}")))?;
    ruma::state_res::check_state_dependent_auth_rules(
        rules,
        pdu,
        |kind: &StateEventType, key: &str| {
            state.get(&(kind.to_string(), key.to_owned())).map(|p| &**p)
        },
    )
    .map_err(|reason| Error::forbidden(format!("Event not authorised: {reason}")))
}
