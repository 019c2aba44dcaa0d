//! What is served of each container format: metadata (EXIF, XMP, comments)
//! cut out losslessly from JPEG, WebP and GIF as from PNG (`media.rs`), the
//! EXIF rotation of a WebP applied, animated WebP thumbnailed as an animation,
//! and the item's metadata row in the database. On both blob stores.

use image::GenericImageView;
use sha2::{Digest, Sha256};

use crate::support::*;

on_both_stores!(
    metadata_is_stripped_in_every_format,
    animated_webp_keeps_its_animation
);

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

async fn metadata_is_stripped_in_every_format(store: Store) {
    let ms = start(store, |_| {}).await;
    let base = ms.server.base_url.clone();
    let t = ms.server.register_no_password("alice").await.access_token;
    let t = t.as_str();

    // JPEG whose EXIF needs no rotation: the APP1 segment is cut, the
    // compressed pixels are untouched.
    let img = halves(48, 40);
    let jpeg_bytes = jpeg_with_exif(&img, 1);
    let uploaded_at = engine::util::now_ms();
    let (server, id) = upload_ok(&base, t, &jpeg_bytes).await;
    let d = download(&base, Some(t), &server, &id).await.ok();
    assert_eq!(d.header("content-type"), "image/jpeg");
    assert!(!contains(&d.bytes, b"Exif\0\0") && !contains(&d.bytes, b"SECRET-GPS"));
    let app1 = 2 + 2 + 6 + exif_orientation(1).len();
    assert_eq!(d.bytes.len(), jpeg_bytes.len() - app1, "only APP1 removed");
    assert_eq!(decode(&d.bytes).to_rgb8(), decode(&jpeg_bytes).to_rgb8());

    // The metadata row: owner, sniffed type, size and hash of what is served,
    // creation time.
    let record = ms
        .server
        .services()
        .core
        .storage
        .media
        .get_media(&server, &id)
        .await
        .unwrap()
        .expect("media row");
    assert_eq!(record.user_id, Some(ms.server.user_id("alice")));
    assert_eq!(record.content_type.as_deref(), Some("image/jpeg"));
    let content = record.content.expect("uploaded content");
    assert_eq!(content.size as usize, d.bytes.len());
    assert_eq!(content.sha256, hex::encode(Sha256::digest(&d.bytes)));
    assert_eq!((content.width, content.height), (Some(48), Some(40)));
    assert!(record.created_ts >= uploaded_at && record.created_ts <= engine::util::now_ms());

    // WebP with EXIF and XMP chunks: both removed and their VP8X flags cleared;
    // the bitstream is kept byte for byte.
    let img = halves(40, 24);
    let webp_bytes = webp_with_metadata(&img, &exif_orientation(1), b"<x:xmpmeta>SECRET-XMP");
    let (_, id) = upload_ok(&base, t, &webp_bytes).await;
    let d = download(&base, Some(t), &server, &id).await.ok();
    assert_eq!(d.header("content-type"), "image/webp");
    assert_eq!(d.bytes, riff_webp(&[vp8x(0, 40, 24), vp8l(&img)]));
    assert_eq!(decode(&d.bytes).to_rgb8(), img);

    // WebP whose EXIF asks for a 90° clockwise rotation: served upright, and
    // so are its thumbnails.
    let img = halves(64, 32);
    let webp_bytes = webp_with_metadata(&img, &exif_orientation(6), b"<x:xmpmeta/>");
    let (_, id) = upload_ok(&base, t, &webp_bytes).await;
    let d = download(&base, Some(t), &server, &id).await.ok();
    assert!(!contains(&d.bytes, b"SECRET-GPS"));
    let up = decode(&d.bytes);
    assert_eq!(up.dimensions(), (32, 64));
    assert!(up.get_pixel(16, 4)[0] > 150 && up.get_pixel(16, 60)[2] > 150);
    let th = thumbnail(&base, t, &server, &id, "width=16&height=32&method=scale")
        .await
        .ok();
    let th = decode(&th.bytes);
    assert_eq!(th.dimensions(), (16, 32));
    assert!(th.get_pixel(8, 2)[0] > 150 && th.get_pixel(8, 29)[2] > 150);

    // Animated GIF with a comment and an XMP application extension: both
    // removed, the animation (and its looping extension) kept.
    let gif_bytes = animated_gif(30, 20, 4);
    let with_comment = gif_with_comment(&gif_bytes, "SECRET-COMMENT");
    let (_, id) = upload_ok(&base, t, &with_comment).await;
    let d = download(&base, Some(t), &server, &id).await.ok();
    assert_eq!(d.header("content-type"), "image/gif");
    assert_eq!(d.bytes, gif_bytes);
    assert_eq!(gif_frames(&d.bytes), 4);
    ms.server.shutdown().await;
}

async fn animated_webp_keeps_its_animation(store: Store) {
    let ms = start(store, |_| {}).await;
    let base = ms.server.base_url.clone();
    let t = ms.server.register_no_password("alice").await.access_token;
    let t = t.as_str();
    let webp_bytes = animated_webp(60, 40, 3);
    let (server, id) = upload_ok(&base, t, &webp_bytes).await;
    let d = download(&base, Some(t), &server, &id).await.ok();
    assert_eq!(d.header("content-type"), "image/webp");
    assert_eq!(d.bytes, webp_bytes, "nothing to strip: same bytes");
    for (query, size) in [
        ("width=30&height=20&method=scale&animated=true", (30, 20)),
        ("width=16&height=16&method=crop&animated=true", (16, 16)),
    ] {
        let anim = thumbnail(&base, t, &server, &id, query).await.ok();
        assert_eq!(anim.header("content-type"), "image/gif", "{query}");
        assert_eq!(gif_frames(&anim.bytes), 3, "{query}");
        assert_eq!(decode(&anim.bytes).dimensions(), size, "{query}");
    }
    // Without `animated=true`: a still of the first frame.
    let still = thumbnail(&base, t, &server, &id, "width=30&height=20&method=scale")
        .await
        .ok();
    assert_ne!(still.header("content-type"), "image/gif");
    assert_eq!(decode(&still.bytes).dimensions(), (30, 20));
    ms.server.shutdown().await;
}
