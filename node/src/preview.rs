//! Inline previews of attachments: a JPEG thumbnail of at most [`PREVIEW_BYTES`] and the
//! picture's size, made from a JPEG, PNG, WebP or GIF (its first frame) by the `image` crate.
//! The format is recognised from the file's first bytes, not its name or claimed type.
//! Decoding is bounded ([`MAX_EDGE`] pixels a side, [`MAX_DECODE_BYTES`] of memory), so a
//! crafted file costs at most that; a file that does not decode simply has no preview.

use std::io::{BufRead, Cursor, Seek};
use std::path::Path;

use image::codecs::jpeg::JpegEncoder;
use image::{DynamicImage, ImageFormat, ImageReader, Limits};
use kith_protocol::blob::Preview;

/// Largest preview made (the protocol accepts up to `kith_protocol::blob::MAX_PREVIEW`).
pub const PREVIEW_BYTES: usize = 8 * 1024;
/// Longest side of a preview, in pixels (smaller when that does not fit [`PREVIEW_BYTES`]).
pub const PREVIEW_EDGE: u32 = 160;
/// Longest side of a picture decoded for a preview.
pub const MAX_EDGE: u32 = 16_384;
/// Most memory decoding one picture may take.
pub const MAX_DECODE_BYTES: u64 = 256 << 20;

/// What a picture gives an attachment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pictured {
    /// The thumbnail, if one fits.
    pub preview: Option<Preview>,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

/// The preview and size of the picture in the file at `path`; `None` if it is not a JPEG,
/// PNG, WebP or GIF that decodes within the limits.
pub fn of_file(path: &Path) -> Option<Pictured> {
    let reader = ImageReader::open(path).ok()?;
    of_reader(reader)
}

/// [`of_file`] for a picture in memory (a video's poster frame a client supplies).
pub fn of_bytes(bytes: &[u8]) -> Option<Pictured> {
    of_reader(ImageReader::new(Cursor::new(bytes)))
}

fn of_reader<R: BufRead + Seek>(reader: ImageReader<R>) -> Option<Pictured> {
    let mut reader = reader.with_guessed_format().ok()?;
    if !matches!(
        reader.format(),
        Some(ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::WebP | ImageFormat::Gif)
    ) {
        return None;
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_EDGE);
    limits.max_image_height = Some(MAX_EDGE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    let image = reader.decode().ok()?;
    Some(Pictured { preview: thumbnail(&image), width: image.width(), height: image.height() })
}

/// A JPEG thumbnail of at most [`PREVIEW_BYTES`]: lower quality first, then smaller.
fn thumbnail(image: &DynamicImage) -> Option<Preview> {
    let (mut edge, mut quality) = (PREVIEW_EDGE, 70u8);
    loop {
        let small = image.thumbnail(edge, edge).to_rgb8();
        let mut out = Vec::new();
        JpegEncoder::new_with_quality(&mut out, quality).encode_image(&small).ok()?;
        if out.len() <= PREVIEW_BYTES {
            return Some(Preview { mime: "image/jpeg".into(), bytes: out });
        }
        if quality > 40 {
            quality -= 15;
        } else if edge > 48 {
            edge = edge * 3 / 4;
        } else {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn picture(format: ImageFormat, w: u32, h: u32) -> Vec<u8> {
        // Noise: the hardest case for the size bound.
        let img = image::RgbImage::from_fn(w, h, |x, y| {
            let v = (x.wrapping_mul(2_654_435_761) ^ y.wrapping_mul(40_503)) as u8;
            image::Rgb([v, v.wrapping_mul(3), v.wrapping_add(y as u8)])
        });
        let mut out = Cursor::new(Vec::new());
        DynamicImage::ImageRgb8(img).write_to(&mut out, format).expect("encode");
        out.into_inner()
    }

    #[test]
    fn every_supported_format_gets_a_small_jpeg_preview_and_its_size() {
        for format in [ImageFormat::Jpeg, ImageFormat::Png, ImageFormat::WebP, ImageFormat::Gif] {
            let p = of_bytes(&picture(format, 640, 480)).unwrap_or_else(|| panic!("{format:?}"));
            assert_eq!((p.width, p.height), (640, 480), "{format:?}");
            let preview = p.preview.expect("a preview");
            assert_eq!(preview.mime, "image/jpeg");
            assert!(preview.bytes.len() <= PREVIEW_BYTES, "{format:?}: {}", preview.bytes.len());
            let thumb = image::load_from_memory(&preview.bytes).expect("decodes");
            assert!(thumb.width().max(thumb.height()) <= PREVIEW_EDGE);
        }
    }

    #[test]
    fn what_is_not_a_picture_has_no_preview() {
        assert_eq!(of_bytes(b"not a picture at all"), None);
        let mut truncated = picture(ImageFormat::Png, 64, 64);
        truncated.truncate(100);
        assert_eq!(of_bytes(&truncated), None);
        // A header claiming a picture far over the limits is refused before decoding.
        let mut huge = picture(ImageFormat::Png, 8, 8);
        huge[16..20].copy_from_slice(&100_000u32.to_be_bytes());
        assert_eq!(of_bytes(&huge), None);
    }
}
