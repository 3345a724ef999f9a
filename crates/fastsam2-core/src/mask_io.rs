//! Mask files: palette-indexed PNGs (DAVIS / YouTube-VOS label maps), binary `0/255`
//! PNGs, 24-bit panoptic id PNGs, and NumPy `.npy` arrays (`f32`, `f64`, `u8`, `bool`).
//!
//! Every error names the file it concerns.
//!
//! `.npy` support is written here rather than taken from `npyz`/`ndarray-npy`: the format
//! is a fixed magic, a Python-dict header with three keys and a raw little/big-endian
//! buffer, and the crates that exist pull a general Python-literal parser (`py_literal` +
//! `pest`) into a crate that the whole workspace builds. Reading covers every header
//! version (1.0/2.0/3.0), both byte orders and `fortran_order`.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// Errors from reading or writing mask files.
#[derive(Debug, thiserror::Error)]
pub enum MaskIoError {
    /// The file could not be opened, read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The PNG decoder rejected the file.
    #[error("{path}: not a readable PNG: {source}")]
    PngDecode {
        path: PathBuf,
        source: png::DecodingError,
    },
    /// The PNG encoder failed.
    #[error("{path}: PNG encoding failed: {source}")]
    PngEncode {
        path: PathBuf,
        source: png::EncodingError,
    },
    /// The PNG's colour type / bit depth cannot hold what was asked for.
    #[error("{path}: {msg}")]
    Unsupported { path: PathBuf, msg: String },
    /// A malformed `.npy` file.
    #[error("{path}: invalid .npy file: {msg}")]
    Npy { path: PathBuf, msg: String },
    /// A buffer whose length does not match the stated shape.
    #[error("{path}: buffer of {len} elements does not match shape {shape:?}")]
    Shape {
        path: PathBuf,
        len: usize,
        shape: Vec<usize>,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> MaskIoError + '_ {
    move |source| MaskIoError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A single-channel 8-bit label image: object indices of a palette PNG, or grey values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelImage {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Row-major labels, `width × height`.
    pub data: Vec<u8>,
    /// The PLTE palette (RGB triplets) when the PNG is palette-indexed.
    pub palette: Option<Vec<[u8; 3]>>,
}

/// The PASCAL VOC / DAVIS colour map (`davis2017.utils.color_map`): index `i` → RGB.
pub fn davis_palette() -> Vec<[u8; 3]> {
    (0..256u32)
        .map(|i| {
            let (mut r, mut g, mut b) = (0u8, 0u8, 0u8);
            let mut c = i;
            for j in 0..8 {
                r |= ((c & 1) as u8) << (7 - j);
                g |= (((c >> 1) & 1) as u8) << (7 - j);
                b |= (((c >> 2) & 1) as u8) << (7 - j);
                c >>= 3;
            }
            [r, g, b]
        })
        .collect()
}

struct DecodedPng {
    width: u32,
    height: u32,
    color: png::ColorType,
    depth: png::BitDepth,
    palette: Option<Vec<u8>>,
    buf: Vec<u8>,
    line: usize,
}

fn decode_png(path: &Path) -> Result<DecodedPng, MaskIoError> {
    let file = File::open(path).map_err(io_err(path))?;
    let mut dec = png::Decoder::new(BufReader::new(file));
    dec.set_transformations(png::Transformations::IDENTITY);
    let pe = |source| MaskIoError::PngDecode {
        path: path.to_path_buf(),
        source,
    };
    let mut reader = dec.read_info().map_err(pe)?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| MaskIoError::Unsupported {
            path: path.to_path_buf(),
            msg: "image too large".into(),
        })?;
    let mut buf = vec![0u8; size];
    let info = reader.next_frame(&mut buf).map_err(pe)?;
    buf.truncate(info.buffer_size());
    let palette = reader.info().palette.as_ref().map(|p| p.to_vec());
    Ok(DecodedPng {
        width: info.width,
        height: info.height,
        color: info.color_type,
        depth: info.bit_depth,
        palette,
        buf,
        line: info.line_size,
    })
}

/// Unpacks 1/2/4/8-bit samples of one channel into bytes.
fn unpack_samples(d: &DecodedPng, bits: u8) -> Vec<u8> {
    let (w, h) = (d.width as usize, d.height as usize);
    let mut out = Vec::with_capacity(w * h);
    for y in 0..h {
        let row = &d.buf[y * d.line..(y + 1) * d.line];
        match bits {
            8 => out.extend_from_slice(&row[..w]),
            1 | 2 | 4 => {
                let per = 8 / bits as usize;
                let mask = (1u16 << bits) as u8 - 1;
                for x in 0..w {
                    let byte = row[x / per];
                    let shift = 8 - bits as usize * (x % per + 1);
                    out.push((byte >> shift) & mask);
                }
            }
            _ => unreachable!(),
        }
    }
    out
}

/// Reads a label PNG the way `numpy.array(PIL.Image.open(path))` sees it: the palette
/// indices of a palette image, the grey values of a greyscale one.
///
/// Accepts palette (1/2/4/8-bit), greyscale (1/2/4/8-bit, 16-bit when every value is
/// ≤ 255) and greyscale+alpha (the alpha is ignored). 1-bit greyscale reads as `0/1`,
/// as PIL's mode `1` does. RGB images are rejected: they carry no labels.
pub fn read_label_png(path: &Path) -> Result<LabelImage, MaskIoError> {
    let d = decode_png(path)?;
    let unsupported = |msg: String| MaskIoError::Unsupported {
        path: path.to_path_buf(),
        msg,
    };
    let bits = d.depth as u8;
    let (w, h) = (d.width as usize, d.height as usize);
    let data = match d.color {
        png::ColorType::Indexed | png::ColorType::Grayscale if bits <= 8 => {
            let mut v = unpack_samples(&d, bits);
            // PIL expands 2- and 4-bit grey to 8-bit levels; 1-bit stays 0/1 (mode "1" -> bool).
            if d.color == png::ColorType::Grayscale && (bits == 2 || bits == 4) {
                let scale = 255 / ((1u16 << bits) - 1) as u8;
                v.iter_mut().for_each(|p| *p *= scale);
            }
            v
        }
        png::ColorType::Grayscale => {
            let mut v = Vec::with_capacity(w * h);
            for y in 0..h {
                let row = &d.buf[y * d.line..];
                for x in 0..w {
                    let val = u16::from_be_bytes([row[2 * x], row[2 * x + 1]]);
                    if val > 255 {
                        return Err(unsupported(format!(
                            "16-bit label {val} at ({x}, {y}) does not fit in 8 bits"
                        )));
                    }
                    v.push(val as u8);
                }
            }
            v
        }
        png::ColorType::GrayscaleAlpha => {
            if bits != 8 {
                return Err(unsupported(
                    "16-bit grey+alpha PNGs are not label images".into(),
                ));
            }
            (0..h)
                .flat_map(|y| (0..w).map(move |x| (y, x)))
                .map(|(y, x)| d.buf[y * d.line + 2 * x])
                .collect()
        }
        c => {
            return Err(unsupported(format!(
                "colour type {c:?} is not a label image (expected palette-indexed or greyscale)"
            )));
        }
    };
    let palette = d
        .palette
        .map(|p| p.chunks_exact(3).map(|c| [c[0], c[1], c[2]]).collect());
    Ok(LabelImage {
        width: d.width,
        height: d.height,
        data,
        palette,
    })
}

fn write_png(
    path: &Path,
    width: u32,
    height: u32,
    color: png::ColorType,
    palette: Option<Vec<u8>>,
    data: &[u8],
) -> Result<(), MaskIoError> {
    let file = File::create(path).map_err(io_err(path))?;
    let mut enc = png::Encoder::new(BufWriter::new(file), width, height);
    enc.set_color(color);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_compression(png::Compression::Fast);
    if let Some(p) = palette {
        enc.set_palette(p);
    }
    let pe = |source| MaskIoError::PngEncode {
        path: path.to_path_buf(),
        source,
    };
    let mut writer = enc.write_header().map_err(pe)?;
    writer.write_image_data(data).map_err(pe)?;
    writer.finish().map_err(pe)
}

fn check_len(path: &Path, len: usize, shape: Vec<usize>) -> Result<(), MaskIoError> {
    if len != shape.iter().product::<usize>() {
        return Err(MaskIoError::Shape {
            path: path.to_path_buf(),
            len,
            shape,
        });
    }
    Ok(())
}

/// Writes an 8-bit palette-indexed PNG (DAVIS style). `palette` defaults to
/// [`davis_palette`].
pub fn write_label_png(
    path: &Path,
    width: u32,
    height: u32,
    labels: &[u8],
    palette: Option<&[[u8; 3]]>,
) -> Result<(), MaskIoError> {
    check_len(path, labels.len(), vec![height as usize, width as usize])?;
    let pal: Vec<u8> = match palette {
        Some(p) => p.iter().flatten().copied().collect(),
        None => davis_palette().into_iter().flatten().collect(),
    };
    write_png(
        path,
        width,
        height,
        png::ColorType::Indexed,
        Some(pal),
        labels,
    )
}

/// A binary mask image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinaryMask {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Row-major foreground flags.
    pub data: Vec<bool>,
}

/// Reads a mask PNG as binary: a pixel is foreground when any of its colour samples
/// (alpha excluded; palette *indices* for palette images) is non-zero.
pub fn read_binary_mask_png(path: &Path) -> Result<BinaryMask, MaskIoError> {
    let d = decode_png(path)?;
    let (w, h) = (d.width as usize, d.height as usize);
    let bits = d.depth as u8;
    let data: Vec<bool> = match d.color {
        png::ColorType::Indexed | png::ColorType::Grayscale if bits <= 8 => {
            unpack_samples(&d, bits)
                .into_iter()
                .map(|v| v != 0)
                .collect()
        }
        _ => {
            let (channels, alpha) = match d.color {
                png::ColorType::Grayscale => (1, false),
                png::ColorType::GrayscaleAlpha => (2, true),
                png::ColorType::Rgb => (3, false),
                png::ColorType::Rgba => (4, true),
                png::ColorType::Indexed => unreachable!(),
            };
            let bps = if bits == 16 { 2 } else { 1 };
            let colour = if alpha { channels - 1 } else { channels };
            let mut v = Vec::with_capacity(w * h);
            for y in 0..h {
                let row = &d.buf[y * d.line..];
                for x in 0..w {
                    let px = &row[x * channels * bps..(x * channels + colour) * bps];
                    v.push(px.iter().any(|&b| b != 0));
                }
            }
            v
        }
    };
    Ok(BinaryMask {
        width: d.width,
        height: d.height,
        data,
    })
}

/// Writes a binary mask as an 8-bit greyscale PNG with values `0` and `255`.
pub fn write_binary_mask_png(
    path: &Path,
    width: u32,
    height: u32,
    mask: &[bool],
) -> Result<(), MaskIoError> {
    check_len(path, mask.len(), vec![height as usize, width as usize])?;
    let bytes: Vec<u8> = mask.iter().map(|&b| if b { 255 } else { 0 }).collect();
    write_png(path, width, height, png::ColorType::Grayscale, None, &bytes)
}

/// A 24-bit id image as COCO panoptic PNGs store it: `id = R + 256·G + 256²·B`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdImage {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Row-major segment ids.
    pub data: Vec<u32>,
}

/// Reads a panoptic PNG (`panopticapi.utils.rgb2id` of the RGB channels). RGB and RGBA
/// (alpha ignored) 8-bit images are read directly; palette images go through their palette.
pub fn read_id_png(path: &Path) -> Result<IdImage, MaskIoError> {
    let d = decode_png(path)?;
    let (w, h) = (d.width as usize, d.height as usize);
    let bits = d.depth as u8;
    let rgb = |p: &[u8]| p[0] as u32 + 256 * p[1] as u32 + 65536 * p[2] as u32;
    let data = match (d.color, bits) {
        (png::ColorType::Rgb, 8) | (png::ColorType::Rgba, 8) => {
            let ch = if d.color == png::ColorType::Rgb { 3 } else { 4 };
            let mut v = Vec::with_capacity(w * h);
            for y in 0..h {
                let row = &d.buf[y * d.line..];
                for x in 0..w {
                    v.push(rgb(&row[x * ch..x * ch + 3]));
                }
            }
            v
        }
        (png::ColorType::Indexed, _) => {
            let pal = d.palette.clone().unwrap_or_default();
            unpack_samples(&d, bits)
                .into_iter()
                .map(|i| {
                    pal.get(i as usize * 3..i as usize * 3 + 3)
                        .map(rgb)
                        .unwrap_or(0)
                })
                .collect()
        }
        (c, b) => {
            return Err(MaskIoError::Unsupported {
                path: path.to_path_buf(),
                msg: format!(
                    "colour type {c:?} at {b} bits is not a panoptic id image (expected 8-bit RGB)"
                ),
            });
        }
    };
    Ok(IdImage {
        width: d.width,
        height: d.height,
        data,
    })
}

/// Writes a panoptic id image as 8-bit RGB (`id2rgb`). Ids must be below 2²⁴.
pub fn write_id_png(path: &Path, width: u32, height: u32, ids: &[u32]) -> Result<(), MaskIoError> {
    check_len(path, ids.len(), vec![height as usize, width as usize])?;
    if let Some(&bad) = ids.iter().find(|&&v| v >= 1 << 24) {
        return Err(MaskIoError::Unsupported {
            path: path.to_path_buf(),
            msg: format!("id {bad} needs more than 24 bits"),
        });
    }
    let bytes: Vec<u8> = ids
        .iter()
        .flat_map(|&v| [(v & 255) as u8, ((v >> 8) & 255) as u8, (v >> 16) as u8])
        .collect();
    write_png(path, width, height, png::ColorType::Rgb, None, &bytes)
}

// ---------------------------------------------------------------------------
// .npy
// ---------------------------------------------------------------------------

/// The element data of an `.npy` array, in C (row-major) order.
#[derive(Debug, Clone, PartialEq)]
pub enum NpyData {
    /// `<f4` / `>f4`
    F32(Vec<f32>),
    /// `<f8` / `>f8`
    F64(Vec<f64>),
    /// `|u1`
    U8(Vec<u8>),
    /// `|b1`
    Bool(Vec<bool>),
}

impl NpyData {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            NpyData::F32(v) => v.len(),
            NpyData::F64(v) => v.len(),
            NpyData::U8(v) => v.len(),
            NpyData::Bool(v) => v.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values converted to `f32` (booleans as `0/1`).
    pub fn to_f32(&self) -> Vec<f32> {
        match self {
            NpyData::F32(v) => v.clone(),
            NpyData::F64(v) => v.iter().map(|&x| x as f32).collect(),
            NpyData::U8(v) => v.iter().map(|&x| x as f32).collect(),
            NpyData::Bool(v) => v.iter().map(|&x| x as u8 as f32).collect(),
        }
    }
}

/// An `.npy` array: shape and C-order data.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyArray {
    /// The shape (empty for a scalar).
    pub shape: Vec<usize>,
    /// The elements, C order.
    pub data: NpyData,
}

fn npy_err(path: &Path, msg: impl Into<String>) -> MaskIoError {
    MaskIoError::Npy {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

/// Extracts the value text of `'key':` from a Python dict literal header.
fn header_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("'{key}'");
    let start = header.find(&pat)? + pat.len();
    let rest = header[start..].trim_start().strip_prefix(':')?.trim_start();
    let end = if rest.starts_with('(') {
        rest.find(')')? + 1
    } else if let Some(q) = rest.strip_prefix('\'') {
        q.find('\'')? + 2
    } else {
        rest.find([',', '}']).unwrap_or(rest.len())
    };
    Some(rest[..end].trim())
}

/// Reads an `.npy` file holding `f32`, `f64`, `u8` or `bool` data.
pub fn read_npy(path: &Path) -> Result<NpyArray, MaskIoError> {
    let mut bytes = Vec::new();
    File::open(path)
        .map_err(io_err(path))?
        .read_to_end(&mut bytes)
        .map_err(io_err(path))?;
    parse_npy(&bytes).map_err(|msg| npy_err(path, msg))
}

fn parse_npy(bytes: &[u8]) -> Result<NpyArray, String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("missing the \\x93NUMPY magic".into());
    }
    let major = bytes[6];
    let (hlen, hstart) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err("truncated header".into());
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => return Err(format!("unsupported format version {v}")),
    };
    let header = bytes.get(hstart..hstart + hlen).ok_or("truncated header")?;
    let header = std::str::from_utf8(header).map_err(|_| "header is not text")?;
    let descr = header_value(header, "descr")
        .ok_or("header has no 'descr'")?
        .trim_matches('\'');
    let fortran =
        match header_value(header, "fortran_order").ok_or("header has no 'fortran_order'")? {
            "True" => true,
            "False" => false,
            v => return Err(format!("bad fortran_order {v}")),
        };
    let shape_txt = header_value(header, "shape").ok_or("header has no 'shape'")?;
    let inner = shape_txt.trim_start_matches('(').trim_end_matches(')');
    let shape: Vec<usize> = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.trim_end_matches('L')
                .parse::<usize>()
                .map_err(|_| format!("bad shape {shape_txt}"))
        })
        .collect::<Result<_, _>>()?;
    let n: usize = shape
        .iter()
        .try_fold(1usize, |a, &b| a.checked_mul(b))
        .ok_or("shape overflows")?;
    let body = &bytes[hstart + hlen..];
    let (kind, size) = match descr {
        "<f4" | ">f4" => ('f', 4),
        "<f8" | ">f8" => ('d', 8),
        "|u1" | "<u1" | ">u1" => ('u', 1),
        "|b1" | "<b1" | ">b1" => ('b', 1),
        d => return Err(format!("unsupported dtype {d} (expected f4, f8, u1 or b1)")),
    };
    let need = n.checked_mul(size).ok_or("shape overflows")?;
    if body.len() < need {
        return Err(format!(
            "data has {} bytes, shape {:?} of {descr} needs {need}",
            body.len(),
            shape
        ));
    }
    let body = &body[..need];
    let big = descr.starts_with('>');
    let mut data = match kind {
        'f' => NpyData::F32(
            body.chunks_exact(4)
                .map(|c| {
                    let a = [c[0], c[1], c[2], c[3]];
                    if big {
                        f32::from_be_bytes(a)
                    } else {
                        f32::from_le_bytes(a)
                    }
                })
                .collect(),
        ),
        'd' => NpyData::F64(
            body.chunks_exact(8)
                .map(|c| {
                    let a: [u8; 8] = c.try_into().expect("chunk of 8");
                    if big {
                        f64::from_be_bytes(a)
                    } else {
                        f64::from_le_bytes(a)
                    }
                })
                .collect(),
        ),
        'u' => NpyData::U8(body.to_vec()),
        _ => NpyData::Bool(
            body.iter()
                .map(|&b| match b {
                    0 => Ok(false),
                    1 => Ok(true),
                    v => Err(format!("bool array holds byte {v}")),
                })
                .collect::<Result<_, _>>()?,
        ),
    };
    if fortran && shape.len() > 1 {
        data = fortran_to_c(&data, &shape);
    }
    Ok(NpyArray { shape, data })
}

fn fortran_to_c(data: &NpyData, shape: &[usize]) -> NpyData {
    fn perm<T: Copy>(v: &[T], shape: &[usize]) -> Vec<T> {
        let n = v.len();
        let nd = shape.len();
        let mut out = Vec::with_capacity(n);
        let mut idx = vec![0usize; nd];
        for _ in 0..n {
            // C-order index -> Fortran offset
            let mut off = 0usize;
            let mut stride = 1usize;
            for d in 0..nd {
                off += idx[d] * stride;
                stride *= shape[d];
            }
            out.push(v[off]);
            for d in (0..nd).rev() {
                idx[d] += 1;
                if idx[d] < shape[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
        out
    }
    match data {
        NpyData::F32(v) => NpyData::F32(perm(v, shape)),
        NpyData::F64(v) => NpyData::F64(perm(v, shape)),
        NpyData::U8(v) => NpyData::U8(perm(v, shape)),
        NpyData::Bool(v) => NpyData::Bool(perm(v, shape)),
    }
}

fn write_npy_raw(
    path: &Path,
    descr: &str,
    shape: &[usize],
    body: &[u8],
) -> Result<(), MaskIoError> {
    let shape_txt = match shape.len() {
        1 => format!("({},)", shape[0]),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_txt}, }}");
    // magic(6) + version(2) + len(2) + header + '\n' must be a multiple of 64
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let file = File::create(path).map_err(io_err(path))?;
    let mut w = BufWriter::new(file);
    let mut head = Vec::with_capacity(10 + header.len());
    head.extend_from_slice(b"\x93NUMPY\x01\x00");
    let hl = u16::try_from(header.len())
        .map_err(|_| npy_err(path, "shape too long for a v1.0 header"))?;
    head.extend_from_slice(&hl.to_le_bytes());
    head.extend_from_slice(header.as_bytes());
    w.write_all(&head).map_err(io_err(path))?;
    w.write_all(body).map_err(io_err(path))?;
    w.flush().map_err(io_err(path))
}

/// Writes a little-endian `f32` C-order `.npy` (e.g. `logits.npy`).
pub fn write_npy_f32(path: &Path, shape: &[usize], data: &[f32]) -> Result<(), MaskIoError> {
    check_len(path, data.len(), shape.to_vec())?;
    let body: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    write_npy_raw(path, "<f4", shape, &body)
}

/// Writes a `u8` C-order `.npy`.
pub fn write_npy_u8(path: &Path, shape: &[usize], data: &[u8]) -> Result<(), MaskIoError> {
    check_len(path, data.len(), shape.to_vec())?;
    write_npy_raw(path, "|u1", shape, data)
}

/// Writes a `bool` C-order `.npy`.
pub fn write_npy_bool(path: &Path, shape: &[usize], data: &[bool]) -> Result<(), MaskIoError> {
    check_len(path, data.len(), shape.to_vec())?;
    let body: Vec<u8> = data.iter().map(|&b| b as u8).collect();
    write_npy_raw(path, "|b1", shape, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("fastsam2-core-maskio-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    #[test]
    fn palette_matches_davis() {
        let p = davis_palette();
        assert_eq!(p[0], [0, 0, 0]);
        assert_eq!(p[1], [128, 0, 0]);
        assert_eq!(p[2], [0, 128, 0]);
        assert_eq!(p[255], [224, 224, 192]);
    }

    #[test]
    fn label_png_roundtrip() {
        let path = tmp("labels.png");
        let labels: Vec<u8> = (0..35u8).map(|v| v % 5).collect();
        write_label_png(&path, 7, 5, &labels, None).unwrap();
        let img = read_label_png(&path).unwrap();
        assert_eq!((img.width, img.height), (7, 5));
        assert_eq!(img.data, labels);
        assert_eq!(img.palette.unwrap()[1], [128, 0, 0]);
    }

    #[test]
    fn binary_and_id_roundtrip() {
        let path = tmp("bin.png");
        let m: Vec<bool> = (0..12).map(|i| i % 3 == 0).collect();
        write_binary_mask_png(&path, 4, 3, &m).unwrap();
        assert_eq!(read_binary_mask_png(&path).unwrap().data, m);
        let path = tmp("ids.png");
        let ids: Vec<u32> = (0..12).map(|i| i * 1_000_003 % (1 << 24)).collect();
        write_id_png(&path, 4, 3, &ids).unwrap();
        assert_eq!(read_id_png(&path).unwrap().data, ids);
        assert!(read_label_png(&path).is_err());
    }

    #[test]
    fn npy_roundtrip_and_errors() {
        let path = tmp("a.npy");
        let v: Vec<f32> = (0..24).map(|i| i as f32 * 0.5 - 3.0).collect();
        write_npy_f32(&path, &[2, 3, 4], &v).unwrap();
        let a = read_npy(&path).unwrap();
        assert_eq!(a.shape, vec![2, 3, 4]);
        assert_eq!(a.data, NpyData::F32(v));
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(
            (10 + u16::from_le_bytes([bytes[8], bytes[9]]) as usize) % 64,
            0
        );
        write_npy_bool(&path, &[3], &[true, false, true]).unwrap();
        assert_eq!(
            read_npy(&path).unwrap().data,
            NpyData::Bool(vec![true, false, true])
        );
        write_npy_u8(&path, &[2, 2], &[1, 2, 3, 4]).unwrap();
        assert_eq!(read_npy(&path).unwrap().data, NpyData::U8(vec![1, 2, 3, 4]));
        assert!(write_npy_u8(&path, &[2, 3], &[1, 2]).is_err());
        std::fs::write(&path, b"not numpy").unwrap();
        let e = read_npy(&path).unwrap_err().to_string();
        assert!(e.contains("a.npy") && e.contains("magic"), "{e}");
    }

    #[test]
    fn npy_fortran_order() {
        // numpy.asfortranarray([[1, 2, 3], [4, 5, 6]], dtype=uint8)
        let header = "{'descr': '|u1', 'fortran_order': True, 'shape': (2, 3), }";
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(&[1, 4, 2, 5, 3, 6]);
        let a = parse_npy(&bytes).unwrap();
        assert_eq!(a.data, NpyData::U8(vec![1, 2, 3, 4, 5, 6]));
    }
}
