//! The `push-gateway` binary: a bad configuration is refused with a clear
//! message and a non-zero exit; a good one serves.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use push_gateway::vendor_sim::FcmSim;
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_push-gateway");

fn run_with_config(text: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_configs_exit_non_zero_with_a_clear_message() {
    let (code, err) = run_with_config("listen = \"not an address\"");
    assert_ne!(code, 0);
    assert!(err.contains("listen"), "{err}");

    let (code, err) = run_with_config(
        "[apps.\"a.b\"]\nkind = \"fcm\"\nservice_account = \"/nonexistent/sa.json\"",
    );
    assert_ne!(code, 0);
    assert!(err.contains("/nonexistent/sa.json"), "{err}");

    let (code, err) = run_with_config("[apps.\"a.b\"]\nkind = \"gcm\"");
    assert_ne!(code, 0);
    assert!(err.contains("gcm"), "{err}");

    let out = Command::new(BIN)
        .args(["--config", "/nonexistent.toml"])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.toml"));
}

#[tokio::test]
async fn the_binary_serves_notifications() {
    let fcm = FcmSim::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sa = fcm.write_service_account(dir.path()).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.path().join("gw.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\n[apps.\"im.bin\"]\nkind = \"fcm\"\nservice_account = {sa:?}\napi_url = {:?}\n",
            fcm.api_url()
        ),
    )
    .unwrap();
    let child = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/_matrix/push/v1/notify");
    let body = json!({ "notification": { "event_id": "$bin", "devices": [{ "app_id": "im.bin", "pushkey": "k" }] } });
    let deadline = Instant::now() + Duration::from_secs(20);
    let response = loop {
        match client.post(&url).json(&body).send().await {
            Ok(r) => break r,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("gateway binary never came up: {e}"),
        }
    };
    assert_eq!(response.status(), 200);
    assert_eq!(fcm.delivered().len(), 1);
    // SIGTERM: a graceful shutdown and a zero exit.
    let kill = format!("kill -TERM {}", child.0.id());
    assert!(Command::new("sh")
        .args(["-c", &kill])
        .status()
        .unwrap()
        .success());
    let status = child.0.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

/// Kills the gateway process if the test fails before stopping it.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
