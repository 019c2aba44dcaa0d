//! The media repository, black-box over HTTP: uploads of PNG, JPEG (with an
//! EXIF rotation), WebP and animated GIF; downloads and their headers;
//! thumbnails of every configured size and method, on-demand sizes, animated
//! thumbnails; refusals (401, 404, corrupt images, decompression bombs,
//! M_TOO_LARGE, quota, rate limit); asynchronous uploads; the legacy switch.
//! Every scenario here, in `media/limits.rs` and in `media/metadata.rs` runs
//! twice, as `fs::<name>` on the filesystem store and as `s3::<name>` on a real
//! S3-compatible server (S3Proxy, started by scripts/test.sh). `media/admin.rs`
//! deletes media through the admin API and `media/federation.rs` fetches and
//! caches another server's media, on both stores too; `media/runtime.rs`
//! checks that decoding leaves the async runtime free.

// First, so that its `on_both_stores!` is visible in the modules after it.
#[macro_use]
#[path = "media/support.rs"]
mod support;

#[path = "media/admin.rs"]
mod admin;
mod common;
#[path = "media/federation.rs"]
mod federation;
#[path = "media/limits.rs"]
mod limits;
#[path = "media/metadata.rs"]
mod metadata;
#[path = "media/runtime.rs"]
mod runtime;

use image::GenericImageView;
use reqwest::Method;
use support::*;

on_both_stores!(
    formats,
    metadata_kept_when_stripping_is_off,
    authenticated_endpoints_refuse_anonymous_clients,
    legacy_endpoints_follow_the_switch,
);

/// Everything a client sees of one upload of each format, on `store`.
async fn formats(store: Store) {
    let ms = start(store, |_| {}).await;
    let base = ms.server.base_url.clone();
    let token = ms.server.register_no_password("alice").await.access_token;
    let t = token.as_str();

    // PNG, declared as something else: the type is sniffed; the text chunk is
    // stripped losslessly (same pixels).
    let img = halves(840, 630);
    let png_bytes = png_with_text(&img, "SECRET-LOCATION");
    let r = upload(&base, t, &png_bytes, Some("cat.png"), "text/html")
        .await
        .ok();
    let (server, png_id) = split_mxc(r.json()["content_uri"].as_str().unwrap());
    assert_eq!(server, ms.server.server_name);
    let after_upload = count_files(ms.dir.path());
    let d = download(&base, Some(t), &server, &png_id).await.ok();
    assert_eq!(d.header("content-type"), "image/png");
    assert_eq!(d.header("content-length"), d.bytes.len().to_string());
    assert!(d
        .header("content-disposition")
        .starts_with("inline; filename=\"cat.png\""));
    assert!(d.header("content-security-policy").contains("sandbox"));
    assert!(d
        .header("content-security-policy")
        .contains("default-src 'none'"));
    assert!(d.header("cache-control").contains("private"));
    assert_eq!(d.header("x-content-type-options"), "nosniff");
    assert!(
        !contains(&d.bytes, b"SECRET-LOCATION"),
        "tEXt must be stripped"
    );
    assert_eq!(d.bytes.len(), png_bytes.len() - (12 + 8 + 15));
    assert_eq!(
        decode(&d.bytes).to_rgb8(),
        img,
        "stripping must not touch pixels"
    );

    // Every configured thumbnail: crops are exactly the box, scales fit inside.
    for (w, h, method) in [
        (32, 32, "crop"),
        (96, 96, "crop"),
        (320, 240, "scale"),
        (640, 480, "scale"),
        (800, 600, "scale"),
    ] {
        let q = format!("width={w}&height={h}&method={method}");
        let th = thumbnail(&base, t, &server, &png_id, &q).await.ok();
        assert_eq!(th.header("content-type"), "image/jpeg");
        assert!(th.header("content-security-policy").contains("sandbox"));
        let pic = decode(&th.bytes);
        if method == "crop" {
            assert_eq!(pic.dimensions(), (w, h), "{q}");
        } else {
            assert!(
                pic.width() <= w && pic.height() <= h,
                "{q}: {:?}",
                pic.dimensions()
            );
            assert!(
                pic.width() == w || pic.height() == h,
                "{q}: {:?}",
                pic.dimensions()
            );
        }
        // Left stays red, right stays blue.
        let (l, r) = (
            pic.get_pixel(1, pic.height() / 2),
            pic.get_pixel(pic.width() - 2, pic.height() / 2),
        );
        assert!(
            l[0] > 150 && l[2] < 100 && r[2] > 150 && r[0] < 100,
            "{q}: {l:?} {r:?}"
        );
    }
    if store == Store::Fs {
        assert_eq!(
            count_files(ms.dir.path()),
            after_upload,
            "the configured sizes were made at upload"
        );
    }
    // An unconfigured size is made on demand, then served from the store.
    let blobs_before = count_files(ms.dir.path());
    let a = thumbnail(&base, t, &server, &png_id, "width=50&height=70&method=crop")
        .await
        .ok();
    assert_eq!(decode(&a.bytes).dimensions(), (50, 70));
    let b = thumbnail(&base, t, &server, &png_id, "width=50&height=70&method=crop")
        .await
        .ok();
    assert_eq!(a.bytes, b.bytes);
    if store == Store::Fs {
        assert_eq!(
            count_files(ms.dir.path()),
            blobs_before + 1,
            "one cached thumbnail blob"
        );
    }

    // JPEG with EXIF orientation 6 (display rotated 90° clockwise): served
    // upright without EXIF; thumbnails upright too.
    let img = halves(64, 32);
    let jpeg_bytes = jpeg_with_exif(&img, 6);
    assert!(contains(&jpeg_bytes, b"SECRET-GPS"));
    let (_, jpeg_id) = upload_ok(&base, t, &jpeg_bytes).await;
    let d = download(&base, Some(t), &server, &jpeg_id).await.ok();
    assert_eq!(d.header("content-type"), "image/jpeg");
    assert!(!contains(&d.bytes, b"Exif\0\0") && !contains(&d.bytes, b"SECRET-GPS"));
    let up = decode(&d.bytes);
    assert_eq!(up.dimensions(), (32, 64), "rotated to portrait");
    // The image's left (red) half is on top once rotated clockwise.
    assert!(up.get_pixel(16, 4)[0] > 150 && up.get_pixel(16, 60)[2] > 150);
    let th = thumbnail(
        &base,
        t,
        &server,
        &jpeg_id,
        "width=16&height=32&method=scale",
    )
    .await
    .ok();
    let th = decode(&th.bytes);
    assert_eq!(th.dimensions(), (16, 32));
    assert!(th.get_pixel(8, 2)[0] > 150 && th.get_pixel(8, 29)[2] > 150);

    // WebP without metadata: the very same bytes come back.
    let webp_bytes = webp(&halves(48, 30));
    let (_, webp_id) = upload_ok(&base, t, &webp_bytes).await;
    let d = download(&base, Some(t), &server, &webp_id).await.ok();
    assert_eq!(d.header("content-type"), "image/webp");
    assert_eq!(d.bytes, webp_bytes);
    let th = thumbnail(
        &base,
        t,
        &server,
        &webp_id,
        "width=32&height=32&method=crop",
    )
    .await
    .ok();
    assert_eq!(
        decode(&th.bytes).dimensions(),
        (30, 30),
        "crop never enlarges"
    );

    // Animated GIF: same bytes back; animated=true keeps the animation,
    // otherwise a still.
    let gif_bytes = animated_gif(60, 40, 3);
    let (_, gif_id) = upload_ok(&base, t, &gif_bytes).await;
    let d = download(&base, Some(t), &server, &gif_id).await.ok();
    assert_eq!(d.header("content-type"), "image/gif");
    assert_eq!(d.bytes, gif_bytes);
    let anim = thumbnail(
        &base,
        t,
        &server,
        &gif_id,
        "width=30&height=20&method=scale&animated=true",
    )
    .await
    .ok();
    assert_eq!(anim.header("content-type"), "image/gif");
    assert_eq!(gif_frames(&anim.bytes), 3);
    assert_eq!(decode(&anim.bytes).dimensions(), (30, 20));
    let still = thumbnail(
        &base,
        t,
        &server,
        &gif_id,
        "width=30&height=20&method=scale",
    )
    .await
    .ok();
    // GIF decodes with an alpha channel, so the still keeps it as PNG.
    assert_eq!(still.header("content-type"), "image/png");
    assert_eq!(decode(&still.bytes).dimensions(), (30, 20));

    // A file that is not an image: sniffed, downloaded as an attachment, no thumbnail.
    let html = b"<html><script>alert(1)</script></html>";
    let r = upload(&base, t, html, Some("x.html"), "text/html")
        .await
        .ok();
    let (_, html_id) = split_mxc(r.json()["content_uri"].as_str().unwrap());
    let d = download(&base, Some(t), &server, &html_id).await.ok();
    assert_eq!(d.header("content-type"), "text/plain; charset=utf-8");
    assert_eq!(d.bytes, html);
    let bin = [0u8, 1, 2, 3, 255, 254];
    let (_, bin_id) = upload_ok(&base, t, &bin).await;
    let d = download(&base, Some(t), &server, &bin_id).await.ok();
    assert_eq!(d.header("content-type"), "application/octet-stream");
    assert!(d.header("content-disposition").starts_with("attachment"));
    let path =
        format!("/_matrix/client/v1/media/download/{server}/{bin_id}/r%C3%A9sum%C3%A9%22.bin");
    let d = send(&base, Some(t), Method::GET, &path, None, None)
        .await
        .ok();
    assert_eq!(
        d.header("content-disposition"),
        "attachment; filename=\"r_sum__.bin\"; filename*=utf-8''r%C3%A9sum%C3%A9%22.bin"
    );
    thumbnail(&base, t, &server, &html_id, "width=32&height=32")
        .await
        .assert_error(400, "M_UNKNOWN");

    // Unknown ids: 404. Another server's media is fetched from it over
    // federation (`media/federation.rs`); a server that does not exist cannot
    // be reached: 502.
    download(&base, Some(t), &server, "nosuchmedia")
        .await
        .assert_error(404, "M_NOT_FOUND");
    download(&base, Some(t), "elsewhere.invalid", "abc")
        .await
        .assert_error(502, "M_UNKNOWN");
    download(&base, Some(t), "bad server name!", "abc")
        .await
        .assert_error(404, "M_NOT_FOUND");
    thumbnail(&base, t, &server, "nosuchmedia", "width=32&height=32")
        .await
        .assert_error(404, "M_NOT_FOUND");

    // A restarted server still serves everything from the store.
    let mut server_handle = ms.server;
    server_handle.restart().await;
    let base = server_handle.base_url.clone();
    let d = download(&base, Some(t), &server, &webp_id).await.ok();
    assert_eq!(d.bytes, webp_bytes);
    server_handle.shutdown().await;
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

async fn metadata_kept_when_stripping_is_off(store: Store) {
    let ms = start(store, |c| c.media.strip_metadata = false).await;
    let base = ms.server.base_url.clone();
    let t = ms.server.register_no_password("alice").await.access_token;
    let jpeg_bytes = jpeg_with_exif(&halves(64, 32), 6);
    let (server, id) = upload_ok(&base, &t, &jpeg_bytes).await;
    let d = download(&base, Some(&t), &server, &id).await.ok();
    assert_eq!(d.bytes, jpeg_bytes, "same bytes back");
    // Thumbnails are upright all the same.
    let th = thumbnail(&base, &t, &server, &id, "width=32&height=64&method=scale")
        .await
        .ok();
    assert_eq!(decode(&th.bytes).dimensions(), (32, 64));
    ms.server.shutdown().await;
}

async fn authenticated_endpoints_refuse_anonymous_clients(store: Store) {
    let ms = start(store, |_| {}).await;
    let base = ms.server.base_url.clone();
    let t = ms.server.register_no_password("alice").await.access_token;
    let (server, id) = upload_ok(&base, &t, &png(&halves(8, 8))).await;
    for path in [
        format!("/_matrix/client/v1/media/download/{server}/{id}"),
        format!("/_matrix/client/v1/media/download/{server}/{id}/a.png"),
        format!("/_matrix/client/v1/media/thumbnail/{server}/{id}?width=8&height=8"),
        "/_matrix/client/v1/media/config".to_owned(),
    ] {
        send(&base, None, Method::GET, &path, None, None)
            .await
            .assert_error(401, "M_MISSING_TOKEN");
        send(&base, Some("bogus"), Method::GET, &path, None, None)
            .await
            .assert_error(401, "M_UNKNOWN_TOKEN");
    }
    send(
        &base,
        None,
        Method::POST,
        "/_matrix/media/v3/upload",
        Some(vec![1u8].into()),
        None,
    )
    .await
    .assert_error(401, "M_MISSING_TOKEN");
    send(
        &base,
        None,
        Method::POST,
        "/_matrix/media/v1/create",
        None,
        None,
    )
    .await
    .assert_error(401, "M_MISSING_TOKEN");
    let config = send(
        &base,
        Some(&t),
        Method::GET,
        "/_matrix/client/v1/media/config",
        None,
        None,
    )
    .await
    .ok();
    assert_eq!(config.json()["m.upload.size"], 50 * 1024 * 1024);
    ms.server.shutdown().await;
}

async fn legacy_endpoints_follow_the_switch(store: Store) {
    for enabled in [false, true] {
        let ms = start(store, |c| c.media.legacy_unauthenticated = enabled).await;
        let base = ms.server.base_url.clone();
        let t = ms.server.register_no_password("alice").await.access_token;
        let (server, id) = upload_ok(&base, &t, &png(&halves(40, 40))).await;
        let paths = [
            format!("/_matrix/media/v3/download/{server}/{id}"),
            format!("/_matrix/media/v3/download/{server}/{id}/pic.png"),
            format!("/_matrix/media/v3/thumbnail/{server}/{id}?width=32&height=32&method=crop"),
            "/_matrix/media/v3/config".to_owned(),
        ];
        for path in paths {
            let r = send(&base, None, Method::GET, &path, None, None).await;
            if enabled {
                let r = r.ok();
                if !path.ends_with("config") {
                    assert!(r.header("cache-control").starts_with("public"), "{path}");
                    assert!(r.header("content-security-policy").contains("sandbox"));
                    decode(&r.bytes);
                }
            } else {
                r.assert_error(404, "M_NOT_FOUND");
            }
        }
        ms.server.shutdown().await;
    }
}
