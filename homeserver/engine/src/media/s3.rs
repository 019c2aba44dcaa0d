//! Blobs in an S3-compatible bucket, signed with AWS Signature Version 4.
//!
//! A small signer over reqwest, hmac and sha2 rather than an SDK: the media
//! repository needs five calls (PUT, GET, DELETE and HEAD object, PUT bucket), and the
//! SDK crates would double the workspace's compile time. Objects are addressed
//! path-style (`<endpoint>/<bucket>/<key>`), which every S3-compatible server
//! accepts. Because blob keys are content hashes, the payload hash SigV4 wants
//! is known before the upload starts, so files stream from disk unbuffered.

use std::path::Path;

use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt;
use hmac::{Hmac, Mac};
use reqwest::{Method, StatusCode};
use sha2::{Digest, Sha256};

use super::blob::{blob_key, file_stream, io_error, Blob, BlobStore};
use crate::{config::S3, error::Result};

/// SHA-256 of the empty payload.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

pub struct S3BlobStore {
    http: reqwest::Client,
    config: S3,
    /// `endpoint` without a trailing slash.
    base: reqwest::Url,
}

impl S3BlobStore {
    /// Connects and checks the bucket (creating it when configured to).
    pub async fn connect(config: S3) -> anyhow::Result<Self> {
        let base = reqwest::Url::parse(config.endpoint.trim_end_matches('/'))?;
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()?;
        let store = Self { http, config, base };
        let head = store
            .send(Method::HEAD, "", EMPTY_SHA256, None, None)
            .await?;
        match head.status() {
            s if s.is_success() => {}
            StatusCode::NOT_FOUND if store.config.create_bucket => {
                let body = (store.config.region != "us-east-1").then(|| {
                    Bytes::from(format!(
                        "<CreateBucketConfiguration><LocationConstraint>{}</LocationConstraint></CreateBucketConfiguration>",
                        store.config.region
                    ))
                });
                let hash = body
                    .as_ref()
                    .map_or(EMPTY_SHA256.to_owned(), |b| sha256_hex(b));
                let len = body.as_ref().map_or(0, |b| b.len() as u64);
                let created = store
                    .send(
                        Method::PUT,
                        "",
                        &hash,
                        Some(len),
                        body.map(reqwest::Body::from),
                    )
                    .await?;
                if !created.status().is_success() {
                    anyhow::bail!(
                        "creating S3 bucket {}: {}",
                        store.config.bucket,
                        created.status()
                    );
                }
            }
            s => anyhow::bail!("S3 bucket {} is not usable: HTTP {s}", store.config.bucket),
        }
        Ok(store)
    }

    fn object(&self, sha256: &str) -> String {
        format!("{}{}", self.config.prefix, blob_key(sha256))
    }

    /// Sends one signed request for `key` in the bucket ("" = the bucket itself).
    async fn send(
        &self,
        method: Method,
        key: &str,
        payload_sha256: &str,
        len: Option<u64>,
        body: Option<reqwest::Body>,
    ) -> reqwest::Result<reqwest::Response> {
        let mut path = format!(
            "{}/{}",
            self.base.path().trim_end_matches('/'),
            uri_encode(&self.config.bucket, false)
        );
        if !key.is_empty() {
            path.push('/');
            path.push_str(&uri_encode(key, true));
        }
        let mut url = self.base.clone();
        url.set_path(&path);
        let host = match url.port() {
            Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_owned(),
        };
        let now = crate::util::now_ms();
        let amz_date = amz_date(now);
        let auth = self.authorization(&method, &path, &host, &amz_date, payload_sha256);
        let mut req = self
            .http
            .request(method, url)
            .header("x-amz-date", &amz_date)
            .header("x-amz-content-sha256", payload_sha256)
            .header(reqwest::header::AUTHORIZATION, auth);
        if let Some(len) = len {
            req = req.header(reqwest::header::CONTENT_LENGTH, len);
        }
        if let Some(body) = body {
            req = req.body(body);
        }
        req.send().await
    }

    /// The `Authorization` header value (SigV4, header-signed, no query string).
    fn authorization(
        &self,
        method: &Method,
        path: &str,
        host: &str,
        amz_date: &str,
        payload_sha256: &str,
    ) -> String {
        let date = &amz_date[..8];
        let scope = format!("{date}/{}/s3/aws4_request", self.config.region);
        let signed_headers = "host;x-amz-content-sha256;x-amz-date";
        let canonical = format!(
            "{method}\n{path}\n\nhost:{host}\nx-amz-content-sha256:{payload_sha256}\nx-amz-date:{amz_date}\n\n{signed_headers}\n{payload_sha256}"
        );
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
            sha256_hex(canonical.as_bytes())
        );
        let secret = format!("AWS4{}", self.config.secret_access_key);
        let mut key = hmac(secret.as_bytes(), date.as_bytes());
        for part in [self.config.region.as_str(), "s3", "aws4_request"] {
            key = hmac(&key, part.as_bytes());
        }
        let signature = hex::encode(hmac(&key, to_sign.as_bytes()));
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
            self.config.access_key_id
        )
    }
}

fn failed(what: &str, status: StatusCode) -> crate::Error {
    io_error(what, format!("HTTP {status}"))
}

#[async_trait]
impl BlobStore for S3BlobStore {
    async fn put_file(&self, sha256: &str, file: &Path, len: u64) -> Result<()> {
        let f = tokio::fs::File::open(file)
            .await
            .map_err(|e| io_error("open staging file", e))?;
        let body = reqwest::Body::wrap_stream(file_stream(f));
        let resp = self
            .send(
                Method::PUT,
                &self.object(sha256),
                sha256,
                Some(len),
                Some(body),
            )
            .await
            .map_err(|e| io_error("S3 PUT", e))?;
        let _ = tokio::fs::remove_file(file).await;
        if !resp.status().is_success() {
            return Err(failed("S3 PUT", resp.status()));
        }
        Ok(())
    }

    async fn put_bytes(&self, sha256: &str, bytes: Bytes) -> Result<()> {
        let len = bytes.len() as u64;
        let resp = self
            .send(
                Method::PUT,
                &self.object(sha256),
                sha256,
                Some(len),
                Some(bytes.into()),
            )
            .await
            .map_err(|e| io_error("S3 PUT", e))?;
        if !resp.status().is_success() {
            return Err(failed("S3 PUT", resp.status()));
        }
        Ok(())
    }

    async fn get(&self, sha256: &str) -> Result<Option<Blob>> {
        let resp = self
            .send(Method::GET, &self.object(sha256), EMPTY_SHA256, None, None)
            .await
            .map_err(|e| io_error("S3 GET", e))?;
        match resp.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => {
                let len = resp.content_length().unwrap_or(0);
                let body = resp.bytes_stream().map_err(std::io::Error::other);
                Ok(Some(Blob {
                    len,
                    body: Box::pin(body),
                }))
            }
            s => Err(failed("S3 GET", s)),
        }
    }

    async fn delete(&self, sha256: &str) -> Result<()> {
        let resp = self
            .send(
                Method::DELETE,
                &self.object(sha256),
                EMPTY_SHA256,
                None,
                None,
            )
            .await
            .map_err(|e| io_error("S3 DELETE", e))?;
        // S3 answers 204 whether or not the object existed; some compatible
        // servers answer 404 for a missing one, which is just as deleted.
        match resp.status() {
            s if s.is_success() || s == StatusCode::NOT_FOUND => Ok(()),
            s => Err(failed("S3 DELETE", s)),
        }
    }
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// RFC 3986 percent-encoding as SigV4 wants it (`/` kept in object keys).
fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// `YYYYMMDDTHHMMSSZ` for a Unix time in milliseconds.
fn amz_date(now_ms: i64) -> String {
    let secs = now_ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(amz_date(0), "19700101T000000Z");
        // 2013-05-24T00:00:00Z, the date of AWS's documented examples.
        assert_eq!(amz_date(1_369_353_600_000), "20130524T000000Z");
        assert_eq!(amz_date(951_827_696_000), "20000229T123456Z");
    }

    #[test]
    fn encoding() {
        assert_eq!(uri_encode("a b/c~d", true), "a%20b/c~d");
        assert_eq!(uri_encode("a/b", false), "a%2Fb");
    }

    /// AWS's documented example: GET /test.txt with a Range header is not
    /// reproducible here (we sign fewer headers), so this checks the signing
    /// key derivation against the documented intermediate for the IAM example.
    #[test]
    fn signing_key_derivation() {
        let secret = "AWS4wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
        let mut key = hmac(secret.as_bytes(), b"20120215");
        for part in ["us-east-1", "iam", "aws4_request"] {
            key = hmac(&key, part.as_bytes());
        }
        assert_eq!(
            hex::encode(key),
            "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"
        );
    }
}
