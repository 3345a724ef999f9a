//! Image decoding into 8-bit RGB, matching
//! `np.asarray(PIL.Image.open(path).convert("RGB"))`.
//!
//! The official SAM / SAM 2 pipelines read images with Pillow and call
//! `.convert("RGB")`.  [`load_rgb`] and [`decode_rgb`] reproduce the result of
//! that call for PNG and JPEG input, returning an [`RgbImage`] (row-major
//! `H x W x 3` `u8`, the same memory layout as the NumPy array).
//!
//! # PNG: bit-exact
//!
//! Every PNG colour type and bit depth gives the same bytes as Pillow
//! 13.0.0 (checked against fixtures in `tests/fixtures/io`):
//!
//! | PNG input | Pillow mode | RGB result |
//! |---|---|---|
//! | RGB 8 | `RGB` | unchanged |
//! | RGBA 8, RGB + `tRNS` | `RGBA` | alpha dropped, **no** compositing onto a background |
//! | gray 1/2/4/8 (with or without `tRNS`) | `1` / `L` | gray replicated into R, G, B (sub-byte depths scaled to 0..=255) |
//! | gray + alpha 8 | `LA` | alpha dropped, gray replicated |
//! | palette 1..8 (with or without `tRNS`) | `P` | palette lookup, alpha ignored |
//! | RGB 16, RGBA 16, gray + alpha 16 | `RGB`/`RGBA`/`LA` | **high byte** of each sample (`v >> 8`, truncation, not rounding) |
//! | gray 16 | `I;16` | **clipped**: `min(v, 255)` (Pillow's `I;16 -> RGB` conversion saturates; a 16-bit gray PNG is therefore mostly white, exactly as in Python) |
//!
//! Neither Pillow's `open` nor this module applies gamma (`gAMA`), ICC
//! profiles or EXIF orientation.
//!
//! # JPEG: within a few levels, not bit-exact
//!
//! Pillow decodes JPEG with libjpeg-turbo (integer "islow" IDCT, "fancy"
//! triangle-filter chroma upsampling); the `image` crate uses `zune-jpeg`.
//! Both are valid decoders but their IDCT rounding and chroma upsampling
//! differ, so individual samples differ by 1-2 levels, occasionally 3.
//! Measured against Pillow 13.0.0 on the fixtures (`tests/image_io.rs`):
//!
//! | JPEG | samples that differ | max abs diff | mean abs diff |
//! |---|---|---|---|
//! | 4:2:0, q90 (the common case) | 15% | 3 | 0.21 |
//! | 4:4:4, q95 | 1.4% | 2 | 0.016 |
//! | grayscale | 1.2% | 1 | 0.012 |
//!
//! (`jpeg-decoder` 0.3 was also tried and is not closer.)  Grayscale JPEGs
//! are replicated into RGB like Pillow's `L -> RGB`.  EXIF orientation is
//! *not* applied (Pillow's `Image.open` does not apply it either).  CMYK /
//! YCCK JPEGs are converted by `zune-jpeg`, which is not guaranteed to match
//! Pillow's naive CMYK conversion (untested).
//!
//! Truncation: a JPEG whose last scan is not followed by an end-of-image
//! marker is rejected as [`ImageError::Corrupt`], like Pillow ("image file is
//! truncated"), although `zune-jpeg` alone would fill in the missing part.  A
//! PNG cut *after* its pixel data (inside the final IDAT CRC or the IEND
//! chunk) is rejected here but accepted by Pillow.

//! # Errors
//!
//! Nothing here panics on bad input: missing, unreadable, empty, truncated,
//! corrupt, unrecognised, zero-sized or oversized files all map to a typed
//! [`ImageError`] that names the file.

use std::fmt;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageFormat};

/// Label used in errors for images decoded from memory by [`decode_rgb`].
pub const IN_MEMORY_LABEL: &str = "<in-memory image>";

/// Errors from loading or constructing an image.
///
/// Every variant that concerns a file carries its `path` (for
/// [`decode_rgb`], the path is [`IN_MEMORY_LABEL`]; [`decode_rgb_named`] lets
/// the caller choose it).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// The file does not exist.
    #[error("image file not found: {}", .path.display())]
    NotFound {
        /// The path that was opened.
        path: PathBuf,
    },
    /// The file exists but could not be read (permissions, a directory, I/O error).
    #[error("cannot read image file {}: {source}", .path.display())]
    Unreadable {
        /// The path that was opened.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is empty (0 bytes).
    #[error("image file {} is empty (0 bytes)", .path.display())]
    EmptyFile {
        /// The offending file.
        path: PathBuf,
    },
    /// The content is not a PNG or JPEG (unknown signature, or a format this
    /// crate does not decode, e.g. GIF), or uses a feature the decoder lacks.
    #[error("unsupported image format in {}: {detail}", .path.display())]
    UnsupportedFormat {
        /// The offending file.
        path: PathBuf,
        /// What was detected / what is missing.
        detail: String,
    },
    /// The file is a PNG or JPEG but is truncated or corrupt.
    #[error("corrupt or truncated image {}: {detail}", .path.display())]
    Corrupt {
        /// The offending file.
        path: PathBuf,
        /// Decoder message.
        detail: String,
    },
    /// The header declares a width or height of zero.
    #[error("image {} has zero size ({width}x{height})", .path.display())]
    ZeroSized {
        /// The offending file.
        path: PathBuf,
        /// Declared width.
        width: u32,
        /// Declared height.
        height: u32,
    },
    /// Decoding would exceed the decoder's memory limits (512 MiB by default).
    #[error("image {} is too large to decode: {detail}", .path.display())]
    TooLarge {
        /// The offending file.
        path: PathBuf,
        /// Decoder message.
        detail: String,
    },
    /// [`RgbImage::from_raw`] was given a buffer whose length is not
    /// `width * height * 3`, or a zero dimension.
    #[error("invalid RGB buffer: {width}x{height}x3 needs {expected} bytes, got {actual}")]
    InvalidBuffer {
        /// Requested width.
        width: u32,
        /// Requested height.
        height: u32,
        /// `width * height * 3` (or `usize::MAX` on overflow).
        expected: usize,
        /// Length of the buffer given.
        actual: usize,
    },
}

/// An owned 8-bit RGB image, row-major `H x W x 3` (HWC), like the NumPy
/// array `np.asarray(pil_image.convert("RGB"))`.
///
/// Invariants: `width > 0`, `height > 0`, `data.len() == width * height * 3`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RgbImage {
    width: u32,
    height: u32,
    data: Vec<u8>,
}

impl fmt::Debug for RgbImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RgbImage")
            .field("width", &self.width)
            .field("height", &self.height)
            .finish_non_exhaustive()
    }
}

impl RgbImage {
    /// Wraps an HWC `u8` buffer of length `width * height * 3`.
    ///
    /// Fails with [`ImageError::InvalidBuffer`] on a zero dimension or a
    /// length mismatch.
    pub fn from_raw(width: u32, height: u32, data: Vec<u8>) -> Result<Self, ImageError> {
        let expected = (width as usize)
            .checked_mul(height as usize)
            .and_then(|n| n.checked_mul(3))
            .unwrap_or(usize::MAX);
        if width == 0 || height == 0 || data.len() != expected {
            return Err(ImageError::InvalidBuffer {
                width,
                height,
                expected,
                actual: data.len(),
            });
        }
        Ok(Self {
            width,
            height,
            data,
        })
    }

    /// Builds an image by calling `f(x, y)` for every pixel.
    ///
    /// Fails with [`ImageError::InvalidBuffer`] on a zero dimension.
    pub fn from_fn(
        width: u32,
        height: u32,
        mut f: impl FnMut(u32, u32) -> [u8; 3],
    ) -> Result<Self, ImageError> {
        if width == 0 || height == 0 {
            return Err(ImageError::InvalidBuffer {
                width,
                height,
                expected: 0,
                actual: 0,
            });
        }
        let mut data = Vec::with_capacity(width as usize * height as usize * 3);
        for y in 0..height {
            for x in 0..width {
                data.extend_from_slice(&f(x, y));
            }
        }
        Self::from_raw(width, height, data)
    }

    /// Width in pixels (number of columns).
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels (number of rows).
    pub fn height(&self) -> u32 {
        self.height
    }

    /// `(height, width)`, the order NumPy / PyTorch shapes use.
    pub fn hw(&self) -> (usize, usize) {
        (self.height as usize, self.width as usize)
    }

    /// The HWC bytes, row-major.
    pub fn as_raw(&self) -> &[u8] {
        &self.data
    }

    /// Consumes the image, returning the HWC bytes.
    pub fn into_raw(self) -> Vec<u8> {
        self.data
    }

    /// The pixel at column `x`, row `y`, or `None` when out of bounds.
    pub fn get_pixel(&self, x: u32, y: u32) -> Option<[u8; 3]> {
        if x >= self.width || y >= self.height {
            return None;
        }
        let i = (y as usize * self.width as usize + x as usize) * 3;
        Some([self.data[i], self.data[i + 1], self.data[i + 2]])
    }
}

/// Reads and decodes a PNG or JPEG file into RGB, like
/// `np.asarray(PIL.Image.open(path).convert("RGB"))`.
///
/// The format is detected from the content (as Pillow does), not from the
/// extension.  See the [module docs](self) for the exact conversion rules and
/// the JPEG caveat.
pub fn load_rgb(path: impl AsRef<Path>) -> Result<RgbImage, ImageError> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            ImageError::NotFound {
                path: path.to_path_buf(),
            }
        } else {
            ImageError::Unreadable {
                path: path.to_path_buf(),
                source,
            }
        }
    })?;
    decode_impl(&bytes, path)
}

/// Decodes an in-memory PNG or JPEG into RGB (errors name [`IN_MEMORY_LABEL`]).
pub fn decode_rgb(bytes: &[u8]) -> Result<RgbImage, ImageError> {
    decode_impl(bytes, Path::new(IN_MEMORY_LABEL))
}

/// Like [`decode_rgb`], with `name` (e.g. a URL or archive member) used in errors.
pub fn decode_rgb_named(bytes: &[u8], name: impl AsRef<Path>) -> Result<RgbImage, ImageError> {
    decode_impl(bytes, name.as_ref())
}

const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// `(width, height, bit_depth, color_type)` from a PNG's IHDR, if present.
fn png_ihdr(bytes: &[u8]) -> Option<(u32, u32, u8, u8)> {
    if bytes.len() < 26 || !bytes.starts_with(PNG_SIGNATURE) || &bytes[12..16] != b"IHDR" {
        return None;
    }
    let be = |s: &[u8]| u32::from_be_bytes([s[0], s[1], s[2], s[3]]);
    Some((be(&bytes[16..20]), be(&bytes[20..24]), bytes[24], bytes[25]))
}

/// True when a JPEG stream visibly ends before its end-of-image marker: no
/// `FF D9` follows the last start-of-scan `FF DA`.  Entropy-coded data cannot
/// contain `FF DA`/`FF D9` (0xFF bytes are stuffed), so this is reliable for
/// a file cut inside its last scan.  libjpeg (and hence Pillow) reports such
/// files as truncated; `zune-jpeg` silently fills the missing part.
fn jpeg_is_truncated(bytes: &[u8]) -> bool {
    let last_sos = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]);
    match last_sos {
        None => true,
        Some(pos) => !bytes[pos + 2..].windows(2).any(|w| w == [0xFF, 0xD9]),
    }
}

fn decode_impl(bytes: &[u8], path: &Path) -> Result<RgbImage, ImageError> {
    let path_buf = || path.to_path_buf();
    if bytes.is_empty() {
        return Err(ImageError::EmptyFile { path: path_buf() });
    }
    let format = image::guess_format(bytes).map_err(|_| ImageError::UnsupportedFormat {
        path: path_buf(),
        detail: "unrecognised file signature (not a PNG or JPEG)".into(),
    })?;
    let mut gray16_clip = false;
    match format {
        ImageFormat::Png => {
            if let Some((w, h, depth, color_type)) = png_ihdr(bytes) {
                if w == 0 || h == 0 {
                    return Err(ImageError::ZeroSized {
                        path: path_buf(),
                        width: w,
                        height: h,
                    });
                }
                // Pillow opens 16-bit grayscale as mode "I;16" (even with tRNS)
                // and its I;16 -> RGB conversion saturates at 255.
                gray16_clip = depth == 16 && color_type == 0;
            }
        }
        ImageFormat::Jpeg => {
            if jpeg_is_truncated(bytes) {
                return Err(ImageError::Corrupt {
                    path: path_buf(),
                    detail: "JPEG data ends before the end-of-image marker (truncated file)".into(),
                });
            }
        }
        other => {
            return Err(ImageError::UnsupportedFormat {
                path: path_buf(),
                detail: format!("{other:?} images are not supported (PNG and JPEG only)"),
            });
        }
    }

    let reader = image::ImageReader::with_format(Cursor::new(bytes), format);
    let decoded = reader.decode().map_err(|e| map_decode_error(e, path))?;
    if decoded.width() == 0 || decoded.height() == 0 {
        return Err(ImageError::ZeroSized {
            path: path_buf(),
            width: decoded.width(),
            height: decoded.height(),
        });
    }
    to_pil_rgb(decoded, gray16_clip, path)
}

fn map_decode_error(e: image::ImageError, path: &Path) -> ImageError {
    use image::ImageError as E;
    let path = path.to_path_buf();
    match e {
        E::Unsupported(u) => ImageError::UnsupportedFormat {
            path,
            detail: u.to_string(),
        },
        E::Limits(l) => ImageError::TooLarge {
            path,
            detail: l.to_string(),
        },
        E::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => ImageError::Corrupt {
            path,
            detail: format!("unexpected end of data (truncated file): {io}"),
        },
        other => ImageError::Corrupt {
            path,
            detail: other.to_string(),
        },
    }
}

/// Applies Pillow's `convert("RGB")` rules to whatever the decoder produced.
fn to_pil_rgb(img: DynamicImage, gray16_clip: bool, path: &Path) -> Result<RgbImage, ImageError> {
    let (width, height) = (img.width(), img.height());
    let n = width as usize * height as usize;
    let data: Vec<u8> = match img {
        DynamicImage::ImageRgb8(b) => b.into_raw(),
        DynamicImage::ImageRgba8(b) => {
            let raw = b.into_raw();
            let mut out = Vec::with_capacity(n * 3);
            for px in raw.chunks_exact(4) {
                out.extend_from_slice(&px[..3]);
            }
            out
        }
        DynamicImage::ImageLuma8(b) => b.into_raw().iter().flat_map(|&v| [v, v, v]).collect(),
        DynamicImage::ImageLumaA8(b) => b
            .into_raw()
            .chunks_exact(2)
            .flat_map(|px| [px[0], px[0], px[0]])
            .collect(),
        DynamicImage::ImageRgb16(b) => b.into_raw().iter().map(|&v| (v >> 8) as u8).collect(),
        DynamicImage::ImageRgba16(b) => {
            let raw = b.into_raw();
            let mut out = Vec::with_capacity(n * 3);
            for px in raw.chunks_exact(4) {
                out.extend(px[..3].iter().map(|&v| (v >> 8) as u8));
            }
            out
        }
        DynamicImage::ImageLuma16(b) => b
            .into_raw()
            .iter()
            .flat_map(|&v| {
                let g = gray16_level(v, gray16_clip);
                [g, g, g]
            })
            .collect(),
        DynamicImage::ImageLumaA16(b) => b
            .into_raw()
            .chunks_exact(2)
            .flat_map(|px| {
                let g = gray16_level(px[0], gray16_clip);
                [g, g, g]
            })
            .collect(),
        other => {
            return Err(ImageError::UnsupportedFormat {
                path: path.to_path_buf(),
                detail: format!(
                    "decoder produced an unsupported pixel type {:?}",
                    other.color()
                ),
            });
        }
    };
    RgbImage::from_raw(width, height, data).map_err(|_| ImageError::Corrupt {
        path: path.to_path_buf(),
        detail: "decoder returned a buffer of unexpected size".into(),
    })
}

/// 16-bit gray to 8-bit: `min(v, 255)` for Pillow's `I;16` (gray PNG),
/// high byte for its `LA` 16-bit path.
fn gray16_level(v: u16, clip: bool) -> u8 {
    if clip {
        v.min(255) as u8
    } else {
        (v >> 8) as u8
    }
}

/// Width and height of an image file from its header, without decoding the pixels.
pub fn image_dimensions(path: impl AsRef<Path>) -> Result<(u32, u32), ImageError> {
    let path = path.as_ref();
    let reader = image::ImageReader::open(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            ImageError::NotFound {
                path: path.to_path_buf(),
            }
        } else {
            ImageError::Unreadable {
                path: path.to_path_buf(),
                source,
            }
        }
    })?;
    let reader = reader
        .with_guessed_format()
        .map_err(|source| ImageError::Unreadable {
            path: path.to_path_buf(),
            source,
        })?;
    reader.into_dimensions().map_err(|e| ImageError::Corrupt {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_raw_checks_length_and_zero_dims() {
        assert!(RgbImage::from_raw(2, 2, vec![0; 12]).is_ok());
        assert!(matches!(
            RgbImage::from_raw(2, 2, vec![0; 11]),
            Err(ImageError::InvalidBuffer {
                expected: 12,
                actual: 11,
                ..
            })
        ));
        assert!(RgbImage::from_raw(0, 2, vec![]).is_err());
        assert!(RgbImage::from_raw(u32::MAX, u32::MAX, vec![]).is_err());
    }

    #[test]
    fn pixel_access_is_row_major_hwc() {
        let img = RgbImage::from_fn(3, 2, |x, y| [x as u8, y as u8, 7]).unwrap();
        assert_eq!(img.hw(), (2, 3));
        assert_eq!(img.get_pixel(2, 1), Some([2, 1, 7]));
        assert_eq!(&img.as_raw()[(3 + 2) * 3..(3 + 2) * 3 + 3], &[2, 1, 7]);
        assert_eq!(img.get_pixel(3, 0), None);
    }

    #[test]
    fn jpeg_truncation_heuristic() {
        assert!(jpeg_is_truncated(&[0xFF, 0xD8, 0xFF, 0xDA, 1, 2, 3]));
        assert!(!jpeg_is_truncated(&[
            0xFF, 0xD8, 0xFF, 0xDA, 1, 2, 0xFF, 0xD9
        ]));
        assert!(jpeg_is_truncated(&[0xFF, 0xD8, 0xFF, 0xD9]));
    }

    #[test]
    fn gray16_rules() {
        assert_eq!(gray16_level(300, true), 255);
        assert_eq!(gray16_level(200, true), 200);
        assert_eq!(gray16_level(0x12ff, false), 0x12);
    }
}
