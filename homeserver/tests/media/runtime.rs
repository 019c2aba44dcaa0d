//! Image decoding runs off the async runtime's workers. The test runtime has a
//! single worker thread, shared by the server and this client: were a large
//! image decoded on it, every other request would wait for the decode. So
//! while an upload or an on-demand thumbnail of a 12-megapixel JPEG is being
//! processed, the server keeps answering other requests.

use std::{
    cell::Cell,
    future::Future,
    time::{Duration, Instant},
};

use crate::support::*;

/// Runs `work` while pinging the server back to back; returns how long `work`
/// took and the longest time in that span during which no ping was answered.
async fn longest_stall<T>(base: &str, work: impl Future<Output = T>) -> (Duration, Duration, T) {
    let http = reqwest::Client::new();
    let start = Instant::now();
    let last = Cell::new(start);
    let stall = Cell::new(Duration::ZERO);
    let pinger = async {
        loop {
            let r = http
                .get(format!("{base}/_matrix/client/versions"))
                .send()
                .await;
            assert!(r.is_ok_and(|r| r.status().is_success()), "ping failed");
            let now = Instant::now();
            stall.set(stall.get().max(now - last.get()));
            last.set(now);
        }
    };
    let out = tokio::select! {
        out = work => out,
        () = pinger => unreachable!("the pinger never ends"),
    };
    let end = Instant::now();
    let stall = stall.get().max(end - last.get());
    (end - start, stall, out)
}

#[tokio::test(flavor = "current_thread")]
async fn image_decoding_leaves_the_runtime_responsive() {
    // Noise compresses badly, so the decoder has real work: a few hundred
    // milliseconds per decode even with optimised image crates.
    let photo = jpeg(&noise(4000, 3000));
    let ms = start(Store::Fs, |c| {
        c.media.max_upload_bytes = 64 * 1024 * 1024;
        c.media.thumbnail_sizes.clear();
    })
    .await;
    let base = ms.server.base_url.clone();
    let t = ms.server.register_no_password("alice").await.access_token;

    // Each upload decodes the image to check and clean it. One attempt can
    // show a long stretch because a busy machine descheduled the test; with
    // decoding on the worker, every attempt stalls for nearly all its time.
    let mut upload_responsive = false;
    let mut uploaded = None;
    for attempt in 0..2 {
        let (took, stall, ids) = longest_stall(&base, upload_ok(&base, &t, &photo)).await;
        eprintln!("upload {attempt}: {took:?}, longest unanswered stretch {stall:?}");
        upload_responsive |= stall < took / 2;
        uploaded = Some(ids);
    }
    assert!(
        upload_responsive,
        "the server stopped answering while it processed uploads"
    );
    let (server, id) = uploaded.expect("uploaded");

    // Each on-demand size decodes the original again.
    let mut responsive = false;
    for size in [100, 120, 140] {
        let query = format!("width={size}&height={size}&method=scale");
        let (took, stall, th) =
            longest_stall(&base, thumbnail(&base, &t, &server, &id, &query)).await;
        let th = th.ok();
        assert_eq!(decode(&th.bytes).width(), size);
        eprintln!("thumbnail {size}: {took:?}, longest unanswered stretch {stall:?}");
        assert!(
            took >= Duration::from_millis(50),
            "the test image decodes too fast to tell: {took:?}"
        );
        responsive |= stall < took / 2;
    }
    assert!(
        responsive,
        "the server stopped answering while it made thumbnails"
    );
    ms.server.shutdown().await;
}
