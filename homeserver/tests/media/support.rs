//! Media test support: servers on either blob store, raw HTTP helpers, and
//! test images generated in code.

use std::io::Cursor;

use engine::config::{BlobStoreKind, Config};
use image::{
    codecs::{
        gif::{GifEncoder, Repeat},
        jpeg::JpegEncoder,
        png::PngEncoder,
        webp::WebPEncoder,
    },
    Delay, DynamicImage, Frame, ImageEncoder, Rgb, RgbImage, Rgba, RgbaImage,
};
use reqwest::{header::HeaderMap, StatusCode};
use serde_json::Value;

use crate::common::TestServer;

/// Declares each `async fn(Store)` scenario named as a test twice: `fs::<name>`
/// on the local filesystem store and `s3::<name>` on the S3-compatible server,
/// so both backends pass the very same tests.
macro_rules! on_both_stores {
    ($($scenario:ident),+ $(,)?) => {
        mod fs {
            $(
                #[tokio::test]
                async fn $scenario() {
                    super::$scenario($crate::support::Store::Fs).await;
                }
            )+
        }
        mod s3 {
            $(
                #[tokio::test]
                async fn $scenario() {
                    if $crate::support::s3_url().is_some() {
                        super::$scenario($crate::support::Store::S3).await;
                    }
                }
            )+
        }
    };
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Store {
    Fs,
    S3,
}

/// A server whose media lives in its own directory (and, for S3, its own bucket).
pub struct MediaServer {
    pub server: TestServer,
    pub dir: tempfile::TempDir,
}

/// The S3-compatible server scripts/test.sh starts (`HS_TEST_S3_URL`). Without
/// one the S3 tests are skipped locally, and fail under CI.
pub fn s3_url() -> Option<String> {
    match std::env::var("HS_TEST_S3_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "HS_TEST_S3_URL is not set: scripts/test.sh starts the S3-compatible server"
            );
            eprintln!("HS_TEST_S3_URL not set: skipping the S3 media test (run scripts/test.sh)");
            None
        }
    }
}

pub async fn start(store: Store, adjust: impl FnOnce(&mut Config)) -> MediaServer {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_owned();
    let server = TestServer::start_with(|c| {
        use_store(c, store, path);
        adjust(c);
    })
    .await;
    MediaServer { server, dir }
}

/// Points a server's media at `path` (staging, and blobs for the fs store) and,
/// for S3, at a fresh bucket of its own.
pub fn use_store(c: &mut Config, store: Store, path: std::path::PathBuf) {
    c.media.path = path;
    if store == Store::S3 {
        c.media.store = BlobStoreKind::S3;
        c.media.s3.endpoint = s3_url().expect("S3 server");
        c.media.s3.bucket = format!("hs-test-{}", random_lower(12));
        c.media.s3.access_key_id =
            std::env::var("HS_TEST_S3_ACCESS_KEY").unwrap_or_else(|_| "hs-test".into());
        c.media.s3.secret_access_key =
            std::env::var("HS_TEST_S3_SECRET_KEY").unwrap_or_else(|_| "hs-test-secret".into());
    }
}

fn random_lower(n: usize) -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..n)
        .map(|_| (b'a' + rng.random_range(0..26u8)) as char)
        .collect()
}

/// A raw response: status, headers, body bytes.
pub struct Raw {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub bytes: Vec<u8>,
}

impl Raw {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap_or(Value::Null)
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    #[track_caller]
    pub fn assert_error(&self, status: u16, errcode: &str) {
        assert_eq!(
            (
                self.status.as_u16(),
                self.json()["errcode"].as_str().unwrap_or("")
            ),
            (status, errcode),
            "body: {}",
            String::from_utf8_lossy(&self.bytes)
        );
    }

    #[track_caller]
    pub fn ok(self) -> Self {
        assert!(
            self.status.is_success(),
            "{}: {}",
            self.status,
            String::from_utf8_lossy(&self.bytes)
        );
        self
    }
}

/// Sends a request with an optional bearer token and returns the raw response.
pub async fn send(
    base: &str,
    token: Option<&str>,
    method: reqwest::Method,
    path: &str,
    body: Option<reqwest::Body>,
    content_type: Option<&str>,
) -> Raw {
    let http = reqwest::Client::new();
    let mut req = http.request(method, format!("{base}{path}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    if let Some(b) = body {
        req = req.body(b);
    }
    let resp = req.send().await.expect("request");
    Raw {
        status: resp.status(),
        headers: resp.headers().clone(),
        bytes: resp.bytes().await.expect("body").to_vec(),
    }
}

/// `POST /_matrix/media/v3/upload`, declaring `content_type`.
pub async fn upload(
    base: &str,
    token: &str,
    data: &[u8],
    name: Option<&str>,
    content_type: &str,
) -> Raw {
    let path = match name {
        Some(n) => format!(
            "/_matrix/media/v3/upload?filename={}",
            crate::common::enc(n)
        ),
        None => "/_matrix/media/v3/upload".to_owned(),
    };
    send(
        base,
        Some(token),
        reqwest::Method::POST,
        &path,
        Some(data.to_vec().into()),
        Some(content_type),
    )
    .await
}

/// Uploads and returns `(server_name, media_id)`.
pub async fn upload_ok(base: &str, token: &str, data: &[u8]) -> (String, String) {
    let r = upload(base, token, data, None, "application/octet-stream")
        .await
        .ok();
    split_mxc(r.json()["content_uri"].as_str().expect("content_uri"))
}

pub fn split_mxc(uri: &str) -> (String, String) {
    let rest = uri.strip_prefix("mxc://").expect("mxc uri");
    let (server, id) = rest.split_once('/').expect("server/id");
    (server.to_owned(), id.to_owned())
}

pub async fn download(base: &str, token: Option<&str>, server: &str, id: &str) -> Raw {
    let path = format!("/_matrix/client/v1/media/download/{server}/{id}");
    send(base, token, reqwest::Method::GET, &path, None, None).await
}

pub async fn thumbnail(base: &str, token: &str, server: &str, id: &str, query: &str) -> Raw {
    let path = format!("/_matrix/client/v1/media/thumbnail/{server}/{id}?{query}");
    send(base, Some(token), reqwest::Method::GET, &path, None, None).await
}

/// Decodes served bytes, panicking with a useful message if they are not an image.
#[track_caller]
pub fn decode(bytes: &[u8]) -> DynamicImage {
    image::load_from_memory(bytes).expect("served bytes are a valid image")
}

/// An RGB image whose left half is red and right half blue, with a gradient
/// so the encoders have something real to compress.
pub fn halves(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let g = ((x + y) % 32) as u8;
        if x < w / 2 {
            Rgb([230, g, 20])
        } else {
            Rgb([20, g, 230])
        }
    })
}

/// Pseudo-random noise: incompressible, like a photo's sensor noise.
pub fn noise(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let mut v =
            (x.wrapping_mul(73_856_093) ^ y.wrapping_mul(19_349_663)).wrapping_mul(2_654_435_761);
        v ^= v >> 13;
        Rgb([v as u8, (v >> 8) as u8, (v >> 16) as u8])
    })
}

pub fn png(img: &RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    PngEncoder::new(&mut out)
        .write_image(
            img,
            img.width(),
            img.height(),
            image::ExtendedColorType::Rgb8,
        )
        .unwrap();
    out
}

/// A PNG with a `tEXt` chunk (metadata to strip) after `IHDR`.
pub fn png_with_text(img: &RgbImage, text: &str) -> Vec<u8> {
    let plain = png(img);
    let ihdr_end = 8 + 12 + 13;
    let mut chunk_data = b"Comment\0".to_vec();
    chunk_data.extend_from_slice(text.as_bytes());
    let mut chunk = (chunk_data.len() as u32).to_be_bytes().to_vec();
    let mut typed = b"tEXt".to_vec();
    typed.extend_from_slice(&chunk_data);
    chunk.extend_from_slice(&typed);
    chunk.extend_from_slice(&crc32(&typed).to_be_bytes());
    let mut out = plain[..ihdr_end].to_vec();
    out.extend_from_slice(&chunk);
    out.extend_from_slice(&plain[ihdr_end..]);
    out
}

pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// The TIFF body of an EXIF block holding only an orientation tag, plus a
/// marker string (as a camera's maker note would be) to look for after stripping.
pub fn exif_orientation(orientation: u16) -> Vec<u8> {
    let mut t = b"II*\0".to_vec();
    t.extend_from_slice(&8u32.to_le_bytes());
    t.extend_from_slice(&1u16.to_le_bytes());
    // Tag 0x0112 (Orientation), type SHORT, count 1, value.
    t.extend_from_slice(&0x0112u16.to_le_bytes());
    t.extend_from_slice(&3u16.to_le_bytes());
    t.extend_from_slice(&1u32.to_le_bytes());
    t.extend_from_slice(&orientation.to_le_bytes());
    t.extend_from_slice(&[0, 0]);
    t.extend_from_slice(&0u32.to_le_bytes());
    t.extend_from_slice(b"SECRET-GPS-48.8584N-2.2945E");
    t
}

pub fn jpeg_with_exif(img: &RgbImage, orientation: u16) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = JpegEncoder::new_with_quality(&mut out, 92);
    enc.set_exif_metadata(exif_orientation(orientation))
        .unwrap();
    enc.write_image(
        img,
        img.width(),
        img.height(),
        image::ExtendedColorType::Rgb8,
    )
    .unwrap();
    out
}

pub fn jpeg(img: &RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut out, 90)
        .write_image(
            img,
            img.width(),
            img.height(),
            image::ExtendedColorType::Rgb8,
        )
        .unwrap();
    out
}

pub fn webp(img: &RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    WebPEncoder::new_lossless(&mut out)
        .write_image(
            img,
            img.width(),
            img.height(),
            image::ExtendedColorType::Rgb8,
        )
        .unwrap();
    out
}

/// An animated GIF: `frames` frames of solid, distinct colours.
pub fn animated_gif(w: u32, h: u32, frames: usize) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut enc = GifEncoder::new(&mut out);
        enc.set_repeat(Repeat::Infinite).unwrap();
        let frames = (0..frames).map(|i| {
            let c = [(i * 80 % 256) as u8, 100, (255 - i * 80 % 256) as u8, 255];
            Frame::from_parts(
                RgbaImage::from_pixel(w, h, Rgba(c)),
                0,
                0,
                Delay::from_numer_denom_ms(100, 1),
            )
        });
        enc.encode_frames(frames).unwrap();
    }
    out
}

/// How many frames an animated GIF holds.
pub fn gif_frames(bytes: &[u8]) -> usize {
    use image::AnimationDecoder;
    image::codecs::gif::GifDecoder::new(Cursor::new(bytes))
        .unwrap()
        .into_frames()
        .count()
}

/// The number of regular files under `dir` (blobs, for the fs store).
pub fn count_files(dir: &std::path::Path) -> usize {
    let mut n = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                if p.file_name().is_some_and(|n| n == "tmp") {
                    continue;
                }
                n += count_files(&p);
            } else {
                n += 1;
            }
        }
    }
    n
}

/// One RIFF chunk: fourcc, little-endian length, data, pad byte if odd.
pub fn riff_chunk(fourcc: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut out = fourcc.to_vec();
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(data);
    if data.len() % 2 == 1 {
        out.push(0);
    }
    out
}

/// A WebP file from its chunks.
pub fn riff_webp(chunks: &[Vec<u8>]) -> Vec<u8> {
    let body: Vec<u8> = chunks.concat();
    let mut out = b"RIFF".to_vec();
    out.extend_from_slice(&(body.len() as u32 + 4).to_le_bytes());
    out.extend_from_slice(b"WEBP");
    out.extend_from_slice(&body);
    out
}

/// The `VP8X` header chunk of an extended WebP: feature flags and canvas size.
pub fn vp8x(flags: u8, w: u32, h: u32) -> Vec<u8> {
    let mut data = vec![flags, 0, 0, 0];
    data.extend_from_slice(&(w - 1).to_le_bytes()[..3]);
    data.extend_from_slice(&(h - 1).to_le_bytes()[..3]);
    riff_chunk(b"VP8X", &data)
}

/// The `VP8L` chunk (lossless bitstream) of `img`.
pub fn vp8l(img: &RgbImage) -> Vec<u8> {
    webp(img)[12..].to_vec()
}

/// An extended WebP carrying `EXIF` and `XMP ` chunks after the image.
pub fn webp_with_metadata(img: &RgbImage, exif: &[u8], xmp: &[u8]) -> Vec<u8> {
    riff_webp(&[
        vp8x(0x08 | 0x04, img.width(), img.height()),
        vp8l(img),
        riff_chunk(b"EXIF", exif),
        riff_chunk(b"XMP ", xmp),
    ])
}

/// An animated WebP: `frames` full-canvas frames of solid, distinct colours.
pub fn animated_webp(w: u32, h: u32, frames: usize) -> Vec<u8> {
    let mut chunks = vec![vp8x(0x02, w, h), riff_chunk(b"ANIM", &[0, 0, 0, 0, 0, 0])];
    for i in 0..frames {
        let c = (i * 90 % 256) as u8;
        let frame = RgbImage::from_pixel(w, h, Rgb([c, 200 - c / 2, 255 - c]));
        // Offset 0,0; size; 100 ms; no blending, no disposal.
        let mut data = vec![0u8; 6];
        data.extend_from_slice(&(w - 1).to_le_bytes()[..3]);
        data.extend_from_slice(&(h - 1).to_le_bytes()[..3]);
        data.extend_from_slice(&100u32.to_le_bytes()[..3]);
        data.push(0x02);
        data.extend_from_slice(&vp8l(&frame));
        chunks.push(riff_chunk(b"ANMF", &data));
    }
    riff_webp(&chunks)
}

/// `gif` with a comment extension and an XMP application extension inserted
/// before its first block (after the screen descriptor and global palette).
pub fn gif_with_comment(gif: &[u8], comment: &str) -> Vec<u8> {
    let flags = gif[10];
    let mut at = 13;
    if flags & 0x80 != 0 {
        at += 3 << ((flags & 0x07) + 1);
    }
    let mut ext = vec![0x21, 0xFE, comment.len() as u8];
    ext.extend_from_slice(comment.as_bytes());
    ext.push(0);
    ext.extend_from_slice(&[0x21, 0xFF, 11]);
    ext.extend_from_slice(b"XMP DataXMP");
    ext.push(comment.len() as u8);
    ext.extend_from_slice(comment.as_bytes());
    ext.push(0);
    let mut out = gif[..at].to_vec();
    out.extend_from_slice(&ext);
    out.extend_from_slice(&gif[at..]);
    out
}
