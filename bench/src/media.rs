//! `hs-bench media`: the media repository's three figures.
//!
//! 1. Thumbnails per second for a 12-megapixel JPEG (4000x3000), in process,
//!    calling the same pipeline the server runs: one on-demand thumbnail
//!    (decode, orient, resize, encode) and the full upload processing
//!    (decode once, all five configured sizes).
//! 2. Upload MB/s over HTTP to a running server (`--base-url`).
//! 3. The server's peak RSS while it streams one `--big-mb` upload, sampled
//!    from `/proc/<pid>/status` (`--server-pid`; same machine). The server
//!    must accept uploads that large (`HS_MEDIA__MAX_UPLOAD_BYTES`).

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{ensure, Context, Result};
use engine::config::{Media, ThumbnailMethod};
use media_repo::{image as pipeline, sniff::ImageKind};

use crate::setup::{register_user, run_id, ServerArgs};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub server: ServerArgs,
    /// The server's process id, for its RSS. Without it the HTTP part reports
    /// throughput only.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Seconds spent on each in-process thumbnail measurement.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Size of each upload in the MB/s measurement.
    #[arg(long, default_value_t = 20)]
    pub upload_mb: u64,
    /// How many uploads the MB/s measurement makes.
    #[arg(long, default_value_t = 5)]
    pub uploads: usize,
    /// Size of the upload whose peak RSS is measured.
    #[arg(long, default_value_t = 200)]
    pub big_mb: u64,
    /// Skip the HTTP part (thumbnails only).
    #[arg(long)]
    pub no_http: bool,
}

/// A 4000x3000 photo-like JPEG: smooth gradients plus noise.
fn twelve_megapixel_jpeg() -> Result<Vec<u8>> {
    use image::{codecs::jpeg::JpegEncoder, ImageEncoder, Rgb, RgbImage};
    let img = RgbImage::from_fn(4000, 3000, |x, y| {
        let n = (x.wrapping_mul(2_654_435_761) ^ y.wrapping_mul(40_503)) >> 28;
        Rgb([
            (x / 16) as u8 ^ n as u8,
            (y / 12) as u8,
            ((x + y) / 28) as u8,
        ])
    });
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut out, 85).write_image(
        &img,
        4000,
        3000,
        image::ExtendedColorType::Rgb8,
    )?;
    Ok(out)
}

/// Runs `f` repeatedly for `secs` seconds; returns runs per second.
fn rate(secs: u64, mut f: impl FnMut() -> Result<()>) -> Result<(f64, usize)> {
    let start = Instant::now();
    let mut n = 0;
    while n == 0 || start.elapsed() < Duration::from_secs(secs) {
        f()?;
        n += 1;
    }
    Ok((n as f64 / start.elapsed().as_secs_f64(), n))
}

fn thumbnails(args: &Args) -> Result<()> {
    let jpeg = twelve_megapixel_jpeg()?;
    let cfg = Media::default();
    println!("source: 4000x3000 JPEG, {:.1} MB", jpeg.len() as f64 / 1e6);
    let (per_sec, n) = rate(args.seconds, || {
        let t = pipeline::thumbnail(
            &jpeg,
            ImageKind::Jpeg,
            (320, 240),
            ThumbnailMethod::Scale,
            false,
            &cfg,
        )
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        ensure!(
            t.width == 320 && t.height == 240,
            "unexpected thumbnail size"
        );
        Ok(())
    })?;
    println!("on-demand thumbnail 320x240 scale: {per_sec:.2} thumbnails/s ({n} runs, one core)");
    let (per_sec, n) = rate(args.seconds, || {
        let p = pipeline::process(&jpeg, ImageKind::Jpeg, &cfg)
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        ensure!(p.thumbnails.len() == 5, "expected five thumbnails");
        Ok(())
    })?;
    println!(
        "upload processing (decode once + 5 sizes): {per_sec:.2} images/s = {:.2} thumbnails/s ({n} runs, one core)",
        per_sec * 5.0
    );
    Ok(())
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .context("no VmRSS line")
}

/// A body of `mb` megabytes streamed in 64 KiB chunks of incompressible bytes,
/// never held in memory at once.
fn streamed_body(mb: u64) -> reqwest::Body {
    let chunk: Vec<u8> = (0..65_536u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let chunk = bytes::Bytes::from(chunk);
    let total = mb * 1_000_000;
    let chunks = total.div_ceil(chunk.len() as u64);
    let stream = futures::stream::iter((0..chunks).map(move |i| {
        let left = total - i * chunk.len() as u64;
        Ok::<_, std::io::Error>(chunk.slice(..(left.min(chunk.len() as u64) as usize)))
    }));
    reqwest::Body::wrap_stream(stream)
}

async fn upload(http: &reqwest::Client, base: &str, token: &str, mb: u64) -> Result<()> {
    let resp = http
        .post(format!("{base}/_matrix/media/v3/upload"))
        .bearer_auth(token)
        .header(reqwest::header::CONTENT_LENGTH, mb * 1_000_000)
        .body(streamed_body(mb))
        .timeout(Duration::from_secs(600))
        .send()
        .await?;
    let status = resp.status();
    ensure!(
        status.is_success(),
        "upload failed: {status} {}",
        resp.text().await?
    );
    Ok(())
}

async fn http_figures(args: &Args) -> Result<()> {
    let http = reqwest::Client::new();
    let base = args.server.base_url.trim_end_matches('/').to_owned();
    let user = register_user(&http, &args.server, &format!("bench_{}_media", run_id())).await?;
    let token = user.token().to_owned();
    upload(&http, &base, &token, 1).await?;
    let start = Instant::now();
    for _ in 0..args.uploads {
        upload(&http, &base, &token, args.upload_mb).await?;
    }
    let secs = start.elapsed().as_secs_f64();
    let mb = (args.upload_mb * args.uploads as u64) as f64;
    println!(
        "upload: {:.1} MB/s ({} x {} MB, sequential, loopback)",
        mb / secs,
        args.uploads,
        args.upload_mb
    );

    let Some(pid) = args.server_pid else {
        println!("peak RSS: skipped (no --server-pid)");
        return Ok(());
    };
    let before = rss_kib(pid)?;
    let peak = Arc::new(AtomicU64::new(before));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                if let Ok(kib) = rss_kib(pid) {
                    peak.fetch_max(kib, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let start = Instant::now();
    let result = upload(&http, &base, &token, args.big_mb).await;
    done.store(true, Ordering::Relaxed);
    let _ = sampler.await;
    result?;
    let secs = start.elapsed().as_secs_f64();
    let peak = peak.load(Ordering::Relaxed);
    println!(
        "{} MB streamed upload: {:.1} MB/s; server RSS before {:.1} MB, peak {:.1} MB (+{:.1} MB)",
        args.big_mb,
        args.big_mb as f64 / secs,
        before as f64 / 1024.0,
        peak as f64 / 1024.0,
        (peak - before.min(peak)) as f64 / 1024.0
    );
    Ok(())
}

pub async fn run(args: Args) -> Result<()> {
    let thumbs = tokio::task::block_in_place(|| thumbnails(&args));
    thumbs?;
    if !args.no_http {
        http_figures(&args).await?;
    }
    Ok(())
}
