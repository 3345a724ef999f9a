//! COCO run-length encoding, bit-compatible with `pycocotools` (`maskApi.c`).
//!
//! An [`Rle`] stores a binary mask of `height × width` pixels as alternating run
//! lengths over the **column-major** (Fortran order) pixel sequence, starting with
//! a run of zeros (which may be empty). This is the encoding COCO uses on disk,
//! either *compressed* (the `counts` string, a LEB128-like code over the ASCII
//! characters 48–111) or *uncompressed* (`counts` as a list of integers).
//!
//! Every operation follows `maskApi.c` step by step, including its corner cases,
//! so that counts strings, areas, boxes, polygon rasterisations and IoUs are the
//! same bits that `pycocotools` produces:
//!
//! * [`Rle::from_polygon`] reproduces `rleFrPoly` (5× upsampling, the y-boundary
//!   rule, C `(int)` truncation, x86's conversion of NaN to `INT_MIN`);
//! * [`Rle::to_bbox`] reproduces `rleToBbox` (a run that wraps a column makes the
//!   box full height);
//! * [`iou`] reproduces `rleIou` (crowd ground truth divides by the detection's
//!   area, masks of different sizes give `-1`).
//!
//! Masks passed in and out of this module are row-major (`y * width + x`) byte
//! slices where any non-zero byte is foreground; conversion to the column-major
//! run order is internal.

use serde::{Deserialize, Serialize};

/// Errors from decoding or validating an RLE.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RleError {
    /// A character outside `'0'..='o'` (48..=111) in a compressed counts string.
    #[error("invalid character {ch:?} at byte {pos} of the compressed RLE counts string")]
    BadChar { ch: char, pos: usize },
    /// The counts string ends in the middle of a number.
    #[error("compressed RLE counts string ends in the middle of a number")]
    Truncated,
    /// A decoded run length is negative or does not fit in 32 bits.
    #[error("run {index} of the RLE has an invalid length {value}")]
    BadCount { index: usize, value: i64 },
    /// The runs do not add up to `height × width`.
    #[error("RLE counts add up to {sum} pixels but its size is {height}x{width} = {expected}")]
    WrongCounts {
        sum: u64,
        height: u32,
        width: u32,
        expected: u64,
    },
    /// A mask buffer does not have `height × width` pixels.
    #[error("mask buffer has {len} pixels, expected {height}x{width}")]
    MaskSize { len: usize, height: u32, width: u32 },
    /// Two RLEs that must have the same size do not.
    #[error("RLE sizes differ: {0}x{1} vs {2}x{3}")]
    SizeMismatch(u32, u32, u32, u32),
    /// A polygon with fewer coordinates than pycocotools accepts.
    #[error(
        "polygon has {0} coordinates; pycocotools needs more than 4 in the first part and at least 2 in the others"
    )]
    PolygonTooShort(usize),
    /// An `[x, y, w, h]` box that is not four finite numbers.
    #[error("bounding box must be four finite numbers")]
    BadBox,
}

/// A COCO run-length encoded binary mask.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rle {
    /// Image height in pixels (`size[0]` in COCO JSON).
    pub height: u32,
    /// Image width in pixels (`size[1]` in COCO JSON).
    pub width: u32,
    /// Alternating run lengths over the column-major pixel order, zeros first.
    pub counts: Vec<u32>,
}

/// The `counts` field of a COCO RLE as it appears in JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RleCounts {
    /// The compressed string form (`"counts": "0R2..."`).
    Compressed(String),
    /// The uncompressed list form used for COCO crowd annotations.
    Uncompressed(Vec<u32>),
}

/// A COCO RLE as it appears in JSON: `{"size": [h, w], "counts": ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RleJson {
    /// `[height, width]`.
    pub size: [u32; 2],
    /// Compressed string or uncompressed run list.
    pub counts: RleCounts,
}

impl Rle {
    /// An all-background mask.
    pub fn empty(height: u32, width: u32) -> Rle {
        Rle {
            height,
            width,
            counts: vec![height * width],
        }
    }

    /// Builds an RLE from raw counts, checking that they cover `height × width` pixels.
    pub fn from_counts(height: u32, width: u32, counts: Vec<u32>) -> Result<Rle, RleError> {
        let r = Rle {
            height,
            width,
            counts,
        };
        r.validate()?;
        Ok(r)
    }

    /// Number of pixels, `height × width`.
    pub fn num_pixels(&self) -> u64 {
        self.height as u64 * self.width as u64
    }

    /// Checks that the runs add up to `height × width`.
    pub fn validate(&self) -> Result<(), RleError> {
        let sum: u64 = self.counts.iter().map(|&c| c as u64).sum();
        if sum != self.num_pixels() {
            return Err(RleError::WrongCounts {
                sum,
                height: self.height,
                width: self.width,
                expected: self.num_pixels(),
            });
        }
        Ok(())
    }

    /// Encodes a row-major mask (non-zero = foreground), like `pycocotools.mask.encode`.
    pub fn encode(mask: &[u8], height: u32, width: u32) -> Result<Rle, RleError> {
        let (h, w) = (height as usize, width as usize);
        if mask.len() != h * w {
            return Err(RleError::MaskSize {
                len: mask.len(),
                height,
                width,
            });
        }
        let mut counts = Vec::new();
        let mut prev = false;
        let mut run: u32 = 0;
        for x in 0..w {
            for y in 0..h {
                let v = mask[y * w + x] != 0;
                if v != prev {
                    counts.push(run);
                    run = 0;
                    prev = v;
                }
                run += 1;
            }
        }
        counts.push(run);
        Ok(Rle {
            height,
            width,
            counts,
        })
    }

    /// Encodes a row-major boolean mask.
    pub fn encode_bool(mask: &[bool], height: u32, width: u32) -> Result<Rle, RleError> {
        let (h, w) = (height as usize, width as usize);
        if mask.len() != h * w {
            return Err(RleError::MaskSize {
                len: mask.len(),
                height,
                width,
            });
        }
        let mut counts = Vec::new();
        let mut prev = false;
        let mut run: u32 = 0;
        for x in 0..w {
            for y in 0..h {
                let v = mask[y * w + x];
                if v != prev {
                    counts.push(run);
                    run = 0;
                    prev = v;
                }
                run += 1;
            }
        }
        counts.push(run);
        Ok(Rle {
            height,
            width,
            counts,
        })
    }

    /// Decodes into a row-major `0/1` mask of `height × width` bytes.
    ///
    /// Runs beyond `height × width` pixels are ignored, missing ones read as background;
    /// call [`Rle::validate`] first to reject such RLEs.
    pub fn decode(&self) -> Vec<u8> {
        let (h, w) = (self.height as usize, self.width as usize);
        let mut out = vec![0u8; h * w];
        self.for_each_run(|start, len| {
            for p in start..start + len {
                let (x, y) = (p / h.max(1), p % h.max(1));
                out[y * w + x] = 1;
            }
        });
        out
    }

    /// Decodes into a column-major `0/1` mask (the layout `pycocotools.mask.decode` returns).
    pub fn decode_col_major(&self) -> Vec<u8> {
        let n = self.num_pixels() as usize;
        let mut out = vec![0u8; n];
        self.for_each_run(|start, len| out[start..start + len].fill(1));
        out
    }

    /// Calls `f(start, len)` for every foreground run (column-major pixel offsets),
    /// clipped to the mask.
    pub fn for_each_run(&self, mut f: impl FnMut(usize, usize)) {
        let n = self.num_pixels() as usize;
        let mut pos = 0usize;
        for (j, &c) in self.counts.iter().enumerate() {
            let c = c as usize;
            if j % 2 == 1 && c > 0 && pos < n {
                f(pos, c.min(n - pos));
            }
            pos = pos.saturating_add(c);
        }
    }

    /// Foreground pixel count (`rleArea`: the sum of the odd runs).
    pub fn area(&self) -> u64 {
        self.counts
            .iter()
            .skip(1)
            .step_by(2)
            .map(|&c| c as u64)
            .sum()
    }

    /// Bounding box `[x, y, w, h]` exactly as `rleToBbox` computes it.
    pub fn to_bbox(&self) -> [f64; 4] {
        let h = self.height;
        let m = (self.counts.len() / 2) * 2;
        if m == 0 || h == 0 {
            return [0.0; 4];
        }
        let (mut xs, mut ys, mut xe, mut ye) = (self.width, h, 0u32, 0u32);
        let mut cc: u32 = 0;
        let mut xp: u32 = 0;
        for j in 0..m {
            cc = cc.wrapping_add(self.counts[j]);
            let t = cc.wrapping_sub((j % 2) as u32);
            let y = t % h;
            let x = (t - y) / h;
            if j % 2 == 0 {
                xp = x;
            } else if xp < x {
                ys = 0;
                ye = h - 1;
            }
            xs = xs.min(x);
            xe = xe.max(x);
            ys = ys.min(y);
            ye = ye.max(y);
        }
        [
            xs as f64,
            ys as f64,
            xe.wrapping_sub(xs).wrapping_add(1) as f64,
            ye.wrapping_sub(ys).wrapping_add(1) as f64,
        ]
    }

    /// Decodes a compressed counts string (`rleFrString`), validating it.
    pub fn from_compressed(s: &str, height: u32, width: u32) -> Result<Rle, RleError> {
        let bytes = s.as_bytes();
        let mut counts: Vec<u32> = Vec::with_capacity(bytes.len());
        let mut p = 0usize;
        while p < bytes.len() {
            let mut x: i64 = 0;
            let mut k = 0u32;
            loop {
                let Some(&b) = bytes.get(p) else {
                    return Err(RleError::Truncated);
                };
                if !(48..=111).contains(&b) {
                    let ch = s[p..].chars().next().unwrap_or('?');
                    return Err(RleError::BadChar { ch, pos: p });
                }
                if k >= 12 {
                    return Err(RleError::BadCount {
                        index: counts.len(),
                        value: x,
                    });
                }
                let c = (b - 48) as i64;
                x |= (c & 0x1f) << (5 * k);
                let more = c & 0x20 != 0;
                p += 1;
                k += 1;
                if !more {
                    if c & 0x10 != 0 {
                        x |= -1i64 << (5 * k);
                    }
                    break;
                }
            }
            let m = counts.len();
            if m > 2 {
                x += counts[m - 2] as i64;
            }
            if !(0..=u32::MAX as i64).contains(&x) {
                return Err(RleError::BadCount { index: m, value: x });
            }
            counts.push(x as u32);
        }
        Rle::from_counts(height, width, counts)
    }

    /// The compressed counts string (`rleToString`).
    pub fn to_compressed(&self) -> String {
        let mut s = String::with_capacity(self.counts.len() * 2);
        for i in 0..self.counts.len() {
            let mut x = self.counts[i] as i64;
            if i > 2 {
                x -= self.counts[i - 2] as i64;
            }
            loop {
                let mut c = (x & 0x1f) as u8;
                x >>= 5;
                let more = if c & 0x10 != 0 { x != -1 } else { x != 0 };
                if more {
                    c |= 0x20;
                }
                s.push((c + 48) as char);
                if !more {
                    break;
                }
            }
        }
        s
    }

    /// Parses the JSON form, validating the size against `height × width` when given.
    pub fn from_json(j: &RleJson) -> Result<Rle, RleError> {
        let [h, w] = j.size;
        match &j.counts {
            RleCounts::Compressed(s) => Rle::from_compressed(s, h, w),
            RleCounts::Uncompressed(c) => Rle::from_counts(h, w, c.clone()),
        }
    }

    /// The compressed JSON form, as `pycocotools` writes it.
    pub fn to_json(&self) -> RleJson {
        RleJson {
            size: [self.height, self.width],
            counts: RleCounts::Compressed(self.to_compressed()),
        }
    }

    /// Rasterises one polygon `[x0, y0, x1, y1, ...]` exactly as `rleFrPoly` does.
    ///
    /// An odd trailing coordinate is ignored (as `int(len(p)/2)` does). Polygons with fewer
    /// than 6 coordinates are rejected: `pycocotools.frPyObjects` either fails on them or
    /// treats a 4-number list as a box.
    pub fn from_polygon(xy: &[f64], height: u32, width: u32) -> Result<Rle, RleError> {
        if xy.len() < 6 {
            return Err(RleError::PolygonTooShort(xy.len()));
        }
        Ok(fr_poly(xy, xy.len() / 2, height, width))
    }

    /// Rasterises a multi-part polygon and merges the parts (COCO `annToRLE` for polygons).
    ///
    /// As `frPyObjects`: the list must not be empty and its first part must have more than
    /// 4 coordinates; later parts need at least one point.
    pub fn from_polygons(polys: &[Vec<f64>], height: u32, width: u32) -> Result<Rle, RleError> {
        match polys.first() {
            None => return Err(RleError::PolygonTooShort(0)),
            Some(p) if p.len() <= 4 => return Err(RleError::PolygonTooShort(p.len())),
            _ => {}
        }
        let parts = polys
            .iter()
            .map(|p| Rle::from_polygon(p, height, width))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Rle::merge(&parts, false))
    }

    /// Rasterises an `[x, y, w, h]` box (`rleFrBbox`).
    pub fn from_bbox(bb: [f64; 4], height: u32, width: u32) -> Result<Rle, RleError> {
        if bb.iter().any(|v| !v.is_finite()) {
            return Err(RleError::BadBox);
        }
        let (xs, ys) = (bb[0], bb[1]);
        let (xe, ye) = (xs + bb[2], ys + bb[3]);
        Ok(fr_poly(&[xs, ys, xs, ye, xe, ye, xe, ys], 4, height, width))
    }

    /// Union (`intersect = false`) or intersection of masks (`rleMerge`).
    ///
    /// Masks of different sizes give an empty `0×0` RLE, as in `maskApi.c`.
    pub fn merge(rles: &[Rle], intersect: bool) -> Rle {
        let Some(first) = rles.first() else {
            return Rle {
                height: 0,
                width: 0,
                counts: vec![],
            };
        };
        if rles.len() == 1 {
            return first.clone();
        }
        let (mut h, mut w) = (first.height, first.width);
        let mut cnts = first.counts.clone();
        for b in &rles[1..] {
            if b.height != h || b.width != w {
                h = 0;
                w = 0;
                cnts.clear();
                break;
            }
            cnts = merge_two(&cnts, &b.counts, intersect);
        }
        Rle {
            height: h,
            width: w,
            counts: cnts,
        }
    }
}

fn merge_two(a: &[u32], b: &[u32], intersect: bool) -> Vec<u32> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (am, bm) = (a.len(), b.len());
    let mut ca = a.first().copied().unwrap_or(0);
    let mut cb = b.first().copied().unwrap_or(0);
    let (mut v, mut va, mut vb) = (false, false, false);
    let (mut ia, mut ib) = (1usize, 1usize);
    let mut cc: u32 = 0;
    let mut ct: u64 = 1;
    while ct > 0 {
        let c = ca.min(cb);
        cc = cc.wrapping_add(c);
        ct = 0;
        ca -= c;
        if ca == 0 && ia < am {
            ca = a[ia];
            ia += 1;
            va = !va;
        }
        ct += ca as u64;
        cb -= c;
        if cb == 0 && ib < bm {
            cb = b[ib];
            ib += 1;
            vb = !vb;
        }
        ct += cb as u64;
        let vp = v;
        v = if intersect { va && vb } else { va || vb };
        if v != vp || ct == 0 {
            out.push(cc);
            cc = 0;
        }
    }
    out
}

/// C's `(int)` conversion of a double as x86-64 performs it (`cvttsd2si`): truncation
/// toward zero, and `INT_MIN` for NaN and out-of-range values.
fn c_int(x: f64) -> i32 {
    if x.is_nan() || x >= 2147483648.0 || x <= -2147483649.0 {
        i32::MIN
    } else {
        x as i32
    }
}

/// `rleFrPoly` from `maskApi.c`, step by step.
fn fr_poly(xy: &[f64], k: usize, h: u32, w: u32) -> Rle {
    let scale = 5.0f64;
    let mut x: Vec<i32> = (0..k).map(|j| c_int(scale * xy[j * 2] + 0.5)).collect();
    let mut y: Vec<i32> = (0..k).map(|j| c_int(scale * xy[j * 2 + 1] + 0.5)).collect();
    x.push(x[0]);
    y.push(y[0]);
    let mut u: Vec<i32> = Vec::new();
    let mut v: Vec<i32> = Vec::new();
    for j in 0..k {
        let (mut xs, mut xe, mut ys, mut ye) = (x[j], x[j + 1], y[j], y[j + 1]);
        let dx = xe.wrapping_sub(xs).wrapping_abs();
        let dy = ys.wrapping_sub(ye).wrapping_abs();
        let flip = (dx >= dy && xs > xe) || (dx < dy && ys > ye);
        if flip {
            std::mem::swap(&mut xs, &mut xe);
            std::mem::swap(&mut ys, &mut ye);
        }
        let s = if dx >= dy {
            ye.wrapping_sub(ys) as f64 / dx as f64
        } else {
            xe.wrapping_sub(xs) as f64 / dy as f64
        };
        if dx >= dy {
            for d in 0..=dx {
                let t = if flip { dx - d } else { d };
                u.push(t.wrapping_add(xs));
                v.push(c_int(ys as f64 + s * t as f64 + 0.5));
            }
        } else {
            for d in 0..=dy {
                let t = if flip { dy - d } else { d };
                v.push(t.wrapping_add(ys));
                u.push(c_int(xs as f64 + s * t as f64 + 0.5));
            }
        }
    }
    // points along the y-boundary, downsampled
    let mut bx: Vec<i32> = Vec::new();
    let mut by: Vec<i32> = Vec::new();
    let wm1 = (w as u64).wrapping_sub(1) as f64;
    for j in 1..u.len() {
        if u[j] != u[j - 1] {
            let mut xd = (if u[j] < u[j - 1] { u[j] } else { u[j] - 1 }) as f64;
            xd = (xd + 0.5) / scale - 0.5;
            if xd.floor() != xd || xd < 0.0 || xd > wm1 {
                continue;
            }
            let mut yd = (if v[j] < v[j - 1] { v[j] } else { v[j - 1] }) as f64;
            yd = (yd + 0.5) / scale - 0.5;
            if yd < 0.0 {
                yd = 0.0;
            } else if yd > h as f64 {
                yd = h as f64;
            }
            yd = yd.ceil();
            bx.push(c_int(xd));
            by.push(c_int(yd));
        }
    }
    let mut a: Vec<u32> = bx
        .iter()
        .zip(&by)
        .map(|(&xx, &yy)| xx.wrapping_mul(h as i32).wrapping_add(yy) as u32)
        .collect();
    a.push((h as u64 * w as u64) as u32);
    a.sort_unstable();
    let mut p: u32 = 0;
    for aj in a.iter_mut() {
        let t = *aj;
        *aj = aj.wrapping_sub(p);
        p = t;
    }
    let mut b: Vec<u32> = Vec::with_capacity(a.len());
    let mut j = 0usize;
    b.push(a[j]);
    j += 1;
    while j < a.len() {
        if a[j] > 0 {
            b.push(a[j]);
            j += 1;
        } else {
            j += 1;
            if j < a.len() {
                let last = b.len() - 1;
                b[last] = b[last].wrapping_add(a[j]);
                j += 1;
            }
        }
    }
    Rle {
        height: h,
        width: w,
        counts: b,
    }
}

/// `bbIou` for one pair: the box-overlap pre-filter that `rleIou` applies.
fn bb_iou(d: &[f64; 4], g: &[f64; 4], crowd: bool) -> f64 {
    let ga = g[2] * g[3];
    let da = d[2] * d[3];
    let w = (d[2] + d[0]).min(g[2] + g[0]) - d[0].max(g[0]);
    if w <= 0.0 {
        return 0.0;
    }
    let h = (d[3] + d[1]).min(g[3] + g[1]) - d[1].max(g[1]);
    if h <= 0.0 {
        return 0.0;
    }
    let i = w * h;
    let u = if crowd { da } else { da + ga - i };
    i / u
}

/// Intersection and union pixel counts of two equally sized RLEs (the `rleIou` walk).
pub fn intersection_union(dt: &Rle, gt: &Rle) -> (u64, u64) {
    let (ka, kb) = (dt.counts.len(), gt.counts.len());
    let mut ca = dt.counts.first().copied().unwrap_or(0);
    let mut cb = gt.counts.first().copied().unwrap_or(0);
    let (mut va, mut vb) = (false, false);
    let (mut a, mut b) = (1usize, 1usize);
    let (mut i, mut u) = (0u64, 0u64);
    let mut ct: u64 = 1;
    while ct > 0 {
        let c = ca.min(cb);
        if va || vb {
            u += c as u64;
            if va && vb {
                i += c as u64;
            }
        }
        ct = 0;
        ca -= c;
        if ca == 0 && a < ka {
            ca = dt.counts[a];
            a += 1;
            va = !va;
        }
        ct += ca as u64;
        cb -= c;
        if cb == 0 && b < kb {
            cb = gt.counts[b];
            b += 1;
            vb = !vb;
        }
        ct += cb as u64;
    }
    (i, u)
}

/// IoU of one detection against one ground truth, as `rleIou` computes it.
///
/// For crowd ground truth the denominator is the detection's area. Masks of different
/// sizes give `-1.0`. `dt_box`/`gt_box` are the [`Rle::to_bbox`] boxes (pass them in when
/// computing many pairs so they are computed once).
pub fn iou_one(dt: &Rle, gt: &Rle, crowd: bool, dt_box: &[f64; 4], gt_box: &[f64; 4]) -> f64 {
    if bb_iou(dt_box, gt_box, crowd) <= 0.0 {
        return 0.0;
    }
    if dt.height != gt.height || dt.width != gt.width {
        return -1.0;
    }
    let (i, mut u) = intersection_union(dt, gt);
    if i == 0 {
        u = 1;
    } else if crowd {
        u = dt.area();
    }
    i as f64 / u as f64
}

/// IoU matrix between detections and ground truths (`pycocotools.mask.iou(dt, gt, iscrowd)`).
///
/// Returns a row-major `dt.len() × gt.len()` matrix. `iscrowd` has one flag per ground truth
/// (missing flags mean "not crowd").
pub fn iou(dt: &[Rle], gt: &[Rle], iscrowd: &[bool]) -> Vec<f64> {
    let db: Vec<[f64; 4]> = dt.iter().map(Rle::to_bbox).collect();
    let gb: Vec<[f64; 4]> = gt.iter().map(Rle::to_bbox).collect();
    let mut out = vec![0.0; dt.len() * gt.len()];
    for (d, (dr, dbox)) in dt.iter().zip(&db).enumerate() {
        for (g, (gr, gbox)) in gt.iter().zip(&gb).enumerate() {
            let crowd = iscrowd.get(g).copied().unwrap_or(false);
            out[d * gt.len() + g] = iou_one(dr, gr, crowd, dbox, gbox);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_small() {
        // 3x2 mask, row-major:
        // 1 0
        // 1 1
        // 0 1
        let m = [1u8, 0, 1, 1, 0, 1];
        let r = Rle::encode(&m, 3, 2).unwrap();
        // column-major: 1 1 0 | 0 1 1 -> runs: 0 zeros, 2 ones, 2 zeros, 2 ones
        assert_eq!(r.counts, vec![0, 2, 2, 2]);
        assert_eq!(r.decode(), m.to_vec());
        assert_eq!(r.area(), 4);
        let s = r.to_compressed();
        assert_eq!(Rle::from_compressed(&s, 3, 2).unwrap(), r);
    }

    #[test]
    fn compressed_rejects_garbage() {
        assert!(matches!(
            Rle::from_compressed("0R!", 3, 2),
            Err(RleError::BadChar { pos: 2, .. })
        ));
        assert!(matches!(
            Rle::from_compressed("5", 3, 2),
            Err(RleError::WrongCounts { .. })
        ));
        // '`' = 48 + 0x30: continuation bit set on the last character
        assert_eq!(Rle::from_compressed("`", 1, 1), Err(RleError::Truncated));
    }

    #[test]
    fn merge_and_iou() {
        let a = Rle::encode(&[1, 1, 0, 0], 2, 2).unwrap();
        let b = Rle::encode(&[0, 1, 1, 0], 2, 2).unwrap();
        let u = Rle::merge(&[a.clone(), b.clone()], false);
        assert_eq!(u.decode(), vec![1, 1, 1, 0]);
        let i = Rle::merge(&[a.clone(), b.clone()], true);
        assert_eq!(i.decode(), vec![0, 1, 0, 0]);
        let m = iou(std::slice::from_ref(&a), std::slice::from_ref(&b), &[false]);
        assert!((m[0] - 1.0 / 3.0).abs() < 1e-15);
        let m = iou(&[a], &[b], &[true]);
        assert!((m[0] - 0.5).abs() < 1e-15);
    }
}
