//! Refusals and limits: oversized uploads, quota, decompression bombs,
//! corrupt images, upload rate limits, asynchronous upload rules, re-encoding.
//! Each on both blob stores.

use std::time::Duration;

use reqwest::Method;

use crate::support::*;

on_both_stores!(
    oversized_uploads_get_m_too_large,
    per_user_quota,
    bombs_and_corrupt_images_are_refused_cleanly,
    upload_rate_limit,
    asynchronous_upload,
    large_originals_are_reencoded,
);

async fn oversized_uploads_get_m_too_large(store: Store) {
    let ms = start(store, |c| c.media.max_upload_bytes = 4096).await;
    let base = ms.server.base_url.clone();
    let t = ms.server.register_no_password("alice").await.access_token;
    upload(
        &base,
        &t,
        &vec![7u8; 4097],
        None,
        "application/octet-stream",
    )
    .await
    .assert_error(413, "M_TOO_LARGE");
    // Without a Content-Length (chunked), the stream is cut off at the limit.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..10).map(|_| Ok(vec![1u8; 1000])).collect();
    let body = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    send(
        &base,
        Some(&t),
        Method::POST,
        "/_matrix/media/v3/upload",
        Some(body),
        None,
    )
    .await
    .assert_error(413, "M_TOO_LARGE");
    upload_ok(&base, &t, &vec![7u8; 4096]).await;
    // Nothing is left behind in staging.
    let staging: Vec<_> = std::fs::read_dir(ms.dir.path().join("tmp"))
        .unwrap()
        .collect();
    assert!(staging.is_empty(), "staging files left: {staging:?}");
    ms.server.shutdown().await;
}

async fn per_user_quota(store: Store) {
    let ms = start(store, |c| c.media.user_quota_bytes = 3000).await;
    let base = ms.server.base_url.clone();
    let alice = ms.server.register_no_password("alice").await.access_token;
    let bob = ms.server.register_no_password("bob").await.access_token;
    upload_ok(&base, &alice, &vec![1u8; 2000]).await;
    upload(
        &base,
        &alice,
        &vec![2u8; 2000],
        None,
        "application/octet-stream",
    )
    .await
    .assert_error(403, "M_FORBIDDEN");
    upload_ok(&base, &alice, &vec![3u8; 1000]).await;
    upload_ok(&base, &bob, &vec![4u8; 2000]).await;
    ms.server.shutdown().await;
}

async fn bombs_and_corrupt_images_are_refused_cleanly(store: Store) {
    let ms = start(store, |c| c.media.max_image_pixels = 1_000_000).await;
    let base = ms.server.base_url.clone();
    let t = ms.server.register_no_password("alice").await.access_token;
    // A real 1200x1000 image: over the pixel limit.
    let big = png(&halves(1200, 1000));
    upload(&base, &t, &big, None, "image/png")
        .await
        .assert_error(413, "M_TOO_LARGE");
    // A bomb: a header announcing 100000 x 100000 pixels over a few bytes of data.
    let mut bomb = png(&halves(4, 4));
    bomb[16..20].copy_from_slice(&100_000u32.to_be_bytes());
    bomb[20..24].copy_from_slice(&100_000u32.to_be_bytes());
    // With a valid header checksum, as a crafted bomb would have.
    let crc = crc32(&bomb[12..29]);
    bomb[29..33].copy_from_slice(&crc.to_be_bytes());
    upload(&base, &t, &bomb, None, "image/png")
        .await
        .assert_error(413, "M_TOO_LARGE");
    // Truncated and corrupt images.
    let good = jpeg(&halves(64, 64));
    upload(&base, &t, &good[..good.len() / 3], None, "image/jpeg")
        .await
        .assert_error(400, "M_UNKNOWN");
    let mut corrupt = png(&halves(32, 32));
    let n = corrupt.len();
    corrupt[40..n - 20].fill(0x5A);
    upload(&base, &t, &corrupt, None, "image/png")
        .await
        .assert_error(400, "M_UNKNOWN");
    upload(&base, &t, b"GIF89a\x10\0", None, "image/gif")
        .await
        .assert_error(400, "M_UNKNOWN");
    // The server still serves.
    let (server, id) = upload_ok(&base, &t, &good).await;
    download(&base, Some(&t), &server, &id).await.ok();
    ms.server.shutdown().await;
}

async fn upload_rate_limit(store: Store) {
    let ms = start(store, |c| {
        c.rate_limits.enabled = true;
        c.rate_limits.media_upload.burst = 2.0;
        c.rate_limits.media_upload.per_second = 0.01;
    })
    .await;
    let base = ms.server.base_url.clone();
    let t = ms.server.register_no_password("alice").await.access_token;
    upload_ok(&base, &t, b"one").await;
    upload_ok(&base, &t, b"two").await;
    let r = upload(&base, &t, b"three", None, "text/plain").await;
    r.assert_error(429, "M_LIMIT_EXCEEDED");
    assert!(r.json()["retry_after_ms"].as_u64().unwrap() > 0);
    ms.server.shutdown().await;
}

async fn asynchronous_upload(store: Store) {
    let ms = start(store, |c| c.media.max_pending_uploads = 3).await;
    let base = ms.server.base_url.clone();
    let alice = ms.server.register_no_password("alice").await.access_token;
    let bob = ms.server.register_no_password("bob").await.access_token;
    let created = send(
        &base,
        Some(&alice),
        Method::POST,
        "/_matrix/media/v1/create",
        None,
        None,
    )
    .await
    .ok()
    .json();
    assert!(created["unused_expires_at"].as_i64().unwrap() > 0);
    let (server, id) = split_mxc(created["content_uri"].as_str().unwrap());
    // Not uploaded yet: a short wait ends in 504 M_NOT_YET_UPLOADED.
    let path = format!("/_matrix/client/v1/media/download/{server}/{id}?timeout_ms=200");
    send(&base, Some(&alice), Method::GET, &path, None, None)
        .await
        .assert_error(504, "M_NOT_YET_UPLOADED");
    // A download waiting for the upload gets it as soon as it lands.
    let waiting = {
        let (base, t, server, id) = (base.clone(), bob.clone(), server.clone(), id.clone());
        tokio::spawn(async move {
            let path = format!("/_matrix/client/v1/media/download/{server}/{id}?timeout_ms=10000");
            send(&base, Some(&t), Method::GET, &path, None, None).await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let put = format!("/_matrix/media/v3/upload/{server}/{id}?filename=later.png");
    let data = png(&halves(20, 20));
    // Only the creator may fill the id.
    send(
        &base,
        Some(&bob),
        Method::PUT,
        &put,
        Some(data.clone().into()),
        None,
    )
    .await
    .assert_error(403, "M_FORBIDDEN");
    let r = send(
        &base,
        Some(&alice),
        Method::PUT,
        &put,
        Some(data.clone().into()),
        None,
    )
    .await
    .ok();
    assert_eq!(r.json(), serde_json::json!({}));
    let got = waiting.await.unwrap().ok();
    assert_eq!(got.bytes, data);
    assert!(got.header("content-disposition").contains("later.png"));
    send(
        &base,
        Some(&alice),
        Method::PUT,
        &put,
        Some(data.clone().into()),
        None,
    )
    .await
    .assert_error(409, "M_CANNOT_OVERWRITE_MEDIA");
    // Thumbnails exist for async uploads too.
    thumbnail(
        &base,
        &alice,
        &server,
        &id,
        "width=32&height=32&method=crop",
    )
    .await
    .ok();
    // Unknown ids and foreign server names.
    send(
        &base,
        Some(&alice),
        Method::PUT,
        &format!("/_matrix/media/v3/upload/{server}/nope"),
        Some(data.clone().into()),
        None,
    )
    .await
    .assert_error(404, "M_NOT_FOUND");
    send(
        &base,
        Some(&alice),
        Method::PUT,
        &format!("/_matrix/media/v3/upload/other.example/{id}"),
        Some(data.into()),
        None,
    )
    .await
    .assert_error(404, "M_NOT_FOUND");
    // At most three pending ids per user.
    for _ in 0..3 {
        send(
            &base,
            Some(&alice),
            Method::POST,
            "/_matrix/media/v1/create",
            None,
            None,
        )
        .await
        .ok();
    }
    let r = send(
        &base,
        Some(&alice),
        Method::POST,
        "/_matrix/media/v1/create",
        None,
        None,
    )
    .await;
    r.assert_error(429, "M_LIMIT_EXCEEDED");
    assert!(r.json()["retry_after_ms"].as_u64().is_some());
    ms.server.shutdown().await;
}

async fn large_originals_are_reencoded(store: Store) {
    let ms = start(store, |c| {
        c.media.reencode_above_bytes = 20_000;
        c.media.reencode_max_dimension = 100;
    })
    .await;
    let base = ms.server.base_url.clone();
    let t = ms.server.register_no_password("alice").await.access_token;
    let big = png(&noise(400, 300));
    assert!(
        big.len() > 20_000,
        "test image must exceed the threshold: {}",
        big.len()
    );
    let (server, id) = upload_ok(&base, &t, &big).await;
    let d = download(&base, Some(&t), &server, &id).await.ok();
    assert_eq!(d.header("content-type"), "image/jpeg");
    assert!(d.bytes.len() < big.len());
    let img = decode(&d.bytes);
    assert_eq!((img.width(), img.height()), (100, 75));
    // Small originals are left alone.
    let small = png(&halves(20, 20));
    let (_, id) = upload_ok(&base, &t, &small).await;
    assert_eq!(
        download(&base, Some(&t), &server, &id).await.ok().bytes,
        small
    );
    ms.server.shutdown().await;
}
