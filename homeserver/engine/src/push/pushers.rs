//! Pushers (spec: "Push Notifications: Client behaviour"): `GET /pushers` and
//! `POST /pushers/set`. Only `http` pushers deliver; the homeserver posts to
//! their `data.url`, a push gateway's `/_matrix/push/v1/notify`.

use serde_json::{json, Value};

use super::PushService;
use crate::{
    error::{Error, Result},
    storage::PusherRecord,
    util::now_ms,
};

/// The path every push gateway serves (Push Gateway API).
pub const NOTIFY_PATH: &str = "/_matrix/push/v1/notify";

fn field<'a>(body: &'a Value, name: &str) -> Result<&'a str> {
    body[name]
        .as_str()
        .ok_or_else(|| Error::missing_param(format!("Missing or invalid `{name}`.")))
}

/// Checks an http pusher's `data`: an http(s) URL to a gateway's notify path,
/// and a known `format`.
fn check_http_data(data: &Value) -> Result<()> {
    let url = data["url"]
        .as_str()
        .ok_or_else(|| Error::invalid_param("http pushers need `data.url`."))?;
    let parsed = reqwest::Url::parse(url)
        .map_err(|_| Error::invalid_param("`data.url` is not a valid URL."))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.path() != NOTIFY_PATH {
        return Err(Error::invalid_param(format!(
            "`data.url` must be an http(s) URL with the path {NOTIFY_PATH}."
        )));
    }
    match data.get("format") {
        None | Some(Value::Null) => Ok(()),
        Some(f) if f == "event_id_only" => Ok(()),
        Some(_) => Err(Error::invalid_param(
            "`data.format` must be `event_id_only` or absent.",
        )),
    }
}

/// A pusher as `GET /pushers` lists it.
pub fn pusher_json(p: &PusherRecord) -> Value {
    let mut out = json!({
        "pushkey": p.pushkey,
        "kind": p.kind,
        "app_id": p.app_id,
        "app_display_name": p.app_display_name,
        "device_display_name": p.device_display_name,
        "lang": p.lang,
        "data": serde_json::from_str::<Value>(&p.data).unwrap_or_else(|_| json!({})),
    });
    if let Some(tag) = &p.profile_tag {
        out["profile_tag"] = json!(tag);
    }
    out
}

impl PushService {
    pub async fn pushers(&self, user_id: &str) -> Result<Vec<PusherRecord>> {
        self.core.storage.push.pushers(user_id).await
    }

    /// `POST /pushers/set` with a pusher body: adds or updates it.
    pub async fn set_pusher(&self, user_id: &str, body: &Value, append: bool) -> Result<()> {
        let app_id = field(body, "app_id")?;
        let pushkey = field(body, "pushkey")?;
        if app_id.is_empty() || app_id.len() > 64 {
            return Err(Error::invalid_param("`app_id` must be 1 to 64 characters."));
        }
        if pushkey.is_empty() || pushkey.len() > 512 {
            return Err(Error::invalid_param("`pushkey` must be 1 to 512 bytes."));
        }
        let kind = field(body, "kind")?;
        if kind != "http" {
            return Err(Error::invalid_param(format!(
                "Pusher kind {kind} is not supported; use `http`."
            )));
        }
        let data = body.get("data").cloned().unwrap_or_else(|| json!({}));
        if !data.is_object() {
            return Err(Error::bad_json("`data` must be an object."));
        }
        check_http_data(&data)?;
        let record = PusherRecord {
            user_id: user_id.to_owned(),
            app_id: app_id.to_owned(),
            pushkey: pushkey.to_owned(),
            kind: kind.to_owned(),
            app_display_name: field(body, "app_display_name")?.to_owned(),
            device_display_name: field(body, "device_display_name")?.to_owned(),
            profile_tag: body["profile_tag"].as_str().map(str::to_owned),
            lang: field(body, "lang")?.to_owned(),
            data: data.to_string(),
            pushkey_ts: now_ms(),
        };
        self.core.storage.push.set_pusher(&record, append).await
    }

    /// `POST /pushers/set` with `kind: null`: removes the pusher (a no-op if absent).
    pub async fn delete_pusher(&self, user_id: &str, app_id: &str, pushkey: &str) -> Result<()> {
        self.core
            .storage
            .push
            .delete_pusher(user_id, app_id, pushkey)
            .await
            .map(|_| ())
    }
}
