//! The real `push-gateway` process for the delivery tests, configured with an
//! FCM app and an APNs app that point at the gateway crate's local
//! FCM-protocol and APNs-protocol servers (`push_gateway::vendor_sim`).
//!
//! The gateway runs as its own process, as in production: the homeserver
//! reaches it only over HTTP, and it can be killed and started again on the
//! same address to test the homeserver's persistent delivery queue.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use push_gateway::vendor_sim::{ApnsSim, FcmSim};
use serde_json::Value;

/// The pusher `app_id` of the Android app (FCM).
pub const ANDROID: &str = "im.example.android";
/// The pusher `app_id` of the iOS app (APNs); also its `apns-topic`.
pub const IOS: &str = "im.example.ios";

/// The `push-gateway` executable. `HS_PUSH_GATEWAY_BIN` names a prebuilt one;
/// otherwise the cargo running these tests builds it once per test process
/// (a no-op when it is up to date), so `cargo test -p homeserver` suffices.
fn binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(path) = std::env::var_os("HS_PUSH_GATEWAY_BIN") {
            return PathBuf::from(path);
        }
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("the homeserver crate is inside the workspace");
        let out = Command::new(cargo)
            .current_dir(workspace)
            .args([
                "build",
                "--quiet",
                "-p",
                "hs-push-gateway",
                "--bin",
                "push-gateway",
            ])
            .arg("--message-format=json-render-diagnostics")
            .stderr(Stdio::inherit())
            .output()
            .expect("running cargo build for push-gateway");
        assert!(out.status.success(), "building push-gateway failed");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter_map(|m| m["executable"].as_str().map(PathBuf::from))
            .next_back()
            .expect("cargo reported no push-gateway executable")
    })
    .clone()
}

/// Both vendor servers, and a gateway configuration (on a fixed free port)
/// that points at them.
pub struct Vendors {
    pub fcm: FcmSim,
    pub apns: ApnsSim,
    port: u16,
    config: PathBuf,
    dir: tempfile::TempDir,
}

impl Vendors {
    pub async fn start() -> Vendors {
        let dir = tempfile::tempdir().expect("tempdir");
        let (fcm, apns) = tokio::join!(FcmSim::start(), ApnsSim::start(IOS));
        let (fcm, apns) = (fcm.expect("FCM server"), apns.expect("APNs server"));
        let service_account = fcm
            .write_service_account(dir.path())
            .expect("service account");
        let (key, ca) = apns.write_files(dir.path()).expect("APNs key files");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let text = format!(
            "listen = \"127.0.0.1:{port}\"\nretry_base_ms = 50\nvendor_timeout_ms = 5000\n\
             [apps.\"{ANDROID}\"]\nkind = \"fcm\"\nservice_account = {service_account:?}\napi_url = {:?}\n\
             [apps.\"{IOS}\"]\nkind = \"apns\"\nkey_path = {key:?}\nkey_id = {:?}\nteam_id = {:?}\n\
             topic = {:?}\napi_url = {:?}\nca_cert = {ca:?}\n",
            fcm.api_url(),
            apns.key_id(),
            apns.team_id(),
            apns.topic(),
            apns.api_url(),
        );
        let config = dir.path().join("push-gateway.toml");
        std::fs::write(&config, text).expect("writing the gateway config");
        Vendors {
            fcm,
            apns,
            port,
            config,
            dir,
        }
    }

    /// The URL pushers are set up with (the same across gateway restarts).
    pub fn notify_url(&self) -> String {
        format!("http://127.0.0.1:{}/_matrix/push/v1/notify", self.port)
    }

    fn metrics_url(&self) -> String {
        format!("http://127.0.0.1:{}/metrics", self.port)
    }

    /// Starts the gateway process and waits until it answers.
    pub async fn start_gateway(&self) -> GatewayProcess {
        let log = self.dir.path().join("push-gateway.log");
        let child = Command::new(binary())
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "push_gateway=info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("gateway log file"))
            .spawn()
            .expect("starting push-gateway");
        let mut process = GatewayProcess { child };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = http.get(self.metrics_url()).send().await {
                if r.status().is_success() {
                    return process;
                }
            }
            let exited = process.child.try_wait().ok().flatten();
            if exited.is_some() || Instant::now() > deadline {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                panic!("push-gateway did not come up ({exited:?}):\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The gateway's Prometheus metrics (it must be running).
    pub async fn metrics(&self) -> String {
        reqwest::get(self.metrics_url())
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text")
    }
}

/// A running gateway process; killed when stopped or dropped.
pub struct GatewayProcess {
    child: Child,
}

impl GatewayProcess {
    /// Kills the process (as a crash would) and waits for it to exit.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
