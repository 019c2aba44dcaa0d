//! Lossless metadata stripping: EXIF (GPS position, camera serial numbers),
//! XMP, IPTC and text comments are cut out of the container without touching
//! the compressed pixels, so a stripped image is byte-for-byte the original
//! minus those blocks. Colour information (ICC profiles, Adobe colour
//! transform, gamma) is kept because removing it changes how the image looks.
//!
//! Each function returns `None` when the container does not parse; the caller
//! then re-encodes from the decoded pixels instead.

use crate::sniff::ImageKind;

pub fn strip(kind: ImageKind, data: &[u8]) -> Option<Vec<u8>> {
    match kind {
        ImageKind::Jpeg => strip_jpeg(data),
        ImageKind::Png => strip_png(data),
        ImageKind::Gif => strip_gif(data).map(|(out, _)| out),
        ImageKind::Webp => strip_webp(data),
    }
}

/// JPEG: drops APP1 (EXIF, XMP), APP3-APP13 and APP15 (IPTC, vendor data) and
/// COM segments; keeps APP0 (JFIF), APP2 (ICC) and APP14 (Adobe).
fn strip_jpeg(data: &[u8]) -> Option<Vec<u8>> {
    if !data.starts_with(&[0xFF, 0xD8]) {
        return None;
    }
    let mut out = Vec::with_capacity(data.len());
    out.extend_from_slice(&data[..2]);
    let mut i = 2;
    loop {
        // Fill bytes (0xFF padding) may precede a marker.
        while data.get(i) == Some(&0xFF) && data.get(i + 1) == Some(&0xFF) {
            i += 1;
        }
        if *data.get(i)? != 0xFF {
            return None;
        }
        let marker = *data.get(i + 1)?;
        match marker {
            // Start of scan: the entropy-coded data and everything after it is kept.
            0xDA => {
                out.extend_from_slice(&data[i..]);
                return Some(out);
            }
            0xD9 => {
                out.extend_from_slice(&data[i..i + 2]);
                return Some(out);
            }
            0x01 | 0xD0..=0xD7 => {
                out.extend_from_slice(&data[i..i + 2]);
                i += 2;
                continue;
            }
            _ => {}
        }
        let len = u16::from_be_bytes([*data.get(i + 2)?, *data.get(i + 3)?]) as usize;
        let end = i + 2 + len;
        if len < 2 || end > data.len() {
            return None;
        }
        let metadata = matches!(marker, 0xE1 | 0xE3..=0xED | 0xEF | 0xFE);
        if !metadata {
            out.extend_from_slice(&data[i..end]);
        }
        i = end;
    }
}

/// PNG: drops the text chunks (`tEXt`, `zTXt`, `iTXt`), `eXIf` and `tIME`.
fn strip_png(data: &[u8]) -> Option<Vec<u8>> {
    const SIG: &[u8] = b"\x89PNG\r\n\x1a\n";
    if !data.starts_with(SIG) {
        return None;
    }
    let mut out = Vec::with_capacity(data.len());
    out.extend_from_slice(SIG);
    let mut i = SIG.len();
    while i < data.len() {
        let len = u32::from_be_bytes(data.get(i..i + 4)?.try_into().ok()?) as usize;
        let kind = data.get(i + 4..i + 8)?;
        let end = i.checked_add(12)?.checked_add(len)?;
        if end > data.len() {
            return None;
        }
        if !matches!(kind, b"tEXt" | b"zTXt" | b"iTXt" | b"eXIf" | b"tIME") {
            out.extend_from_slice(&data[i..end]);
        }
        i = end;
        if kind == b"IEND" {
            break;
        }
    }
    Some(out)
}

/// WebP: drops the `EXIF` and `XMP ` chunks and clears their flags in `VP8X`.
fn strip_webp(data: &[u8]) -> Option<Vec<u8>> {
    if data.len() < 12 || &data[0..4] != b"RIFF" || &data[8..12] != b"WEBP" {
        return None;
    }
    let mut out = Vec::with_capacity(data.len());
    out.extend_from_slice(&data[..12]);
    let mut i = 12;
    while i + 8 <= data.len() {
        let fourcc = &data[i..i + 4];
        let len = u32::from_le_bytes(data[i + 4..i + 8].try_into().ok()?) as usize;
        let end = i
            .checked_add(8)?
            .checked_add(len + (len & 1))?
            .min(data.len());
        if i + 8 + len > data.len() {
            return None;
        }
        match fourcc {
            b"EXIF" | b"XMP " => {}
            b"VP8X" => {
                let start = out.len();
                out.extend_from_slice(&data[i..end]);
                // Flags byte: bit 3 EXIF, bit 2 XMP.
                if let Some(flags) = out.get_mut(start + 8) {
                    *flags &= !0b0000_1100;
                }
            }
            _ => out.extend_from_slice(&data[i..end]),
        }
        i = end;
    }
    let riff_len = u32::try_from(out.len() - 8).ok()?;
    out[4..8].copy_from_slice(&riff_len.to_le_bytes());
    Some(out)
}

/// GIF: drops comment extensions and application extensions other than the
/// looping ones (`NETSCAPE2.0`, `ANIMEXTS1.0`), where XMP lives. Also returns
/// the number of frames, which tells an animation from a still.
pub fn strip_gif(data: &[u8]) -> Option<(Vec<u8>, usize)> {
    if data.len() < 13 || !(data.starts_with(b"GIF87a") || data.starts_with(b"GIF89a")) {
        return None;
    }
    let flags = data[10];
    let mut i = 13;
    if flags & 0x80 != 0 {
        i += 3 << ((flags & 0x07) + 1);
    }
    let mut out = Vec::with_capacity(data.len());
    out.extend_from_slice(data.get(..i)?);
    let mut frames = 0;
    // Length of a run of sub-blocks starting at `j`, terminator included.
    let sub_blocks = |mut j: usize| -> Option<usize> {
        let start = j;
        loop {
            let n = *data.get(j)? as usize;
            j += 1 + n;
            if n == 0 {
                return Some(j - start);
            }
        }
    };
    loop {
        match *data.get(i)? {
            0x3B => {
                out.push(0x3B);
                return Some((out, frames));
            }
            0x21 => {
                let label = *data.get(i + 1)?;
                let end = i + 2 + sub_blocks(i + 2)?;
                let app_id = data.get(i + 3..i + 14);
                let keep = match label {
                    0xFE => false,
                    0xFF => matches!(app_id, Some(b"NETSCAPE2.0") | Some(b"ANIMEXTS1.0")),
                    _ => true,
                };
                if keep {
                    out.extend_from_slice(data.get(i..end)?);
                }
                i = end;
            }
            0x2C => {
                frames += 1;
                let local = *data.get(i + 9)?;
                let mut j = i + 10;
                if local & 0x80 != 0 {
                    j += 3 << ((local & 0x07) + 1);
                }
                // LZW minimum code size, then the image data sub-blocks.
                j += 1;
                let end = j + sub_blocks(j)?;
                out.extend_from_slice(data.get(i..end)?);
                i = end;
            }
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jpeg_app1_and_comments_removed() {
        let mut jpeg = vec![0xFF, 0xD8];
        jpeg.extend_from_slice(&[0xFF, 0xE0, 0, 4, 1, 2]); // APP0 kept
        jpeg.extend_from_slice(&[0xFF, 0xE1, 0, 6, b'E', b'x', b'i', b'f']); // APP1 dropped
        jpeg.extend_from_slice(&[0xFF, 0xFE, 0, 3, b'c']); // COM dropped
        jpeg.extend_from_slice(&[0xFF, 0xDA, 0, 2, 9, 9, 0xFF, 0xD9]);
        let out = strip_jpeg(&jpeg).unwrap();
        assert_eq!(
            out,
            [0xFF, 0xD8, 0xFF, 0xE0, 0, 4, 1, 2, 0xFF, 0xDA, 0, 2, 9, 9, 0xFF, 0xD9]
        );
        assert!(strip_jpeg(&jpeg[..9]).is_none());
    }

    #[test]
    fn truncated_containers_do_not_parse() {
        assert!(strip_png(b"\x89PNG\r\n\x1a\n\0\0\0\x10IHDR").is_none());
        assert!(strip_webp(b"RIFF\0\0\0\0WEBPVP8 \xff\0\0\0").is_none());
        assert!(strip_gif(b"GIF89a\x01\0\x01\0\0\0\0\x2c").is_none());
    }
}
