//! Prometheus metrics, in the plain-text exposition format at `/metrics`.
//!
//! A handful of counters and one histogram do not justify a metrics crate; the
//! exposition format is simple enough to write by hand.

use std::{collections::BTreeMap, fmt::Write, sync::Mutex, time::Duration};

/// Upper bounds (seconds) of the vendor latency histogram buckets.
const BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
struct Inner {
    /// (app_id, vendor, outcome) → devices.
    deliveries: BTreeMap<(String, &'static str, &'static str), u64>,
    /// HTTP status → /notify requests.
    requests: BTreeMap<u16, u64>,
    /// (app_id, vendor) → vendor request latency.
    latency: BTreeMap<(String, &'static str), Histogram>,
    /// app_id → OAuth token exchanges (FCM) or provider tokens minted (APNs).
    auth_tokens: BTreeMap<String, u64>,
}

/// All counters of one gateway.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }

    /// One device's final outcome (`delivered`, `rejected`, `failed`,
    /// `retry_later`, `duplicate`).
    pub fn delivery(&self, app_id: &str, vendor: &'static str, outcome: &'static str) {
        self.with(|m| {
            *m.deliveries
                .entry((app_id.to_string(), vendor, outcome))
                .or_default() += 1;
        });
    }

    pub fn request(&self, status: u16) {
        self.with(|m| *m.requests.entry(status).or_default() += 1);
    }

    pub fn vendor_latency(&self, app_id: &str, vendor: &'static str, took: Duration) {
        let secs = took.as_secs_f64();
        self.with(|m| {
            let h = m.latency.entry((app_id.to_string(), vendor)).or_default();
            for (i, bound) in BUCKETS.iter().enumerate() {
                if secs <= *bound {
                    h.counts[i] += 1;
                }
            }
            h.count += 1;
            h.sum += secs;
        });
    }

    pub fn auth_token(&self, app_id: &str) {
        self.with(|m| *m.auth_tokens.entry(app_id.to_string()).or_default() += 1);
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        self.with(|m| {
            let mut out = String::new();
            out.push_str("# HELP push_gateway_notify_requests_total /notify requests by HTTP status.\n");
            out.push_str("# TYPE push_gateway_notify_requests_total counter\n");
            for (status, n) in &m.requests {
                let _ = writeln!(out, "push_gateway_notify_requests_total{{status=\"{status}\"}} {n}");
            }
            out.push_str("# HELP push_gateway_deliveries_total Devices by app, vendor and outcome.\n");
            out.push_str("# TYPE push_gateway_deliveries_total counter\n");
            for ((app, vendor, outcome), n) in &m.deliveries {
                let _ = writeln!(
                    out,
                    "push_gateway_deliveries_total{{app_id=\"{}\",vendor=\"{vendor}\",outcome=\"{outcome}\"}} {n}",
                    escape(app)
                );
            }
            out.push_str("# HELP push_gateway_auth_tokens_total OAuth exchanges (FCM) and provider tokens minted (APNs).\n");
            out.push_str("# TYPE push_gateway_auth_tokens_total counter\n");
            for (app, n) in &m.auth_tokens {
                let _ = writeln!(out, "push_gateway_auth_tokens_total{{app_id=\"{}\"}} {n}", escape(app));
            }
            out.push_str("# HELP push_gateway_vendor_request_seconds Latency of requests to FCM and APNs.\n");
            out.push_str("# TYPE push_gateway_vendor_request_seconds histogram\n");
            for ((app, vendor), h) in &m.latency {
                let labels = format!("app_id=\"{}\",vendor=\"{vendor}\"", escape(app));
                for (bound, n) in BUCKETS.iter().zip(h.counts) {
                    let _ = writeln!(
                        out,
                        "push_gateway_vendor_request_seconds_bucket{{{labels},le=\"{bound}\"}} {n}"
                    );
                }
                let _ = writeln!(
                    out,
                    "push_gateway_vendor_request_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                    h.count
                );
                let _ = writeln!(out, "push_gateway_vendor_request_seconds_sum{{{labels}}} {}", h.sum);
                let _ = writeln!(out, "push_gateway_vendor_request_seconds_count{{{labels}}} {}", h.count);
            }
            out
        })
    }
}

/// Label values escape backslash, quote and newline.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histogram() {
        let m = Metrics::default();
        m.delivery("a.b", "fcm", "delivered");
        m.delivery("a.b", "fcm", "delivered");
        m.vendor_latency("a.b", "fcm", Duration::from_millis(30));
        let text = m.render();
        assert!(text.contains(
            "push_gateway_deliveries_total{app_id=\"a.b\",vendor=\"fcm\",outcome=\"delivered\"} 2"
        ));
        assert!(text.contains("le=\"0.025\"} 0"));
        assert!(text.contains("le=\"0.05\"} 1"));
        assert!(text.contains(
            "push_gateway_vendor_request_seconds_count{app_id=\"a.b\",vendor=\"fcm\"} 1"
        ));
    }
}
