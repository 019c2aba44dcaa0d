//! Thumbnail geometry and resizing with `fast_image_resize` (SIMD convolution,
//! several times faster than `image`'s own resize on the same filter).

use engine::config::ThumbnailMethod;
use fast_image_resize::{images::Image, FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::{DynamicImage, RgbImage, RgbaImage};

use super::ImageError;

/// Where a resize reads from and what it makes: the source rectangle
/// (left, top, width, height) and the output size.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Plan {
    pub crop: (f64, f64, f64, f64),
    pub out: (u32, u32),
}

/// `scale` fits the whole image inside `want`, keeping its aspect ratio;
/// `crop` fills exactly `want` and cuts the overflow evenly from both sides.
/// Neither enlarges: a source smaller than asked keeps its size (scale) or
/// gives the largest box of the asked shape that it can fill (crop).
pub fn plan(src: (u32, u32), want: (u32, u32), method: ThumbnailMethod) -> Plan {
    let (sw, sh) = (f64::from(src.0.max(1)), f64::from(src.1.max(1)));
    let (ww, wh) = (f64::from(want.0.max(1)), f64::from(want.1.max(1)));
    let dim = |v: f64| (v.round() as u32).max(1);
    match method {
        ThumbnailMethod::Scale => {
            let f = (ww / sw).min(wh / sh).min(1.0);
            Plan {
                crop: (0.0, 0.0, sw, sh),
                out: (dim(sw * f), dim(sh * f)),
            }
        }
        ThumbnailMethod::Crop => {
            let f = (sw / ww).min(sh / wh).min(1.0);
            let out = (dim(ww * f), dim(wh * f));
            let aspect = ww / wh;
            let (cw, ch) = if sw / sh > aspect {
                (sh * aspect, sh)
            } else {
                (sw, sw / aspect)
            };
            Plan {
                crop: ((sw - cw) / 2.0, (sh - ch) / 2.0, cw, ch),
                out,
            }
        }
    }
}

fn resize_raw(
    buf: Vec<u8>,
    size: (u32, u32),
    pixel: PixelType,
    plan: &Plan,
) -> Result<Vec<u8>, ImageError> {
    let src = Image::from_vec_u8(size.0, size.1, buf, pixel)
        .map_err(|e| ImageError::Corrupt(e.to_string()))?;
    let mut dst = Image::new(plan.out.0, plan.out.1, pixel);
    let (l, t, w, h) = plan.crop;
    let options = ResizeOptions::new()
        .resize_alg(ResizeAlg::Convolution(FilterType::Lanczos3))
        .crop(l, t, w, h);
    Resizer::new()
        .resize(&src, &mut dst, &options)
        .map_err(|e| ImageError::Corrupt(e.to_string()))?;
    Ok(dst.into_vec())
}

/// Resizes per `plan`, as RGBA when the image has alpha and RGB otherwise.
pub fn resize(img: &DynamicImage, plan: &Plan) -> Result<DynamicImage, ImageError> {
    let size = (img.width(), img.height());
    let (w, h) = plan.out;
    if img.color().has_alpha() {
        let out = resize_raw(img.to_rgba8().into_raw(), size, PixelType::U8x4, plan)?;
        RgbaImage::from_raw(w, h, out)
            .map(DynamicImage::ImageRgba8)
            .ok_or(ImageError::Corrupt("resize buffer".into()))
    } else {
        let out = resize_raw(img.to_rgb8().into_raw(), size, PixelType::U8x3, plan)?;
        RgbImage::from_raw(w, h, out)
            .map(DynamicImage::ImageRgb8)
            .ok_or(ImageError::Corrupt("resize buffer".into()))
    }
}

/// Resizes one RGBA animation frame.
pub fn resize_rgba(img: RgbaImage, plan: &Plan) -> Result<RgbaImage, ImageError> {
    let size = img.dimensions();
    let out = resize_raw(img.into_raw(), size, PixelType::U8x4, plan)?;
    RgbaImage::from_raw(plan.out.0, plan.out.1, out)
        .ok_or(ImageError::Corrupt("resize buffer".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_fits_inside_and_never_enlarges() {
        let p = plan((4000, 3000), (320, 240), ThumbnailMethod::Scale);
        assert_eq!(p.out, (320, 240));
        let p = plan((3000, 4000), (320, 240), ThumbnailMethod::Scale);
        assert_eq!(p.out, (180, 240));
        let p = plan((100, 50), (800, 600), ThumbnailMethod::Scale);
        assert_eq!(p.out, (100, 50));
    }

    #[test]
    fn crop_fills_the_box_from_the_centre() {
        let p = plan((400, 200), (96, 96), ThumbnailMethod::Crop);
        assert_eq!(p.out, (96, 96));
        assert_eq!(p.crop, (100.0, 0.0, 200.0, 200.0));
        let p = plan((50, 40), (96, 96), ThumbnailMethod::Crop);
        assert_eq!(p.out, (40, 40));
    }
}
