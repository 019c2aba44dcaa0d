//! The image pipeline: header checks, decoding with the EXIF orientation
//! applied, metadata stripping, re-encoding and thumbnails.
//!
//! Everything here is synchronous and CPU-bound; callers run it on tokio's
//! blocking pool so decoding never stalls the request workers.

pub mod resize;
mod strip;

use std::io::Cursor;

use engine::config::{Media, ThumbnailMethod, ThumbnailSize};
use image::{
    codecs::{
        gif::{GifDecoder, GifEncoder, Repeat},
        jpeg::JpegEncoder,
        png::PngEncoder,
        webp::WebPDecoder,
    },
    metadata::Orientation,
    AnimationDecoder, DynamicImage, Frame, ImageDecoder, ImageReader,
};

use crate::sniff::ImageKind;

/// Frames beyond this are dropped from animated thumbnails.
const MAX_ANIMATION_FRAMES: usize = 300;

#[derive(Debug)]
pub enum ImageError {
    /// The header announces more pixels than `max_image_pixels`.
    TooManyPixels { pixels: u64, limit: u64 },
    /// Truncated, corrupt or unsupported data.
    Corrupt(String),
}

impl From<image::ImageError> for ImageError {
    fn from(e: image::ImageError) -> Self {
        Self::Corrupt(e.to_string())
    }
}

impl From<ImageError> for engine::Error {
    fn from(e: ImageError) -> Self {
        match e {
            ImageError::TooManyPixels { pixels, limit } => engine::Error::too_large(format!(
                "The image has {pixels} pixels; the limit is {limit}."
            )),
            ImageError::Corrupt(why) => {
                tracing::debug!(%why, "undecodable image");
                engine::Error::new(400, "M_UNKNOWN", "The image could not be decoded.")
            }
        }
    }
}

/// An encoded image: a served original or a thumbnail.
#[derive(Clone, Debug)]
pub struct Encoded {
    pub bytes: Vec<u8>,
    pub content_type: &'static str,
    pub width: u32,
    pub height: u32,
}

/// What an upload becomes.
pub struct Processed {
    /// Replacement bytes for the original (metadata stripped, orientation
    /// applied, or re-encoded); `None` serves the upload as it came.
    pub replaced: Option<Encoded>,
    pub width: u32,
    pub height: u32,
    pub animated: bool,
    /// The configured sizes, made now so the first view is instant.
    pub thumbnails: Vec<(ThumbnailSize, Encoded)>,
}

/// Reads only the header and refuses images over the pixel limit, before any
/// pixel buffer is allocated (the decompression-bomb guard).
fn check_pixels(data: &[u8], kind: ImageKind, limit: u64) -> Result<(u32, u32), ImageError> {
    let (w, h) = ImageReader::with_format(Cursor::new(data), kind.format()).into_dimensions()?;
    let pixels = u64::from(w) * u64::from(h);
    if pixels > limit {
        return Err(ImageError::TooManyPixels { pixels, limit });
    }
    Ok((w, h))
}

fn limits(max_pixels: u64) -> image::Limits {
    let mut limits = image::Limits::default();
    // RGBA at 16 bits per channel plus the decoder's own buffers.
    limits.max_alloc = Some(max_pixels.saturating_mul(8).saturating_add(64 << 20));
    limits
}

/// Decodes the (first frame of the) image, upright: the EXIF orientation
/// is applied to the pixels.
fn decode(
    data: &[u8],
    kind: ImageKind,
    cfg: &Media,
) -> Result<(DynamicImage, Orientation), ImageError> {
    check_pixels(data, kind, cfg.max_image_pixels)?;
    let mut reader = ImageReader::with_format(Cursor::new(data), kind.format());
    reader.limits(limits(cfg.max_image_pixels));
    let mut decoder = reader.into_decoder()?;
    // A malformed EXIF block must not make the whole image unusable.
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder)?;
    img.apply_orientation(orientation);
    Ok((img, orientation))
}

fn is_animated(data: &[u8], kind: ImageKind) -> bool {
    match kind {
        ImageKind::Gif => strip::strip_gif(data).is_some_and(|(_, frames)| frames > 1),
        ImageKind::Webp => WebPDecoder::new(Cursor::new(data)).is_ok_and(|d| d.has_animation()),
        _ => false,
    }
}

/// JPEG for opaque images, PNG when there is an alpha channel to keep.
fn encode_still(img: &DynamicImage, quality: u8) -> Result<Encoded, ImageError> {
    let mut bytes = Vec::new();
    let content_type = if img.color().has_alpha() {
        img.write_with_encoder(PngEncoder::new(&mut bytes))?;
        "image/png"
    } else {
        let rgb = DynamicImage::ImageRgb8(img.to_rgb8());
        rgb.write_with_encoder(JpegEncoder::new_with_quality(&mut bytes, quality))?;
        "image/jpeg"
    };
    Ok(Encoded {
        bytes,
        content_type,
        width: img.width(),
        height: img.height(),
    })
}

/// Re-encodes an upright image in the original's format where we can encode
/// it (JPEG), as PNG otherwise.
fn reencode_upright(
    img: &DynamicImage,
    kind: ImageKind,
    quality: u8,
) -> Result<Encoded, ImageError> {
    if kind == ImageKind::Jpeg {
        encode_still(&DynamicImage::ImageRgb8(img.to_rgb8()), quality)
    } else {
        let mut bytes = Vec::new();
        img.write_with_encoder(PngEncoder::new(&mut bytes))?;
        Ok(Encoded {
            bytes,
            content_type: "image/png",
            width: img.width(),
            height: img.height(),
        })
    }
}

/// Checks, cleans and thumbnails a freshly uploaded image.
pub fn process(data: &[u8], kind: ImageKind, cfg: &Media) -> Result<Processed, ImageError> {
    let (img, orientation) = decode(data, kind, cfg)?;
    let animated = is_animated(data, kind);
    let mut replaced = None;
    if cfg.strip_metadata {
        replaced = if orientation != Orientation::NoTransforms && !animated {
            // The orientation lives in the EXIF block being removed: bake it in.
            Some(reencode_upright(&img, kind, cfg.jpeg_quality)?)
        } else {
            match strip::strip(kind, data) {
                Some(bytes) if bytes.len() == data.len() => None,
                Some(bytes) => Some(Encoded {
                    bytes,
                    content_type: kind.content_type(),
                    width: img.width(),
                    height: img.height(),
                }),
                None if animated => None,
                None => Some(reencode_upright(&img, kind, cfg.jpeg_quality)?),
            }
        };
    }
    let current = replaced.as_ref().map_or(data.len(), |r| r.bytes.len()) as u64;
    if cfg.reencode_above_bytes > 0 && current > cfg.reencode_above_bytes && !animated {
        let max = cfg.reencode_max_dimension.max(1);
        let plan = resize::plan(
            (img.width(), img.height()),
            (max, max),
            ThumbnailMethod::Scale,
        );
        let smaller = if plan.out == (img.width(), img.height()) {
            encode_still(&img, cfg.jpeg_quality)?
        } else {
            encode_still(&resize::resize(&img, &plan)?, cfg.jpeg_quality)?
        };
        if (smaller.bytes.len() as u64) < current {
            replaced = Some(smaller);
        }
    }
    let mut thumbnails = Vec::with_capacity(cfg.thumbnail_sizes.len());
    for size in &cfg.thumbnail_sizes {
        let plan = resize::plan(
            (img.width(), img.height()),
            (size.width, size.height),
            size.method,
        );
        let thumb = encode_still(&resize::resize(&img, &plan)?, cfg.jpeg_quality)?;
        thumbnails.push((*size, thumb));
    }
    let (width, height) = replaced
        .as_ref()
        .map_or((img.width(), img.height()), |r| (r.width, r.height));
    Ok(Processed {
        replaced,
        width,
        height,
        animated,
        thumbnails,
    })
}

/// One thumbnail of a stored image; animated (as GIF) when asked and the
/// source is an animation.
pub fn thumbnail(
    data: &[u8],
    kind: ImageKind,
    want: (u32, u32),
    method: ThumbnailMethod,
    animated: bool,
    cfg: &Media,
) -> Result<Encoded, ImageError> {
    if animated && is_animated(data, kind) {
        return animated_thumbnail(data, kind, want, method, cfg);
    }
    let (img, _) = decode(data, kind, cfg)?;
    let plan = resize::plan((img.width(), img.height()), want, method);
    encode_still(&resize::resize(&img, &plan)?, cfg.jpeg_quality)
}

fn animated_thumbnail(
    data: &[u8],
    kind: ImageKind,
    want: (u32, u32),
    method: ThumbnailMethod,
    cfg: &Media,
) -> Result<Encoded, ImageError> {
    let (w, h) = check_pixels(data, kind, cfg.max_image_pixels)?;
    let frames = match kind {
        ImageKind::Gif => GifDecoder::new(Cursor::new(data))?.into_frames(),
        ImageKind::Webp => WebPDecoder::new(Cursor::new(data))?.into_frames(),
        _ => return Err(ImageError::Corrupt("not an animation".into())),
    };
    let plan = resize::plan((w, h), want, method);
    // Every decoded frame is a full canvas: bound the total work like one
    // image of `max_image_pixels`.
    let per_frame = (u64::from(w) * u64::from(h)).max(1);
    let budget = (cfg.max_image_pixels / per_frame).clamp(1, MAX_ANIMATION_FRAMES as u64) as usize;
    let mut out_frames = Vec::new();
    for frame in frames.take(budget) {
        let frame = frame?;
        let delay = frame.delay();
        let resized = resize::resize_rgba(frame.into_buffer(), &plan)?;
        out_frames.push(Frame::from_parts(resized, 0, 0, delay));
    }
    let mut bytes = Vec::new();
    {
        let mut encoder = GifEncoder::new_with_speed(&mut bytes, 10);
        encoder.set_repeat(Repeat::Infinite)?;
        encoder.encode_frames(out_frames)?;
    }
    Ok(Encoded {
        bytes,
        content_type: "image/gif",
        width: plan.out.0,
        height: plan.out.1,
    })
}
