//! End to end: the built `admin-cli` binary against a real in-process
//! homeserver (SQLite in a temporary directory), driven the way an operator
//! would, with the effects checked over the client API.

use std::{path::PathBuf, process::Output, time::Duration};

use engine::config::Config;
use serde_json::{json, Value};

const SECRET: &str = "cli-test-secret";

struct Env {
    server: homeserver::Server,
    url: String,
    config: PathBuf,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

async fn start() -> Env {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config {
        server_name: "localhost".to_owned(),
        signing_key_path: dir.path().join("signing.key"),
        ..Config::default()
    };
    config.listeners.client = "127.0.0.1:0".parse().unwrap();
    config.database.url = format!("sqlite://{}", dir.path().join("hs.db").display());
    config.media.path = dir.path().join("media");
    config.registration.enabled = true;
    config.registration.require_token = true;
    config.registration.shared_secret = Some(SECRET.to_owned());
    config.rate_limits.enabled = false;
    config.logging.level = "warn".to_owned();
    let server = homeserver::start(config).await.expect("homeserver::start");
    let url = format!("http://{}", server.client_addr);
    Env {
        server,
        url,
        config: dir.path().join("cli").join("config.toml"),
        http: reqwest::Client::new(),
        _dir: dir,
    }
}

impl Env {
    /// Runs the CLI with the test's config file and no inherited settings.
    async fn cli(&self, args: &[&str]) -> Output {
        let bin = env!("CARGO_BIN_EXE_admin-cli");
        let config = self.config.clone();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(bin)
                .args(&args)
                .env("ADMIN_CLI_CONFIG", config)
                .env_remove("ADMIN_CLI_SERVER")
                .env_remove("ADMIN_CLI_TOKEN")
                .env_remove("ADMIN_CLI_PASSWORD")
                .stdin(std::process::Stdio::null())
                .output()
                .expect("running admin-cli")
        })
        .await
        .expect("join")
    }

    /// Runs the CLI and requires success; returns stdout.
    async fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args).await;
        assert!(
            out.status.success(),
            "admin-cli {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs the CLI with `--json` and decodes its answer.
    async fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let text = self.ok(&all).await;
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?}: {e}: {text}"))
    }

    /// Runs the CLI and requires failure; returns stderr.
    async fn fails(&self, args: &[&str]) -> String {
        let out = self.cli(args).await;
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(
            out.status.code(),
            Some(1),
            "admin-cli {args:?} should fail: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(!stderr.contains("Backtrace"), "{stderr}");
        stderr
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Value,
    ) -> (u16, Value) {
        let resp = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("request");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn login(&self, user: &str, password: &str) -> String {
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                "/_matrix/client/v3/login",
                "",
                json!({"type": "m.login.password",
                       "identifier": {"type": "m.id.user", "user": user},
                       "password": password}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["access_token"].as_str().unwrap().to_owned()
    }

    /// Registers through UIA with a registration token; answers the status.
    async fn register_with_token(&self, user: &str, token: &str) -> u16 {
        let path = "/_matrix/client/v3/register";
        let mut body = json!({"username": user, "password": "pw-reg"});
        let (mut status, mut answer) = self
            .call(reqwest::Method::POST, path, "", body.clone())
            .await;
        for _ in 0..3 {
            if status != 401 {
                break;
            }
            body["auth"] = json!({"type": "m.login.registration_token", "token": token,
                                  "session": answer["session"]});
            (status, answer) = self
                .call(reqwest::Method::POST, path, "", body.clone())
                .await;
        }
        status
    }
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_session_end_to_end() {
    let env = start().await;
    let url = env.url.clone();

    // Bootstrap the first admin with the shared secret, then log in.
    env.ok(&[
        "register",
        "--base-url",
        &url,
        "--shared-secret",
        SECRET,
        "--user",
        "root",
        "--password",
        "root-pw",
        "--admin",
    ])
    .await;
    let out = env
        .ok(&[
            "login",
            "--server",
            &url,
            "--user",
            "root",
            "--password",
            "root-pw",
        ])
        .await;
    assert!(out.contains("@root:localhost"), "{out}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&env.config).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the config file holds a token");
    }

    // Create users; they log in and talk.
    let created = env
        .json(&[
            "users",
            "create",
            "alice",
            "--password",
            "pw-alice",
            "--displayname",
            "Alice",
        ])
        .await;
    assert_eq!(created["name"], "@alice:localhost");
    env.ok(&["users", "create", "@bob:localhost", "--password", "pw-bob"])
        .await;
    env.fails(&["users", "create", "alice", "--password", "x"])
        .await;
    let alice = env.login("alice", "pw-alice").await;
    let bob = env.login("bob", "pw-bob").await;
    let (_, room) = env
        .call(
            reqwest::Method::POST,
            "/_matrix/client/v3/createRoom",
            &alice,
            json!({"preset": "public_chat", "name": "Lobby"}),
        )
        .await;
    let room_id = room["room_id"].as_str().unwrap().to_owned();
    let (status, _) = env
        .call(
            reqwest::Method::POST,
            &format!("/_matrix/client/v3/join/{}", enc(&room_id)),
            &bob,
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    for i in 0..3 {
        let (status, _) = env
            .call(
                reqwest::Method::PUT,
                &format!(
                    "/_matrix/client/v3/rooms/{}/send/m.room.message/t{i}",
                    enc(&room_id)
                ),
                &alice,
                json!({"msgtype": "m.text", "body": format!("hello {i}")}),
            )
            .await;
        assert_eq!(status, 200);
    }

    // List them, in a table and as JSON.
    let table = env.ok(&["users", "list"]).await;
    assert!(
        table.contains("@alice:localhost") && table.contains("Alice"),
        "{table}"
    );
    assert!(table.lines().next().unwrap().contains("USER ID"), "{table}");
    let listed = env.json(&["users", "list", "--name", "ali"]).await;
    assert_eq!(listed["total"], 1);
    let rooms = env.json(&["rooms", "list"]).await;
    assert_eq!(rooms["rooms"][0]["joined_members"], 2);
    assert!(env
        .ok(&["rooms", "members", &room_id])
        .await
        .contains("@bob:localhost"));

    // Deactivate with erase: refused without confirmation, then done.
    let refused = env
        .fails(&["users", "deactivate", "alice", "--erase"])
        .await;
    assert!(refused.contains("--yes"), "{refused}");
    env.ok(&["users", "deactivate", "alice", "--erase", "--yes"])
        .await;
    let (status, body) = env
        .call(
            reqwest::Method::GET,
            "/_matrix/client/v3/account/whoami",
            &alice,
            json!({}),
        )
        .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (401, Some("M_UNKNOWN_TOKEN"))
    );
    let shown = env.json(&["users", "show", "alice"]).await;
    assert_eq!(
        (shown["deactivated"].clone(), shown["erased"].clone()),
        (json!(true), json!(true))
    );

    // Shut the room down: bob is out, and it cannot be joined again.
    let out = env
        .ok(&["rooms", "shutdown", &room_id, "--block", "--yes"])
        .await;
    assert!(out.contains("@bob:localhost"), "{out}");
    let (_, joined) = env
        .call(
            reqwest::Method::GET,
            "/_matrix/client/v3/joined_rooms",
            &bob,
            json!({}),
        )
        .await;
    assert!(
        !joined["joined_rooms"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == &room_id),
        "{joined}"
    );
    let (status, _) = env
        .call(
            reqwest::Method::POST,
            &format!("/_matrix/client/v3/join/{}", enc(&room_id)),
            &bob,
            json!({}),
        )
        .await;
    assert_eq!(status, 403);
    let gone = env.fails(&["rooms", "show", &room_id]).await;
    assert!(gone.contains("M_NOT_FOUND"), "{gone}");

    // Quarantined media can no longer be downloaded.
    let uploaded: Value = env
        .http
        .post(format!("{}/_matrix/media/v3/upload", env.url))
        .bearer_auth(&bob)
        .header("content-type", "text/plain")
        .body("contraband")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mxc = uploaded["content_uri"]
        .as_str()
        .expect("content_uri")
        .to_owned();
    let media_id = mxc.rsplit('/').next().unwrap().to_owned();
    let download = format!("/_matrix/client/v1/media/download/localhost/{media_id}");
    assert!(env.ok(&["media", "list", "bob"]).await.contains(&media_id));
    env.ok(&["media", "quarantine", &mxc]).await;
    let (status, _) = env
        .call(reqwest::Method::GET, &download, &bob, json!({}))
        .await;
    assert_eq!(status, 404);
    env.ok(&["media", "unquarantine", &mxc]).await;
    let status = env
        .http
        .get(format!("{}{download}", env.url))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 200);

    // A registration token with 2 uses admits exactly two sign-ups.
    let token = env
        .json(&["tokens", "create", "spring", "--uses", "2"])
        .await;
    assert_eq!(token["uses_allowed"], 2);
    assert_eq!(env.register_with_token("carol", "spring").await, 200);
    assert_eq!(env.register_with_token("dave", "spring").await, 200);
    assert_ne!(env.register_with_token("erin", "spring").await, 200);
    let shown = env.json(&["tokens", "show", "spring"]).await;
    assert_eq!(shown["completed"], 2);
    assert!(env
        .ok(&["tokens", "list", "--invalid"])
        .await
        .contains("spring"));
    env.ok(&["tokens", "delete", "spring", "--yes"]).await;

    // The rest of the surface answers.
    let stats = env.json(&["server", "stats"]).await;
    assert!(stats["users"].as_i64().unwrap() >= 4, "{stats}");
    assert!(env.ok(&["server", "version"]).await.trim().len() > 1);
    env.ok(&["server", "notice", "bob", "Maintenance at 02:00"])
        .await;
    env.ok(&["users", "shadow-ban", "bob"]).await;
    env.ok(&[
        "users",
        "ratelimit",
        "bob",
        "--messages-per-second",
        "0",
        "--burst",
        "0",
    ])
    .await;
    assert_eq!(
        env.json(&["users", "ratelimit", "bob"]).await["burst_count"],
        0
    );
    assert!(env
        .ok(&["users", "devices", "bob"])
        .await
        .contains("DEVICE"));
    env.ok(&["users", "logout", "bob", "--yes"]).await;
    let (status, _) = env
        .call(
            reqwest::Method::GET,
            "/_matrix/client/v3/account/whoami",
            &bob,
            json!({}),
        )
        .await;
    assert_eq!(status, 401);
    assert!(env.json(&["federation", "destinations"]).await["destinations"].is_array());

    env.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_clear_and_exit_non_zero() {
    let env = start().await;
    let url = env.url.clone();

    // Nothing configured yet.
    let err = env.fails(&["users", "list"]).await;
    assert!(err.contains("admin-cli login"), "{err}");

    // Unreachable server.
    let err = env
        .fails(&[
            "--server",
            "http://127.0.0.1:9",
            "--token",
            "t",
            "server",
            "version",
        ])
        .await;
    assert!(
        err.contains("cannot reach the server at http://127.0.0.1:9"),
        "{err}"
    );

    // A bad token, then a non-admin token.
    let err = env
        .fails(&["--server", &url, "--token", "bogus", "server", "version"])
        .await;
    assert!(err.contains("M_UNKNOWN_TOKEN"), "{err}");
    env.ok(&[
        "register",
        "--base-url",
        &url,
        "--shared-secret",
        SECRET,
        "--user",
        "plain",
        "--password",
        "pw",
    ])
    .await;
    let plain = env.login("plain", "pw").await;
    let err = env
        .fails(&["--server", &url, "--token", &plain, "users", "list"])
        .await;
    assert!(err.contains("M_FORBIDDEN"), "{err}");
    let err = env
        .fails(&[
            "login",
            "--server",
            &url,
            "--user",
            "plain",
            "--password",
            "pw",
        ])
        .await;
    assert!(err.contains("M_FORBIDDEN"), "{err}");

    // Unknown users and rooms, malformed ids.
    env.ok(&[
        "register",
        "--base-url",
        &url,
        "--shared-secret",
        SECRET,
        "--user",
        "root",
        "--password",
        "root-pw",
        "--admin",
    ])
    .await;
    env.ok(&[
        "login",
        "--server",
        &url,
        "--user",
        "root",
        "--password",
        "root-pw",
    ])
    .await;
    for (args, code) in [
        (vec!["users", "show", "@nobody:localhost"], "M_NOT_FOUND"),
        (vec!["users", "show", "@bad id"], "M_INVALID_PARAM"),
        (vec!["rooms", "show", "!missing:localhost"], "M_NOT_FOUND"),
        (vec!["rooms", "show", "not-a-room"], "M_INVALID_PARAM"),
        (vec!["tokens", "show", "nope"], "M_NOT_FOUND"),
    ] {
        let err = env.fails(&args).await;
        assert!(
            err.starts_with(&format!("error: {code}: ")),
            "{args:?}: {err}"
        );
    }

    // Help teaches; completions are generated.
    let help = env.ok(&["--help"]).await;
    assert!(
        help.contains("Examples:") && help.contains("admin-cli login"),
        "{help}"
    );
    assert!(env
        .ok(&["users", "deactivate", "--help"])
        .await
        .contains("--erase"));
    let completions = env.ok(&["completions", "bash"]).await;
    assert!(completions.contains("admin-cli") && completions.contains("shutdown"));

    tokio::time::sleep(Duration::from_millis(10)).await;
    env.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_deletion_from_the_cli() {
    let env = start().await;
    let url = env.url.clone();
    for (user, admin) in [("root", true), ("carl", false)] {
        let mut args = vec![
            "register",
            "--base-url",
            &url,
            "--shared-secret",
            SECRET,
            "--user",
            user,
            "--password",
            "pw-media",
        ];
        if admin {
            args.push("--admin");
        }
        env.ok(&args).await;
    }
    env.ok(&[
        "login",
        "--server",
        &url,
        "--user",
        "root",
        "--password",
        "pw-media",
    ])
    .await;
    let carl = env.login("carl", "pw-media").await;
    let upload = |body: &'static str| {
        let (http, url, carl) = (env.http.clone(), url.clone(), carl.clone());
        async move {
            let answer: Value = http
                .post(format!("{url}/_matrix/media/v3/upload"))
                .bearer_auth(&carl)
                .header("content-type", "text/plain")
                .body(body)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            answer["content_uri"]
                .as_str()
                .expect("content_uri")
                .to_owned()
        }
    };
    let first = upload("first file").await;
    let small = upload("tiny").await;
    let big = upload("a somewhat longer file").await;
    let id = |mxc: &str| mxc.rsplit('/').next().unwrap().to_owned();
    let status = |mxc: String| {
        let (http, url, carl) = (env.http.clone(), url.clone(), carl.clone());
        async move {
            http.get(format!(
                "{url}/_matrix/client/v1/media/download/localhost/{}",
                mxc.rsplit('/').next().unwrap()
            ))
            .bearer_auth(&carl)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
        }
    };

    // One item: asks first, then deletes; deleting again deletes nothing.
    let refused = env.fails(&["media", "delete", &first]).await;
    assert!(refused.contains("--yes"), "{refused}");
    assert_eq!(status(first.clone()).await, 200);
    let out = env.ok(&["media", "delete", &first, "--yes"]).await;
    assert!(
        out.contains(&id(&first)) && out.contains("1 deleted"),
        "{out}"
    );
    assert_eq!(status(first.clone()).await, 404);
    let again = env.json(&["media", "delete", &first, "--yes"]).await;
    assert_eq!(again, json!({"deleted_media": [], "total": 0}));
    let err = env
        .fails(&["media", "delete", "mxc://elsewhere.example/abc", "--yes"])
        .await;
    assert!(err.starts_with("error: M_INVALID_PARAM: "), "{err}");

    // By age and size: an age in the past matches nothing yet; a cut-off in
    // the future with --size-gt takes only the bigger file.
    let none = env
        .json(&["media", "delete-old", "--before", "1d", "--yes"])
        .await;
    assert_eq!(none["total"], 0);
    let soon = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        + 60_000)
        .to_string();
    let gone = env
        .json(&[
            "media",
            "delete-old",
            "--before",
            &soon,
            "--size-gt",
            "10",
            "--yes",
        ])
        .await;
    assert_eq!(gone, json!({"deleted_media": [id(&big)], "total": 1}));
    assert_eq!(status(big).await, 404);
    assert_eq!(status(small.clone()).await, 200);
    let err = env
        .fails(&["media", "delete-old", "--before", "1700000", "--yes"])
        .await;
    assert!(err.starts_with("error: M_INVALID_PARAM: "), "{err}");

    // The remote cache is empty on a server alone.
    let purged = env
        .json(&["media", "purge-remote", "--before", "30d", "--yes"])
        .await;
    assert_eq!(purged, json!({"deleted": 0}));
    assert!(env
        .ok(&["media", "delete-old", "--help"])
        .await
        .contains("--keep-profiles"));

    env.server.shutdown().await;
}
