//! The WebSocket stream: sync-shaped updates pushed as they happen, and
//! request/response messages for sending, after the Matrix WebSocket draft
//! (`attic/drafts/websockets.rst`). The protocol is in `docs/websocket.md`.
//!
//! `GET /_matrix/client/unstable/io.homeserver.ws/stream?since=&filter=`,
//! subprotocol `m.json`, authenticated like any client request.

use std::{collections::HashMap, time::Duration};

use axum::{
    extract::{
        ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade},
        Query, State,
    },
    http::HeaderMap,
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use engine::{
    accounts::Requester,
    sync::{filter::Filter, SyncRequest},
    typing::parse_timeout,
    Error,
};
use futures::{SinkExt, StreamExt};
use ruma::RoomId;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{
    error::{ApiError, ApiResult},
    extract::{access_token, AppState},
};

pub const PATH: &str = "/_matrix/client/unstable/io.homeserver.ws/stream";
/// The feature flag advertised in `/versions` `unstable_features`.
pub const FEATURE: &str = "io.homeserver.ws";

/// Largest accepted client message. Bigger frames close the socket (1009).
const MAX_MESSAGE: usize = 64 * 1024;
/// A peer that cannot take a message for this long is a slow consumer.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Close codes. 1008/1009 are RFC 6455; 4000+ are ours.
const CLOSE_SLOW_CONSUMER: u16 = 4008;
const CLOSE_DEAD_PEER: u16 = 4009;
const CLOSE_TOKEN_INVALID: u16 = 4001;

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    r.route(PATH, get(upgrade))
}

async fn upgrade(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    Query(q): Query<HashMap<String, String>>,
    ws: WebSocketUpgrade,
) -> ApiResult<Response> {
    let token =
        access_token(&headers, uri.query()).ok_or_else(|| ApiError(Error::missing_token()))?;
    let user = state.accounts.authenticate(&token).await?;
    let filter =
        crate::sync::resolve_filter(&state, &user, q.get("filter").map(String::as_str)).await?;
    if let Some(since) = q.get("since") {
        engine::sync::parse_token(since)?;
    }
    let since = q.get("since").cloned();
    let set_presence = q.get("set_presence").cloned();
    Ok(ws
        .protocols(["m.json"])
        // Client messages are small; a bigger one grows the buffer for itself.
        .read_buffer_size(1024)
        .write_buffer_size(4 * 1024)
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .on_upgrade(move |socket| run(socket, state, user, token, since, filter, set_presence))
        .into_response())
}

fn text(v: &Value) -> Message {
    Message::Text(Utf8Bytes::from(v.to_string()))
}

fn close(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    }))
}

/// Whether a sync response carries nothing worth pushing.
fn is_empty(resp: &Value) -> bool {
    let empty_obj = |v: &Value| v.as_object().is_none_or(|o| o.is_empty());
    let empty_arr = |v: &Value| v.as_array().is_none_or(|a| a.is_empty());
    empty_obj(&resp["rooms"]["join"])
        && empty_obj(&resp["rooms"]["invite"])
        && empty_obj(&resp["rooms"]["leave"])
        && empty_arr(&resp["presence"]["events"])
        && empty_arr(&resp["account_data"]["events"])
        && empty_arr(&resp["to_device"]["events"])
        && empty_arr(&resp["device_lists"]["changed"])
        && empty_arr(&resp["device_lists"]["left"])
}

/// One connection, one task: the socket's reader, its writer and the sync
/// long-poll are branches of a single `select!`, so an idle connection costs
/// one task, its buffers and a pending sync, and nothing else.
async fn run(
    socket: WebSocket,
    state: AppState,
    user: Requester,
    token: String,
    since: Option<String>,
    filter: Filter,
    set_presence: Option<String>,
) {
    let (mut sink, mut incoming) = socket.split();
    let sync_request = |since: Option<String>| SyncRequest {
        user_id: user.user_id.to_string(),
        device_id: user.device_id.clone(),
        since,
        timeout_ms: 30_000,
        full_state: false,
        filter: filter.clone(),
        set_presence: set_presence.clone(),
    };
    // The long-poll in flight, boxed so the idle task holds only a pointer
    // to it; re-armed from each answer's next_batch.
    let mut since = since;
    let mut pending = Box::pin(next_update(&state, sync_request(since.clone()), None));
    // A peer silent for three ping intervals is dead (`limits.ws_ping_interval_ms`).
    let mut ping = tokio::time::interval(Duration::from_millis(
        state.core.config.limits.ws_ping_interval_ms.max(10),
    ));
    ping.tick().await;
    let mut missed_pings = 0u32;
    let outcome = loop {
        let out = tokio::select! {
            msg = incoming.next() => {
                let Some(Ok(msg)) = msg else {
                    // Closed, or a protocol error such as an oversized frame
                    // (tungstenite answers 1009 itself).
                    break Ending::Gone;
                };
                missed_pings = 0;
                match msg {
                    // Boxed: the idle connection does not reserve room for a request.
                    Message::Text(t) => text(&Box::pin(handle_request(&state, &user, t.as_str())).await),
                    Message::Binary(_) => text(&json!({"error": Error::not_json(
                        "Binary frames are not supported; send JSON text.").to_json()})),
                    Message::Close(_) => break Ending::Gone,
                    Message::Ping(_) | Message::Pong(_) => continue,
                }
            }
            update = &mut pending => {
                let failed = update.is_err();
                let (out, next, token_invalid) = match update {
                    Ok(resp) => {
                        let next = resp["next_batch"].as_str().map(str::to_owned);
                        let wanted = since.is_none() || !is_empty(&resp);
                        let out = wanted.then(|| text(&json!({"method": "sync", "param": resp})));
                        (out, next.or(since.clone()), false)
                    }
                    Err(e) => {
                        let invalid = e.errcode == "M_UNKNOWN_TOKEN";
                        let out = Some(text(&json!({"method": "sync", "error": e.to_json()})));
                        (out, since.clone(), invalid)
                    }
                };
                // The device may have logged out while we waited.
                if token_invalid || state.accounts.authenticate(&token).await.is_err() {
                    if let Some(out) = out {
                        let _ = send(&mut sink, out).await;
                    }
                    break Ending::Close(CLOSE_TOKEN_INVALID, "token invalid");
                }
                since = next;
                // After a failure, pause before asking again.
                let pause = failed.then_some(Duration::from_secs(1));
                pending = Box::pin(next_update(&state, sync_request(since.clone()), pause));
                match out {
                    Some(out) => out,
                    None => continue,
                }
            }
            _ = ping.tick() => {
                missed_pings += 1;
                if missed_pings > 2 {
                    break Ending::Close(CLOSE_DEAD_PEER, "no pong");
                }
                Message::Ping(Default::default())
            }
        };
        match send(&mut sink, out).await {
            Sent::Ok => {}
            Sent::Failed => break Ending::Gone,
            // Slow consumer: drop it. Its last next_batch stays a valid resume token.
            Sent::TimedOut => break Ending::Close(CLOSE_SLOW_CONSUMER, "slow consumer"),
        }
    };
    if let Ending::Close(code, reason) = outcome {
        let _ = tokio::time::timeout(Duration::from_secs(1), sink.send(close(code, reason))).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
}

/// How a connection ends: the peer went away, or we close it with a code.
enum Ending {
    Gone,
    Close(u16, &'static str),
}

enum Sent {
    Ok,
    Failed,
    TimedOut,
}

/// Sends one message, bounded in time.
async fn send(sink: &mut futures::stream::SplitSink<WebSocket, Message>, msg: Message) -> Sent {
    match tokio::time::timeout(SEND_TIMEOUT, sink.send(msg)).await {
        Ok(Ok(())) => Sent::Ok,
        Ok(Err(_)) => Sent::Failed,
        Err(_) => Sent::TimedOut,
    }
}

/// The next sync answer, after `pause` if one is given.
async fn next_update(
    state: &AppState,
    req: SyncRequest,
    pause: Option<Duration>,
) -> Result<Value, Error> {
    if let Some(pause) = pause {
        tokio::time::sleep(pause).await;
    }
    state.sync.sync(&req).await
}

#[derive(Deserialize)]
struct Request {
    id: Option<Value>,
    method: Option<String>,
    #[serde(default)]
    param: Value,
}

/// Answers one request message with `{id, result}` or `{id, error}`.
async fn handle_request(state: &AppState, user: &Requester, text: &str) -> Value {
    let parsed: Request = match serde_json::from_str::<Value>(text) {
        Err(_) => return json!({"error": Error::not_json("Message is not JSON.").to_json()}),
        Ok(v) => match serde_json::from_value(v) {
            Ok(r) => r,
            Err(e) => return json!({"error": Error::bad_json(e.to_string()).to_json()}),
        },
    };
    let id = parsed.id.clone().unwrap_or(Value::Null);
    let Some(method) = parsed.method.as_deref() else {
        return json!({"id": id, "error": Error::bad_json("`method` is required").to_json()});
    };
    match dispatch(state, user, method, &parsed.param).await {
        Ok(result) => json!({"id": id, "result": result}),
        Err(ApiError(e)) => json!({"id": id, "error": e.to_json()}),
    }
}

fn str_param<'a>(param: &'a Value, name: &str) -> ApiResult<&'a str> {
    param[name]
        .as_str()
        .ok_or_else(|| ApiError(Error::bad_json(format!("`{name}` must be a string"))))
}

fn room_param(param: &Value) -> ApiResult<&RoomId> {
    crate::rooms::parse_room_id(str_param(param, "room_id")?)
}

async fn dispatch(state: &AppState, user: &Requester, method: &str, p: &Value) -> ApiResult<Value> {
    match method {
        "ping" => Ok(json!({})),
        "send" => {
            let event_id = crate::events::send_message(
                state,
                user,
                room_param(p)?,
                str_param(p, "event_type")?,
                str_param(p, "txn_id")?,
                p["content"].clone(),
            )
            .await?;
            Ok(json!({"event_id": event_id}))
        }
        "state" => {
            let key = p["state_key"].as_str().unwrap_or("");
            let event_id = crate::events::send_state(
                state,
                user,
                room_param(p)?,
                str_param(p, "event_type")?,
                key,
                p["content"].clone(),
            )
            .await?;
            Ok(json!({"event_id": event_id}))
        }
        "read_markers" => {
            crate::account_data::set_read_markers(state, user, room_param(p)?, p).await?;
            Ok(json!({}))
        }
        "receipt" => {
            let thread = p["thread_id"].as_str();
            crate::ephemeral::post_receipt(
                state,
                user,
                room_param(p)?,
                str_param(p, "receipt_type")?,
                str_param(p, "event_id")?,
                thread,
            )
            .await?;
            Ok(json!({}))
        }
        "typing" => {
            let typing = p["typing"]
                .as_bool()
                .ok_or_else(|| ApiError(Error::bad_json("`typing` must be a boolean")))?;
            let timeout = parse_timeout(typing, p["timeout"].as_u64())?;
            state
                .typing
                .set_typing(room_param(p)?, user.user_id.as_str(), typing, timeout)
                .await?;
            Ok(json!({}))
        }
        "presence" => {
            state
                .presence
                .set(
                    user.user_id.as_str(),
                    str_param(p, "presence")?,
                    p["status_msg"].as_str().map(str::to_owned),
                )
                .await?;
            Ok(json!({}))
        }
        other => Err(ApiError(Error::unrecognized(format!(
            "Unknown method `{other}`"
        )))),
    }
}
