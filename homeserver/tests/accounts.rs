//! Accounts, login, tokens and devices.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

const V3: &str = "/_matrix/client/v3";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_availability_and_errors() {
    let server = TestServer::start().await;
    let avail = server
        .get(&format!("{V3}/register/available?username=alice"))
        .await
        .ok();
    assert_eq!(avail["available"], true);

    let alice = server.register("alice").await;
    assert_eq!(alice.user_id, "@alice:localhost");
    assert!(!alice.access_token.is_empty() && !alice.device_id.is_empty());

    server
        .get(&format!("{V3}/register/available?username=alice"))
        .await
        .assert_error(400, "M_USER_IN_USE");
    server
        .get(&format!(
            "{V3}/register/available?username={}",
            enc("Not Valid!")
        ))
        .await
        .assert_error(400, "M_INVALID_USERNAME");

    // Registering a taken name fails at once (before or after UIA) with M_USER_IN_USE.
    let resp = server
        .post(
            &format!("{V3}/register"),
            json!({ "username": "alice", "password": PASSWORD }),
        )
        .await;
    resp.assert_error(400, "M_USER_IN_USE");
    let resp = server
        .post(
            &format!("{V3}/register"),
            json!({ "username": "ALICE WAS HERE", "password": PASSWORD }),
        )
        .await;
    resp.assert_error(400, "M_INVALID_USERNAME");

    // Register with inhibit_login: an account, but no token.
    let mut body = json!({ "username": "quiet", "password": PASSWORD, "inhibit_login": true });
    let session = server
        .post(&format!("{V3}/register"), body.clone())
        .await
        .body["session"]
        .clone();
    body["auth"] = json!({ "type": "m.login.dummy", "session": session });
    let done = server.post(&format!("{V3}/register"), body).await.ok();
    assert_eq!(done["user_id"], "@quiet:localhost");
    assert!(
        done.get("access_token").is_none(),
        "inhibit_login must not issue a token: {done}"
    );
    server.login("quiet", PASSWORD).await;

    // Without a username the server picks one.
    let mut body = json!({ "password": PASSWORD });
    let session = server
        .post(&format!("{V3}/register"), body.clone())
        .await
        .body["session"]
        .clone();
    body["auth"] = json!({ "type": "m.login.dummy", "session": session });
    let done = server.post(&format!("{V3}/register"), body).await.ok();
    assert!(
        done["user_id"].as_str().unwrap().ends_with(":localhost"),
        "{done}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uia_session_is_required_and_single_use() {
    let server = TestServer::start().await;
    // An unknown session is refused.
    let resp = server
        .post(
            &format!("{V3}/register"),
            json!({ "username": "x", "password": PASSWORD, "auth": { "type": "m.login.dummy", "session": "made-up" } }),
        )
        .await;
    assert!(
        resp.status.is_client_error(),
        "a made-up UIA session must not register: {resp:?}"
    );
    let avail = server
        .get(&format!("{V3}/register/available?username=x"))
        .await
        .ok();
    assert_eq!(avail["available"], true, "nothing was registered");

    // A completed session can't register a second account.
    let mut body = json!({ "username": "first", "password": PASSWORD });
    let session = server
        .post(&format!("{V3}/register"), body.clone())
        .await
        .body["session"]
        .clone();
    body["auth"] = json!({ "type": "m.login.dummy", "session": session });
    server
        .post(&format!("{V3}/register"), body.clone())
        .await
        .ok();
    body["username"] = json!("second");
    let resp = server.post(&format!("{V3}/register"), body).await;
    assert!(
        !resp.status.is_success(),
        "a used UIA session registered again: {resp:?}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_can_be_closed() {
    let server = TestServer::start_with(|c| c.registration.enabled = false).await;
    let resp = server
        .post(
            &format!("{V3}/register"),
            json!({ "username": "alice", "password": PASSWORD }),
        )
        .await;
    resp.assert_error(403, "M_FORBIDDEN");
    // The shared secret still works.
    let done = server.admin_register("alice", PASSWORD, false).await.ok();
    assert_eq!(done["user_id"], "@alice:localhost");
    server.login("alice", PASSWORD).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_token_flow_is_advertised() {
    let server = TestServer::start_with(|c| c.registration.require_token = true).await;
    let first = server
        .post(
            &format!("{V3}/register"),
            json!({ "username": "alice", "password": PASSWORD }),
        )
        .await;
    assert_eq!(first.status.as_u16(), 401, "{first:?}");
    assert!(
        has_flow(&first.body, &["m.login.registration_token"]),
        "flows: {first:?}"
    );
    assert!(
        !has_flow(&first.body, &["m.login.dummy"]),
        "dummy alone must not complete a token-gated registration: {first:?}"
    );

    // Dummy auth alone doesn't register.
    let session = first.body["session"].clone();
    let resp = server
        .post(
            &format!("{V3}/register"),
            json!({ "username": "alice", "password": PASSWORD, "auth": { "type": "m.login.dummy", "session": session } }),
        )
        .await;
    assert!(!resp.status.is_success(), "{resp:?}");
    // A bogus token isn't valid and doesn't register.
    let v = server
        .get("/_matrix/client/v1/register/m.login.registration_token/validity?token=bogus")
        .await
        .ok();
    assert_eq!(v["valid"], false);
    let resp = server
        .post(
            &format!("{V3}/register"),
            json!({ "username": "alice", "password": PASSWORD,
                    "auth": { "type": "m.login.registration_token", "token": "bogus", "session": session } }),
        )
        .await;
    assert_eq!(
        resp.status.as_u16(),
        401,
        "a wrong registration token is a failed UIA stage: {resp:?}"
    );
    let avail = server
        .get(&format!("{V3}/register/available?username=alice"))
        .await
        .ok();
    assert_eq!(avail["available"], true);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_secret_registration() {
    let server = TestServer::start().await;
    let done = server.admin_register("admin1", "pw-1", false).await.ok();
    assert_eq!(done["user_id"], "@admin1:localhost");
    let token = done["access_token"].as_str().expect("access_token");
    let who = server.with_token(token).whoami().await.ok();
    assert_eq!(who["user_id"], "@admin1:localhost");
    server.login("admin1", "pw-1").await;

    // A wrong MAC is refused and registers nothing.
    let nonce = server.get("/_synapse/admin/v1/register").await.ok()["nonce"]
        .as_str()
        .unwrap()
        .to_owned();
    let bad_mac = admin_register_mac("wrong-secret", &nonce, "mallory", "pw", false);
    let resp = server
        .post(
            "/_synapse/admin/v1/register",
            json!({ "nonce": nonce, "username": "mallory", "password": "pw", "admin": false, "mac": bad_mac }),
        )
        .await;
    resp.assert_error(403, "M_FORBIDDEN");

    // A nonce is single use.
    let nonce = server.get("/_synapse/admin/v1/register").await.ok()["nonce"]
        .as_str()
        .unwrap()
        .to_owned();
    let mac = admin_register_mac(SHARED_SECRET, &nonce, "once", "pw", false);
    let body =
        json!({ "nonce": nonce, "username": "once", "password": "pw", "admin": false, "mac": mac });
    server
        .post("/_synapse/admin/v1/register", body.clone())
        .await
        .ok();
    let again = server.post("/_synapse/admin/v1/register", body).await;
    assert!(
        again.status.is_client_error(),
        "a reused nonce must be refused: {again:?}"
    );

    let avail = server
        .get(&format!("{V3}/register/available?username=mallory"))
        .await
        .ok();
    assert_eq!(avail["available"], true);

    // An unconfigured shared secret disables the endpoint.
    let closed = TestServer::start_with(|c| c.registration.shared_secret = None).await;
    let resp = closed.get("/_synapse/admin/v1/register").await;
    assert!(
        !resp.status.is_success(),
        "no shared secret, no admin registration: {resp:?}"
    );
    closed.shutdown().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_and_whoami() {
    let server = TestServer::start().await;
    let flows = server.get(&format!("{V3}/login")).await.ok();
    assert!(
        flows["flows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["type"] == "m.login.password"),
        "GET /login offers m.login.password: {flows}"
    );
    let alice = server.register("alice").await;

    // By localpart and by full user id.
    let a = server.login("alice", PASSWORD).await;
    let b = server.login("@alice:localhost", PASSWORD).await;
    assert_eq!(a.user_id, alice.user_id);
    assert_eq!(b.user_id, alice.user_id);
    assert!(a.device_id != b.device_id && a.device_id != alice.device_id);

    let who = a.whoami().await.ok();
    assert_eq!(who["user_id"], alice.user_id.as_str());
    assert_eq!(who["device_id"], a.device_id.as_str());

    // A chosen device id is kept.
    let c = server
        .login_with(
            "alice",
            PASSWORD,
            json!({ "device_id": "MYPHONE", "initial_device_display_name": "Phone" }),
        )
        .await;
    assert_eq!(c.device_id, "MYPHONE");
    let dev = c.get(&format!("{V3}/devices/MYPHONE")).await.ok();
    assert_eq!(dev["display_name"], "Phone");

    server
        .login_raw("alice", "wrong password", json!({}))
        .await
        .assert_error(403, "M_FORBIDDEN");
    server
        .login_raw("nobody", PASSWORD, json!({}))
        .await
        .assert_error(403, "M_FORBIDDEN");
    let resp = server
        .post(
            &format!("{V3}/login"),
            json!({ "type": "m.login.bogus", "user": "alice" }),
        )
        .await;
    assert!(
        resp.status.as_u16() == 400 && resp.errcode().starts_with("M_"),
        "unknown login type: {resp:?}"
    );
    // The good token still works after failed logins.
    a.whoami().await.ok();
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_and_logout_all() {
    let server = TestServer::start().await;
    let one = server.register("alice").await;
    let two = server.login("alice", PASSWORD).await;
    let three = server.login("alice", PASSWORD).await;

    one.logout().await;
    let resp = one.whoami().await;
    resp.assert_error(401, "M_UNKNOWN_TOKEN");
    assert_eq!(resp.body["soft_logout"], false, "{resp:?}");
    two.whoami().await.ok();

    // The logged-out device is gone from the device list.
    let devices = two.get(&format!("{V3}/devices")).await.ok();
    let ids: Vec<&str> = devices["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["device_id"].as_str().unwrap())
        .collect();
    assert!(!ids.contains(&one.device_id.as_str()), "{devices}");
    assert!(
        ids.contains(&two.device_id.as_str()) && ids.contains(&three.device_id.as_str()),
        "{devices}"
    );

    two.post(&format!("{V3}/logout/all"), json!({})).await.ok();
    two.whoami().await.assert_error(401, "M_UNKNOWN_TOKEN");
    three.whoami().await.assert_error(401, "M_UNKNOWN_TOKEN");
    // The password still works.
    let four = server.login("alice", PASSWORD).await;
    let devices = four.get(&format!("{V3}/devices")).await.ok();
    assert_eq!(
        devices["devices"].as_array().unwrap().len(),
        1,
        "only the new device remains: {devices}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_list_get_update_delete() {
    let server = TestServer::start().await;
    let phone = server
        .register_with(
            "alice",
            Some(PASSWORD),
            json!({ "initial_device_display_name": "Phone" }),
        )
        .await;
    let laptop = server
        .login_with(
            "alice",
            PASSWORD,
            json!({ "initial_device_display_name": "Laptop" }),
        )
        .await;

    let list = phone.get(&format!("{V3}/devices")).await.ok();
    let mut names: Vec<(String, String)> = list["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["device_id"].as_str().unwrap().to_owned(),
                d["display_name"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    names.sort();
    let mut want = vec![
        (phone.device_id.clone(), "Phone".to_owned()),
        (laptop.device_id.clone(), "Laptop".to_owned()),
    ];
    want.sort();
    assert_eq!(names, want);

    let path = format!("{V3}/devices/{}", enc(&laptop.device_id));
    let dev = phone.get(&path).await.ok();
    assert_eq!(dev["device_id"], laptop.device_id.as_str());
    assert_eq!(dev["display_name"], "Laptop");
    phone
        .put(&path, json!({ "display_name": "Work laptop" }))
        .await
        .ok();
    assert_eq!(laptop.get(&path).await.ok()["display_name"], "Work laptop");
    phone
        .get(&format!("{V3}/devices/NOSUCHDEVICE"))
        .await
        .assert_error(404, "M_NOT_FOUND");

    // Another user can't see alice's devices.
    let bob = server.register("bob").await;
    bob.get(&path).await.assert_error(404, "M_NOT_FOUND");

    // Delete needs UIA with the password.
    let first = phone.delete(&path).await;
    assert_eq!(first.status.as_u16(), 401, "{first:?}");
    assert!(has_flow(&first.body, &["m.login.password"]), "{first:?}");
    let session = first.body["session"].as_str().expect("session").to_owned();
    let auth = |password: &str| {
        json!({ "auth": {
            "type": "m.login.password",
            "identifier": { "type": "m.id.user", "user": "alice" },
            "password": password,
            "session": session,
        }})
    };
    let wrong = phone
        .request(reqwest::Method::DELETE, &path, Body::Json(auth("wrong")))
        .await;
    assert_eq!(
        wrong.status.as_u16(),
        401,
        "a wrong password fails the stage: {wrong:?}"
    );
    assert_eq!(wrong.errcode(), "M_FORBIDDEN", "{wrong:?}");
    laptop.whoami().await.ok();

    phone
        .request(reqwest::Method::DELETE, &path, Body::Json(auth(PASSWORD)))
        .await
        .ok();
    laptop.whoami().await.assert_error(401, "M_UNKNOWN_TOKEN");
    phone.get(&path).await.assert_error(404, "M_NOT_FOUND");
    let list = phone.get(&format!("{V3}/devices")).await.ok();
    assert_eq!(list["devices"].as_array().unwrap().len(), 1);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_tokens() {
    let server =
        TestServer::start_with(|c| c.registration.access_token_lifetime_ms = Some(2_000)).await;
    server.register("alice").await;

    let login = server
        .login_raw("alice", PASSWORD, json!({ "refresh_token": true }))
        .await
        .ok();
    let access = login["access_token"].as_str().unwrap().to_owned();
    let refresh = login["refresh_token"]
        .as_str()
        .expect("refresh_token when asked for")
        .to_owned();
    let expires = login["expires_in_ms"]
        .as_u64()
        .expect("expires_in_ms with a refresh token");
    assert!(expires > 0 && expires <= 2_000, "expires_in_ms {expires}");
    let client = server.with_token(&access);
    client.whoami().await.ok();

    // A login that doesn't ask gets no refresh token and a non-expiring token.
    let plain = server.login_raw("alice", PASSWORD, json!({})).await.ok();
    assert!(plain.get("refresh_token").is_none(), "{plain}");

    // The expired access token is a soft logout.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let resp = client.whoami().await;
    resp.assert_error(401, "M_UNKNOWN_TOKEN");
    assert_eq!(
        resp.body["soft_logout"], true,
        "an expired token is a soft logout: {resp:?}"
    );
    server
        .with_token(plain["access_token"].as_str().unwrap())
        .whoami()
        .await
        .ok();

    let new = server
        .post(
            &format!("{V3}/refresh"),
            json!({ "refresh_token": refresh }),
        )
        .await
        .ok();
    let new_access = new["access_token"].as_str().unwrap().to_owned();
    let new_refresh = new["refresh_token"].as_str().unwrap_or(&refresh).to_owned();
    assert_ne!(new_access, access);
    let who = server.with_token(&new_access).whoami().await.ok();
    assert_eq!(who["user_id"], "@alice:localhost");
    assert_eq!(
        who["device_id"], login["device_id"],
        "refresh keeps the device"
    );

    // Once the new token is used, the old refresh token is revoked.
    if new_refresh != refresh {
        server
            .post(
                &format!("{V3}/refresh"),
                json!({ "refresh_token": refresh }),
            )
            .await
            .assert_error(401, "M_UNKNOWN_TOKEN");
    }
    server
        .post(
            &format!("{V3}/refresh"),
            json!({ "refresh_token": "bogus" }),
        )
        .await
        .assert_error(401, "M_UNKNOWN_TOKEN");
    let again = server
        .post(
            &format!("{V3}/refresh"),
            json!({ "refresh_token": new_refresh }),
        )
        .await
        .ok();
    server
        .with_token(again["access_token"].as_str().unwrap())
        .whoami()
        .await
        .ok();

    // Registration can ask for a refresh token too.
    let bob = server
        .register_with("bob", Some(PASSWORD), json!({ "refresh_token": true }))
        .await;
    assert!(
        bob.refresh_token.is_some(),
        "register with refresh_token: true returns one"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_endpoints() {
    let server = TestServer::start().await;
    let versions = server.get("/_matrix/client/versions").await.ok();
    assert!(
        !versions["versions"].as_array().unwrap().is_empty(),
        "{versions}"
    );
    let alice = server.register("alice").await;
    let caps = alice.get(&format!("{V3}/capabilities")).await.ok();
    let rv = &caps["capabilities"]["m.room_versions"];
    assert_eq!(rv["default"], "12", "{caps}");
    for v in ["10", "11", "12"] {
        assert_eq!(rv["available"][v], "stable", "room version {v} in {caps}");
    }
    server.shutdown().await;
}

/// Completes a registration through UIA, doing whatever stages the flow that
/// contains `m.login.registration_token` asks for.
async fn register_with_token(server: &TestServer, username: &str, token: &str) -> Response {
    let mut body = json!({ "username": username, "password": PASSWORD });
    let mut resp = server.post(&format!("{V3}/register"), body.clone()).await;
    for _ in 0..4 {
        if resp.status.as_u16() != 401 {
            return resp;
        }
        let flow = resp.body["flows"]
            .as_array()
            .and_then(|flows| {
                flows.iter().find(|f| {
                    strings(&f["stages"]).contains(&"m.login.registration_token".to_owned())
                })
            })
            .unwrap_or_else(|| panic!("no registration-token flow: {resp:?}"));
        let done = strings(&resp.body["completed"]);
        let Some(stage) = strings(&flow["stages"])
            .into_iter()
            .find(|s| !done.contains(s))
        else {
            return resp;
        };
        let mut auth = json!({ "type": stage, "session": resp.body["session"] });
        if stage == "m.login.registration_token" {
            auth["token"] = json!(token);
        }
        body["auth"] = auth;
        resp = server.post(&format!("{V3}/register"), body.clone()).await;
    }
    resp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_token_end_to_end() {
    let server = TestServer::start_with(|c| c.registration.require_token = true).await;
    let admin = server.admin_register("root", "pw", true).await.ok();
    let admin = server.with_token(admin["access_token"].as_str().unwrap());
    let user = server.admin_register("plain", "pw", false).await.ok();
    let user = server.with_token(user["access_token"].as_str().unwrap());

    let new = "/_synapse/admin/v1/registration_tokens/new";
    user.post(new, json!({ "token": "letmein" }))
        .await
        .assert_error(403, "M_FORBIDDEN");
    let created = admin
        .post(new, json!({ "token": "letmein", "uses_allowed": 1 }))
        .await
        .ok();
    assert_eq!(created["token"], "letmein");
    let validity = "/_matrix/client/v1/register/m.login.registration_token/validity?token=letmein";
    assert_eq!(server.get(validity).await.ok()["valid"], true);

    let done = register_with_token(&server, "alice", "letmein").await.ok();
    assert_eq!(done["user_id"], "@alice:localhost");
    server
        .with_token(done["access_token"].as_str().unwrap())
        .whoami()
        .await
        .ok();

    // One use allowed: it's spent now.
    assert_eq!(server.get(validity).await.ok()["valid"], false);
    let again = register_with_token(&server, "bob", "letmein").await;
    assert!(
        !again.status.is_success(),
        "a spent token registered again: {again:?}"
    );
    let avail = server
        .get(&format!("{V3}/register/available?username=bob"))
        .await
        .ok();
    assert_eq!(avail["available"], true);
    server.shutdown().await;
}
