//! Media across servers: hs2's users download and thumbnail hs1's uploads
//! through hs2's client API, which fetches them over federation
//! (`/_matrix/federation/v1/media/download`), caches them, and serves the
//! cache once hs1 is gone. hs1's federation endpoints answer `multipart/mixed`
//! to signed requests only.

use engine::media::multipart::{boundary_of, MultipartReader};
use futures::StreamExt;
use reqwest::Method;
use sha2::{Digest, Sha256};

use crate::{common::federation::Federation, support::*};

/// hs1 and hs2 with media under `dir`; hs2 on `store`, accepting at most
/// 200 KB (so a bigger remote item is refused) and serving legacy media.
async fn start_pair(dir: &std::path::Path, store: Store) -> Federation {
    Federation::start_with(2, |i, c| {
        if i == 1 {
            use_store(c, store, dir.join("hs2"));
            c.media.max_upload_bytes = 200_000;
            c.media.legacy_unauthenticated = true;
        } else {
            use_store(c, Store::Fs, dir.join("hs1"));
        }
    })
    .await
}

/// An admin's access token on `server`.
async fn admin_of(server: &crate::common::TestServer) -> String {
    use crate::common::PASSWORD;
    server.admin_register("root", PASSWORD, true).await.ok();
    server.login("root", PASSWORD).await.access_token
}

/// A signed federation GET from hs2 to hs1; the media part of its answer.
async fn federation_get(fed: &Federation, path: &str) -> Result<(String, Vec<u8>), String> {
    let hs2 = fed.servers[1].services();
    let hs1 = ruma::ServerName::parse("hs1.test").unwrap();
    let raw = hs2
        .federation
        .client
        .request_raw(&hs1, Method::GET, path, None)
        .await
        .map_err(|e| e.errcode().unwrap_or("transport").to_owned())?;
    let content_type = raw.headers["content-type"].to_str().unwrap().to_owned();
    let boundary = boundary_of(&content_type).expect("multipart/mixed with a boundary");
    let body: engine::media::ByteStream = Box::pin(futures::stream::once(async move {
        Ok::<_, std::io::Error>(raw.body)
    }));
    let mut reader = MultipartReader::new(body, &boundary);
    let (meta, part) = reader.read_head().await.expect("two parts");
    assert_eq!(meta, serde_json::json!({}));
    let part_type = part.get("content-type").unwrap_or_default().to_owned();
    let mut bytes = Vec::new();
    let mut media = reader.into_body();
    while let Some(chunk) = media.next().await {
        bytes.extend_from_slice(&chunk.expect("media part"));
    }
    Ok((part_type, bytes))
}

async fn remote_media_scenario(store: Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let fed = start_pair(dir.path(), store).await;
    let (hs1, hs2) = (
        fed.servers[0].base_url.clone(),
        fed.servers[1].base_url.clone(),
    );
    let alice = fed.servers[0]
        .register_no_password("alice")
        .await
        .access_token;
    let bob = fed.servers[1]
        .register_no_password("bob")
        .await
        .access_token;

    let png_bytes = png(&halves(120, 80));
    let r = upload(&hs1, &alice, &png_bytes, Some("cat.png"), "image/png")
        .await
        .ok();
    let (origin, png_id) = split_mxc(r.json()["content_uri"].as_str().unwrap());
    assert_eq!(origin, "hs1.test");
    // What hs1 serves (its pipeline may have cleaned the upload).
    let png_bytes = download(&hs1, Some(&alice), "hs1.test", &png_id)
        .await
        .ok()
        .bytes;
    let big = noise(300, 300).into_raw();
    let (_, big_id) = upload_ok(&hs1, &alice, &big).await;
    let text = b"plain words".to_vec();
    let (_, text_id) = upload_ok(&hs1, &alice, &text).await;

    // The federation endpoints: signed requests get both parts...
    let (part_type, bytes) = federation_get(
        &fed,
        &format!("/_matrix/federation/v1/media/download/{png_id}"),
    )
    .await
    .unwrap();
    assert_eq!((part_type.as_str(), &bytes), ("image/png", &png_bytes));
    let (thumb_type, thumb) = federation_get(
        &fed,
        &format!("/_matrix/federation/v1/media/thumbnail/{png_id}?width=32&height=32&method=crop"),
    )
    .await
    .unwrap();
    assert_eq!(thumb_type, "image/jpeg");
    assert_eq!(image::load_from_memory(&thumb).unwrap().width(), 32);
    let missing = federation_get(&fed, "/_matrix/federation/v1/media/download/nosuchmedia").await;
    assert_eq!(missing.unwrap_err(), "M_NOT_FOUND");
    // ...unsigned ones are refused.
    let unsigned = fed
        .http()
        .get(format!(
            "{}/_matrix/federation/v1/media/download/{png_id}",
            fed.federation_url(0)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status().as_u16(), 401);

    // hs2's client API fetches hs1's media over federation.
    let d = download(&hs2, Some(&bob), "hs1.test", &png_id).await.ok();
    assert_eq!(d.bytes, png_bytes);
    assert_eq!(d.header("content-type"), "image/png");
    assert!(
        d.header("content-disposition")
            .contains("filename=\"cat.png\""),
        "{}",
        d.header("content-disposition")
    );
    let th = thumbnail(
        &hs2,
        &bob,
        "hs1.test",
        &png_id,
        "width=40&height=40&method=crop",
    )
    .await
    .ok();
    assert_eq!(decode(&th.bytes).width(), 40);
    // A remote animated GIF keeps its animation in `animated=true` thumbnails.
    let gif_bytes = animated_gif(60, 40, 3);
    let (_, gif_id) = upload_ok(&hs1, &alice, &gif_bytes).await;
    let anim = thumbnail(
        &hs2,
        &bob,
        "hs1.test",
        &gif_id,
        "width=30&height=20&method=scale&animated=true",
    )
    .await
    .ok();
    assert_eq!(anim.header("content-type"), "image/gif");
    assert_eq!(gif_frames(&anim.bytes), 3);
    let legacy = send(
        &hs2,
        None,
        Method::GET,
        &format!("/_matrix/media/v3/download/hs1.test/{text_id}"),
        None,
        None,
    )
    .await
    .ok();
    assert_eq!(legacy.bytes, text);

    // Many clients asking at once all get it (one fetch, the rest wait for it).
    let burst = noise(64, 64).into_raw();
    let (_, burst_id) = upload_ok(&hs1, &alice, &burst).await;
    let answers = futures::future::join_all(
        (0..6).map(|_| download(&hs2, Some(&bob), "hs1.test", &burst_id)),
    )
    .await;
    for a in answers {
        assert_eq!(a.ok().bytes, burst);
    }

    // It is recorded as a cached copy of hs1's media.
    let record = fed.servers[1]
        .services()
        .core
        .storage
        .media
        .get_media("hs1.test", &png_id)
        .await
        .unwrap()
        .expect("cached record");
    assert!(record.remote_cache && record.user_id.is_none());
    assert!(record.last_access_ts.is_some());
    let content = record.content.expect("content");
    assert_eq!(content.size, png_bytes.len() as i64);
    assert_eq!(content.sha256, hex::encode(Sha256::digest(&png_bytes)));

    // Unknown remote media, and remote media over hs2's size limit.
    download(&hs2, Some(&bob), "hs1.test", "nosuchmedia")
        .await
        .assert_error(404, "M_NOT_FOUND");
    download(&hs2, Some(&bob), "hs1.test", &big_id)
        .await
        .assert_error(502, "M_TOO_LARGE");
    assert!(fed.servers[1]
        .services()
        .core
        .storage
        .media
        .get_media("hs1.test", &big_id)
        .await
        .unwrap()
        .is_none());

    // Purging the cache: an old cut-off keeps everything, a later one takes
    // every cached item (blob included); the next download fetches it again.
    let hs2_admin = admin_of(&fed.servers[1]).await;
    let purge = |before: i64| {
        let (hs2, token) = (hs2.clone(), hs2_admin.clone());
        async move {
            send(
                &hs2,
                Some(&token),
                Method::POST,
                &format!("/_synapse/admin/v1/purge_media_cache?before_ts={before}"),
                None,
                None,
            )
            .await
            .ok()
            .json()
        }
    };
    assert_eq!(
        purge(40_000_000_000).await,
        serde_json::json!({"deleted": 0})
    );
    let hs2_services = fed.servers[1].services();
    let cached_text = hs2_services.media.blobs();
    let text_sha = hex::encode(Sha256::digest(&text));
    assert!(cached_text.get(&text_sha).await.unwrap().is_some());
    let later = engine::util::now_ms() + 60_000;
    assert_eq!(purge(later).await, serde_json::json!({"deleted": 4}));
    assert!(cached_text.get(&text_sha).await.unwrap().is_none());
    let d = download(&hs2, Some(&bob), "hs1.test", &text_id).await.ok();
    assert_eq!(d.bytes, text);
    let d = download(&hs2, Some(&bob), "hs1.test", &png_id).await.ok();
    assert_eq!(d.bytes, png_bytes);
    thumbnail(
        &hs2,
        &bob,
        "hs1.test",
        &png_id,
        "width=40&height=40&method=crop",
    )
    .await
    .ok();

    // With hs1 gone, the cache still serves what was fetched, and what was
    // not cannot be reached.
    let mut servers = fed.servers;
    let hs1_server = servers.remove(0);
    hs1_server.shutdown().await;
    let d = download(&hs2, Some(&bob), "hs1.test", &png_id).await.ok();
    assert_eq!(d.bytes, png_bytes);
    thumbnail(
        &hs2,
        &bob,
        "hs1.test",
        &png_id,
        "width=40&height=40&method=crop",
    )
    .await
    .ok();
    thumbnail(
        &hs2,
        &bob,
        "hs1.test",
        &png_id,
        "width=20&height=20&method=scale",
    )
    .await
    .ok();
    let unreachable = download(&hs2, Some(&bob), "hs1.test", "neverfetched").await;
    assert!(
        [502, 504].contains(&unreachable.status.as_u16())
            && unreachable.json()["errcode"] == "M_UNKNOWN",
        "{}: {}",
        unreachable.status,
        String::from_utf8_lossy(&unreachable.bytes)
    );
    for s in servers {
        s.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_media_is_fetched_over_federation_and_cached() {
    remote_media_scenario(Store::Fs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_media_cached_in_s3() {
    if s3_url().is_some() {
        remote_media_scenario(Store::S3).await;
    }
}
