//! Deleting media through the admin API (Synapse's paths and shapes): one
//! item, by last access and size (keeping avatars unless told otherwise), with
//! shared blobs kept until their last user goes; idempotent; bad input.
//! Purging the remote media cache is in `federation.rs`, where there is one.

use reqwest::Method;
use serde_json::{json, Value};

use crate::{
    common::{enc, PASSWORD},
    support::*,
};

const A1: &str = "/_synapse/admin/v1";

async fn admin_call(base: &str, token: &str, method: Method, path: &str) -> Raw {
    send(
        base,
        Some(token),
        method,
        path,
        Some(b"{}".to_vec().into()),
        Some("application/json"),
    )
    .await
}

/// Whether the blob store still holds the blob of `bytes`.
async fn blob_exists(ms: &MediaServer, bytes: &[u8]) -> bool {
    use sha2::Digest;
    let sha = hex::encode(sha2::Sha256::digest(bytes));
    ms.server
        .services()
        .media
        .blobs()
        .get(&sha)
        .await
        .unwrap()
        .is_some()
}

async fn deletion_scenario(store: Store) {
    let ms = start(store, |_| {}).await;
    let base = ms.server.base_url.clone();
    ms.server.admin_register("root", PASSWORD, true).await.ok();
    let root = ms.server.login("root", PASSWORD).await.access_token;
    let alice = ms.server.register_no_password("alice").await;
    let t = alice.access_token.as_str();
    let started = engine::util::now_ms();

    // Two uploads of the same bytes share one blob.
    let shared = b"the same bytes twice".to_vec();
    let (server, a) = upload_ok(&base, t, &shared).await;
    let (_, b) = upload_ok(&base, t, &shared).await;
    let avatar_bytes = png(&halves(64, 64));
    let (_, avatar) = upload_ok(&base, t, &avatar_bytes).await;
    let big = vec![9u8; 5000];
    let (_, big_id) = upload_ok(&base, t, &big).await;
    let small = b"small".to_vec();
    let (_, small_id) = upload_ok(&base, t, &small).await;
    let avatar_uri = format!("mxc://{server}/{avatar}");
    alice
        .put(
            &format!(
                "/_matrix/client/v3/profile/{}/avatar_url",
                enc(&alice.user_id)
            ),
            json!({"avatar_url": avatar_uri}),
        )
        .await
        .ok();

    // One item: its record goes, the shared blob stays for the other.
    let r = admin_call(
        &base,
        &root,
        Method::DELETE,
        &format!("{A1}/media/{server}/{a}"),
    )
    .await;
    assert_eq!(r.ok().json(), json!({"deleted_media": [a], "total": 1}));
    download(&base, Some(t), &server, &a)
        .await
        .assert_error(404, "M_NOT_FOUND");
    assert_eq!(
        download(&base, Some(t), &server, &b).await.ok().bytes,
        shared
    );
    assert!(blob_exists(&ms, &shared).await);
    // Again: nothing left to delete, and that is fine.
    let r = admin_call(
        &base,
        &root,
        Method::DELETE,
        &format!("{A1}/media/{server}/{a}"),
    )
    .await;
    assert_eq!(r.ok().json(), json!({"deleted_media": [], "total": 0}));
    // The last user of the blob takes it along.
    let r = admin_call(
        &base,
        &root,
        Method::DELETE,
        &format!("{A1}/media/{server}/{b}"),
    )
    .await;
    assert_eq!(r.ok().json()["total"], 1);
    assert!(!blob_exists(&ms, &shared).await);

    // Bad input.
    for (method, path, status, code) in [
        (
            Method::DELETE,
            format!("{A1}/media/elsewhere.example/{big_id}"),
            400,
            "M_INVALID_PARAM",
        ),
        (
            Method::DELETE,
            format!("{A1}/media/bad%20name/{big_id}"),
            400,
            "M_INVALID_PARAM",
        ),
        (
            Method::POST,
            format!("{A1}/media/delete"),
            400,
            "M_MISSING_PARAM",
        ),
        (
            Method::POST,
            format!("{A1}/media/delete?before_ts=1700000000"),
            400,
            "M_INVALID_PARAM",
        ),
        (
            Method::POST,
            format!("{A1}/media/delete?before_ts=x"),
            400,
            "M_INVALID_PARAM",
        ),
        (
            Method::POST,
            format!("{A1}/media/delete?before_ts={started}&size_gt=-1"),
            400,
            "M_INVALID_PARAM",
        ),
        (
            Method::POST,
            format!("{A1}/media/delete?before_ts={started}&keep_profiles=maybe"),
            400,
            "M_INVALID_PARAM",
        ),
        (
            Method::POST,
            format!("{A1}/media/elsewhere.example/delete?before_ts={started}"),
            400,
            "M_INVALID_PARAM",
        ),
        (
            Method::POST,
            format!("{A1}/purge_media_cache"),
            400,
            "M_MISSING_PARAM",
        ),
    ] {
        admin_call(&base, &root, method, &path)
            .await
            .assert_error(status, code);
    }
    // Non-admins are refused.
    admin_call(
        &base,
        t,
        Method::DELETE,
        &format!("{A1}/media/{server}/{big_id}"),
    )
    .await
    .assert_error(403, "M_FORBIDDEN");

    // By age: nothing was uploaded before the test started.
    let r = admin_call(
        &base,
        &root,
        Method::POST,
        &format!("{A1}/media/delete?before_ts={started}"),
    )
    .await;
    assert_eq!(r.ok().json()["total"], 0);
    // By size: only the big one.
    let later = engine::util::now_ms() + 60_000;
    let r = admin_call(
        &base,
        &root,
        Method::POST,
        &format!("{A1}/media/delete?before_ts={later}&size_gt=4000"),
    )
    .await;
    assert_eq!(
        r.ok().json(),
        json!({"deleted_media": [big_id], "total": 1})
    );
    assert!(!blob_exists(&ms, &big).await);
    // Everything older, on the server-named path: the avatar stays...
    let r = admin_call(
        &base,
        &root,
        Method::POST,
        &format!("{A1}/media/{server}/delete?before_ts={later}"),
    )
    .await;
    assert_eq!(
        r.ok().json(),
        json!({"deleted_media": [small_id], "total": 1})
    );
    let kept = download(&base, Some(t), &server, &avatar).await.ok().bytes;
    assert!(blob_exists(&ms, &kept).await);
    // ...unless profiles are not kept; its thumbnails go with it.
    let thumbs = ms
        .server
        .services()
        .media
        .thumbnails(&server, &avatar)
        .await
        .unwrap();
    assert!(!thumbs.is_empty());
    let r = admin_call(
        &base,
        &root,
        Method::POST,
        &format!("{A1}/media/delete?before_ts={later}&keep_profiles=false"),
    )
    .await;
    let answer: Value = r.ok().json();
    assert_eq!(answer, json!({"deleted_media": [avatar], "total": 1}));
    download(&base, Some(t), &server, &avatar)
        .await
        .assert_error(404, "M_NOT_FOUND");
    assert!(!blob_exists(&ms, &kept).await);
    let services = ms.server.services();
    for th in thumbs {
        assert!(services
            .media
            .blobs()
            .get(&th.sha256)
            .await
            .unwrap()
            .is_none());
    }
    assert!(services
        .media
        .thumbnails(&server, &avatar)
        .await
        .unwrap()
        .is_empty());
    // Nothing of hers is listed any more.
    let list = send(
        &base,
        Some(&root),
        Method::GET,
        &format!("{A1}/users/{}/media", enc(&alice.user_id)),
        None,
        None,
    )
    .await
    .ok()
    .json();
    assert_eq!(list["total"], 0, "{list}");
    ms.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_deletes_media_on_filesystem_store() {
    deletion_scenario(Store::Fs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_deletes_media_on_s3_store() {
    if s3_url().is_some() {
        deletion_scenario(Store::S3).await;
    }
}
