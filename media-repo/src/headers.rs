//! Response headers for served media. Uploaded bytes are hostile by default:
//! the sniffed type decides what a browser may render inline, a sandboxing CSP
//! stops served HTML or SVG from running script on the homeserver's origin,
//! and file names are encoded so they cannot inject header syntax.

use axum::http::{header, HeaderMap, HeaderName, HeaderValue};

/// Applied to every media response: no scripts, no plugins, no framing.
pub const CSP: &str =
    "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; \
     style-src 'unsafe-inline'; media-src 'self'; object-src 'self';";

/// Types a browser may show inline (the spec's list, minus anything scriptable).
fn inline_allowed(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    matches!(
        essence.as_str(),
        "text/plain"
            | "text/csv"
            | "application/json"
            | "application/ld+json"
            | "image/jpeg"
            | "image/gif"
            | "image/png"
            | "image/apng"
            | "image/webp"
            | "image/avif"
    ) || essence.starts_with("video/")
        || essence.starts_with("audio/")
}

/// `inline` or `attachment`, with the file name in both the plain form
/// (ASCII, quotes and controls replaced) and RFC 6266's `filename*`.
pub fn content_disposition(content_type: &str, file_name: Option<&str>) -> String {
    let kind = if inline_allowed(content_type) {
        "inline"
    } else {
        "attachment"
    };
    let Some(name) = file_name.filter(|n| !n.is_empty()) else {
        return kind.to_owned();
    };
    let ascii: String = name
        .chars()
        .map(|c| {
            if (c.is_ascii_graphic() && !matches!(c, '"' | '\\' | ';' | '%')) || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut encoded = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    format!("{kind}; filename=\"{ascii}\"; filename*=utf-8''{encoded}")
}

/// The headers of a media or thumbnail response.
pub fn media_headers(
    content_type: &str,
    file_name: Option<&str>,
    len: u64,
    authenticated: bool,
) -> HeaderMap {
    let mut h = HeaderMap::new();
    let mut set = |name: HeaderName, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(name, v);
        }
    };
    set(header::CONTENT_TYPE, content_type);
    set(header::CONTENT_LENGTH, &len.to_string());
    set(
        header::CONTENT_DISPOSITION,
        &content_disposition(content_type, file_name),
    );
    // Content behind an mxc URI never changes. Authenticated responses must not
    // be stored by shared caches, which would serve them without the token.
    set(
        header::CACHE_CONTROL,
        if authenticated {
            "private, max-age=31536000, immutable"
        } else {
            "public, max-age=31536000, immutable"
        },
    );
    set(header::CONTENT_SECURITY_POLICY, CSP);
    set(
        HeaderName::from_static("x-content-security-policy"),
        "sandbox;",
    );
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(
        HeaderName::from_static("cross-origin-resource-policy"),
        "cross-origin",
    );
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disposition_is_safe() {
        assert_eq!(content_disposition("image/png", None), "inline");
        assert_eq!(
            content_disposition("text/html", Some("a\"b\r\n.html")),
            "attachment; filename=\"a_b__.html\"; filename*=utf-8''a%22b%0D%0A.html"
        );
        assert_eq!(
            content_disposition("image/jpeg", Some("фото 1.jpg")),
            "inline; filename=\"____ 1.jpg\"; filename*=utf-8''%D1%84%D0%BE%D1%82%D0%BE%201.jpg"
        );
    }
}
