//! The push gateway: receives Matrix Push Gateway API notifications
//! (`POST /_matrix/push/v1/notify`) from homeservers and forwards them to FCM
//! (HTTP v1) and APNs. Its implementation is tracked by the push-notifications
//! issue; until then this binary refuses to start rather than pretend to work.

fn main() -> std::process::ExitCode {
    eprintln!("push-gateway: not implemented yet; see docs/architecture.md");
    std::process::ExitCode::from(2)
}
