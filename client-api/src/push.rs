//! Push notifications (spec: "Push Notifications"): the `/pushrules/` API,
//! `GET /notifications`, `GET /pushers` and `POST /pushers/set`.
//!
//! Only the `global` scope exists; other scopes are unrecognised paths.

use axum::{
    extract::{Path, State},
    routing::get,
    Json, Router,
};
use engine::{
    push::{
        pusher_json,
        rules::{clean_actions, validate_actions, PushRule, Ruleset},
    },
    Error,
};
use ruma::{
    api::client::push::{
        delete_pushrule, get_notifications, get_pushers, get_pushrule, get_pushrule_actions,
        get_pushrule_enabled, get_pushrules_all, get_pushrules_global_scope, set_pusher,
        set_pushrule, set_pushrule_actions, set_pushrule_enabled,
    },
    push::NewPushRule,
};
use serde_json::{json, Value};

use crate::{
    error::ApiResult,
    extract::{AppState, Auth, Ruma},
    ruma_route, RumaResponse,
};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = ruma_route::<get_pushrules_all::v3::Request, _, _>(r, all_route);
    let r = ruma_route::<get_pushrules_global_scope::v3::Request, _, _>(r, global_route);
    let r = ruma_route::<get_pushrule::v3::Request, _, _>(r, get_rule_route);
    let r = ruma_route::<set_pushrule::v3::Request, _, _>(r, put_rule_route);
    let r = ruma_route::<delete_pushrule::v3::Request, _, _>(r, delete_rule_route);
    let r = ruma_route::<get_pushrule_enabled::v3::Request, _, _>(r, get_enabled_route);
    let r = ruma_route::<set_pushrule_enabled::v3::Request, _, _>(r, set_enabled_route);
    let r = ruma_route::<get_pushrule_actions::v3::Request, _, _>(r, get_actions_route);
    let r = ruma_route::<set_pushrule_actions::v3::Request, _, _>(r, set_actions_route);
    let r = ruma_route::<get_notifications::v3::Request, _, _>(r, notifications_route);
    let r = ruma_route::<get_pushers::v3::Request, _, _>(r, pushers_route);
    let mut r = ruma_route::<set_pusher::v3::Request, _, _>(r, set_pusher_route);
    // `GET /pushrules/global/{kind}/` has no ruma request type.
    for v in ["v3", "r0"] {
        r = r.route(
            &format!("/_matrix/client/{v}/pushrules/global/{{kind}}/"),
            get(kind_route),
        );
    }
    r
}

fn ruleset_json(ruleset: &Ruleset) -> ApiResult<Value> {
    Ok(serde_json::to_value(ruleset).map_err(|e| Error::unknown(e.to_string()))?)
}

async fn all_route(
    State(state): State<AppState>,
    req: Ruma<get_pushrules_all::v3::Request>,
) -> ApiResult<Json<Value>> {
    let ruleset = state.push.ruleset(req.user()?.user_id.as_str()).await?;
    Ok(Json(json!({"global": ruleset_json(&ruleset)?})))
}

async fn global_route(
    State(state): State<AppState>,
    req: Ruma<get_pushrules_global_scope::v3::Request>,
) -> ApiResult<Json<Value>> {
    let ruleset = state.push.ruleset(req.user()?.user_id.as_str()).await?;
    Ok(Json(ruleset_json(&ruleset)?))
}

async fn kind_route(
    State(state): State<AppState>,
    Auth(user): Auth,
    Path(kind): Path<String>,
) -> ApiResult<Json<Value>> {
    let ruleset = state.push.ruleset(user.user_id.as_str()).await?;
    let rules = ruleset
        .kind(&kind)
        .ok_or_else(|| Error::invalid_param(format!("Unknown push rule kind {kind}")))?;
    Ok(Json(
        serde_json::to_value(rules).map_err(|e| Error::unknown(e.to_string()))?,
    ))
}

async fn get_rule_route(
    State(state): State<AppState>,
    req: Ruma<get_pushrule::v3::Request>,
) -> ApiResult<Json<Value>> {
    let user = req.user()?;
    let rule = state
        .push
        .rule(
            user.user_id.as_str(),
            req.body.kind.as_str(),
            &req.body.rule_id,
        )
        .await?;
    Ok(Json(
        serde_json::to_value(rule).map_err(|e| Error::unknown(e.to_string()))?,
    ))
}

/// The rule a `PUT` creates, from ruma's parsed body.
fn new_rule(rule: &NewPushRule) -> ApiResult<(String, PushRule)> {
    let to_json =
        |v: Result<Value, serde_json::Error>| v.map_err(|e| Error::bad_json(e.to_string()));
    let (kind, value) = match rule {
        NewPushRule::Override(r) => ("override", to_json(serde_json::to_value(r))?),
        NewPushRule::Underride(r) => ("underride", to_json(serde_json::to_value(r))?),
        NewPushRule::Content(r) => ("content", to_json(serde_json::to_value(r))?),
        NewPushRule::Room(r) => ("room", to_json(serde_json::to_value(r))?),
        NewPushRule::Sender(r) => ("sender", to_json(serde_json::to_value(r))?),
        _ => return Err(Error::invalid_param("Unknown push rule kind.").into()),
    };
    let mut rule: PushRule = serde_json::from_value(value)?;
    rule.default = false;
    rule.enabled = true;
    rule.actions = clean_actions(rule.actions);
    if kind == "content" && rule.pattern.as_deref().is_none_or(str::is_empty) {
        return Err(Error::missing_param("Content rules need a `pattern`.").into());
    }
    if kind == "room" && ruma::RoomId::parse(&rule.rule_id).is_err() {
        return Err(Error::invalid_param("Room rules are named by a room id.").into());
    }
    if kind == "sender" && ruma::UserId::parse(&rule.rule_id).is_err() {
        return Err(Error::invalid_param("Sender rules are named by a user id.").into());
    }
    Ok((kind.to_owned(), rule))
}

async fn put_rule_route(
    State(state): State<AppState>,
    req: Ruma<set_pushrule::v3::Request>,
) -> ApiResult<RumaResponse<set_pushrule::v3::Response>> {
    let user = req.user()?;
    let (kind, rule) = new_rule(&req.body.rule)?;
    validate_actions(&rule.actions)?;
    let (before, after) = (req.body.before.as_deref(), req.body.after.as_deref());
    state
        .push
        .edit_rules(user.user_id.as_str(), |rules| {
            rules.put_user_rule(&kind, rule, before, after)
        })
        .await?;
    Ok(RumaResponse(set_pushrule::v3::Response::new()))
}

async fn delete_rule_route(
    State(state): State<AppState>,
    req: Ruma<delete_pushrule::v3::Request>,
) -> ApiResult<RumaResponse<delete_pushrule::v3::Response>> {
    let user = req.user()?;
    let (kind, rule_id) = (req.body.kind.as_str(), req.body.rule_id.as_str());
    state
        .push
        .edit_rules(user.user_id.as_str(), |rules| {
            rules.delete_user_rule(kind, rule_id)
        })
        .await?;
    Ok(RumaResponse(delete_pushrule::v3::Response::new()))
}

async fn get_enabled_route(
    State(state): State<AppState>,
    req: Ruma<get_pushrule_enabled::v3::Request>,
) -> ApiResult<Json<Value>> {
    let user = req.user()?;
    let rule = state
        .push
        .rule(
            user.user_id.as_str(),
            req.body.kind.as_str(),
            &req.body.rule_id,
        )
        .await?;
    Ok(Json(json!({"enabled": rule.enabled})))
}

async fn set_enabled_route(
    State(state): State<AppState>,
    req: Ruma<set_pushrule_enabled::v3::Request>,
) -> ApiResult<RumaResponse<set_pushrule_enabled::v3::Response>> {
    let user = req.user()?;
    let (kind, rule_id, enabled) = (
        req.body.kind.as_str(),
        req.body.rule_id.as_str(),
        req.body.enabled,
    );
    edit_rule(&state, user.user_id.as_str(), kind, rule_id, |rule| {
        rule.enabled = enabled
    })
    .await?;
    Ok(RumaResponse(set_pushrule_enabled::v3::Response::new()))
}

/// Changes one existing rule of the user's: `M_NOT_FOUND` if there is no
/// such rule, `M_INVALID_PARAM` if there is no such kind.
async fn edit_rule(
    state: &AppState,
    user_id: &str,
    kind: &str,
    rule_id: &str,
    change: impl FnOnce(&mut PushRule),
) -> Result<(), Error> {
    state
        .push
        .edit_rules(user_id, |rules| {
            let known = rules.kind(kind).is_some();
            match rules.get_mut(kind, rule_id) {
                Some(rule) => {
                    change(rule);
                    Ok(())
                }
                None if known => Err(Error::not_found("Push rule not found.")),
                None => Err(Error::invalid_param(format!(
                    "Unknown push rule kind {kind}"
                ))),
            }
        })
        .await
}

async fn get_actions_route(
    State(state): State<AppState>,
    req: Ruma<get_pushrule_actions::v3::Request>,
) -> ApiResult<Json<Value>> {
    let user = req.user()?;
    let rule = state
        .push
        .rule(
            user.user_id.as_str(),
            req.body.kind.as_str(),
            &req.body.rule_id,
        )
        .await?;
    Ok(Json(json!({"actions": rule.actions})))
}

async fn set_actions_route(
    State(state): State<AppState>,
    req: Ruma<set_pushrule_actions::v3::Request>,
) -> ApiResult<RumaResponse<set_pushrule_actions::v3::Response>> {
    let user = req.user()?;
    let actions: Vec<Value> = serde_json::to_value(&req.body.actions)?
        .as_array()
        .cloned()
        .unwrap_or_default();
    validate_actions(&actions)?;
    let actions = clean_actions(actions);
    let (kind, rule_id) = (req.body.kind.as_str(), req.body.rule_id.as_str());
    edit_rule(&state, user.user_id.as_str(), kind, rule_id, |rule| {
        rule.actions = actions
    })
    .await?;
    Ok(RumaResponse(set_pushrule_actions::v3::Response::new()))
}

async fn notifications_route(
    State(state): State<AppState>,
    req: Ruma<get_notifications::v3::Request>,
) -> ApiResult<Json<Value>> {
    let user = req.user()?;
    let body = state
        .push
        .notifications(
            user.user_id.as_str(),
            req.body.from.as_deref(),
            req.body.limit.map(u64::from),
            req.body.only.as_deref(),
        )
        .await?;
    Ok(Json(body))
}

async fn pushers_route(
    State(state): State<AppState>,
    req: Ruma<get_pushers::v3::Request>,
) -> ApiResult<Json<Value>> {
    let pushers = state.push.pushers(req.user()?.user_id.as_str()).await?;
    let list: Vec<Value> = pushers.iter().map(pusher_json).collect();
    Ok(Json(json!({"pushers": list})))
}

async fn set_pusher_route(
    State(state): State<AppState>,
    req: Ruma<set_pusher::v3::Request>,
) -> ApiResult<RumaResponse<set_pusher::v3::Response>> {
    let user = req.user()?;
    match &req.body.action {
        set_pusher::v3::PusherAction::Post(data) => {
            let body = serde_json::to_value(&data.pusher)?;
            state
                .push
                .set_pusher(user.user_id.as_str(), &body, data.append)
                .await?;
        }
        set_pusher::v3::PusherAction::Delete(ids) => {
            state
                .push
                .delete_pusher(user.user_id.as_str(), &ids.app_id, &ids.pushkey)
                .await?;
        }
        _ => return Err(Error::invalid_param("Unknown pusher action.").into()),
    }
    Ok(RumaResponse(set_pusher::v3::Response::new()))
}
