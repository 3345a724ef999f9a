//! Row-packed binary masks (64 pixels per word) for fast counting, boundaries and dilation.

/// A binary mask stored as rows of `u64` words (bit `x % 64` of word `x / 64`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BitMask {
    width: usize,
    height: usize,
    words: usize,
    bits: Vec<u64>,
}

impl BitMask {
    /// An empty (all background) mask.
    pub fn new(width: usize, height: usize) -> BitMask {
        let words = width.div_ceil(64);
        BitMask {
            width,
            height,
            words,
            bits: vec![0; words * height],
        }
    }

    /// Builds a mask from row-major pixels: foreground where `pred(pixel)` holds.
    pub fn from_fn<T: Copy>(
        width: usize,
        height: usize,
        data: &[T],
        pred: impl Fn(T) -> bool,
    ) -> BitMask {
        let mut m = BitMask::new(width, height);
        for y in 0..height {
            let row = &data[y * width..(y + 1) * width];
            let out = &mut m.bits[y * m.words..(y + 1) * m.words];
            for (x, &v) in row.iter().enumerate() {
                if pred(v) {
                    out[x >> 6] |= 1u64 << (x & 63);
                }
            }
        }
        m
    }

    /// One mask per label `1..=n` of a label image, built in a single pass.
    pub fn split_labels(width: usize, height: usize, labels: &[u8], n: usize) -> Vec<BitMask> {
        let mut masks = vec![BitMask::new(width, height); n];
        for y in 0..height {
            let row = &labels[y * width..(y + 1) * width];
            for (x, &v) in row.iter().enumerate() {
                let v = v as usize;
                if v >= 1 && v <= n {
                    let m = &mut masks[v - 1];
                    m.bits[y * m.words + (x >> 6)] |= 1u64 << (x & 63);
                }
            }
        }
        masks
    }

    /// Width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// Words of row `y`.
    pub fn row(&self, y: usize) -> &[u64] {
        &self.bits[y * self.words..(y + 1) * self.words]
    }

    fn row_mut(&mut self, y: usize) -> &mut [u64] {
        &mut self.bits[y * self.words..(y + 1) * self.words]
    }

    /// Pixel value.
    pub fn get(&self, x: usize, y: usize) -> bool {
        self.bits[y * self.words + (x >> 6)] >> (x & 63) & 1 == 1
    }

    /// Sets a pixel.
    pub fn set(&mut self, x: usize, y: usize, v: bool) {
        let w = &mut self.bits[y * self.words + (x >> 6)];
        if v {
            *w |= 1u64 << (x & 63);
        } else {
            *w &= !(1u64 << (x & 63));
        }
    }

    /// Foreground pixel count.
    pub fn count(&self) -> u64 {
        self.bits.iter().map(|w| w.count_ones() as u64).sum()
    }

    /// Whether no pixel is set.
    pub fn is_empty(&self) -> bool {
        self.bits.iter().all(|&w| w == 0)
    }

    /// `(|a ∧ b|, |a ∨ b|)`.
    pub fn inter_union(&self, other: &BitMask) -> (u64, u64) {
        let mut i = 0u64;
        let mut u = 0u64;
        for (a, b) in self.bits.iter().zip(&other.bits) {
            i += (a & b).count_ones() as u64;
            u += (a | b).count_ones() as u64;
        }
        (i, u)
    }

    /// `|a ∧ b|`.
    pub fn count_and(&self, other: &BitMask) -> u64 {
        self.bits
            .iter()
            .zip(&other.bits)
            .map(|(a, b)| (a & b).count_ones() as u64)
            .sum()
    }

    /// Row-major booleans.
    pub fn to_bools(&self) -> Vec<bool> {
        let mut v = Vec::with_capacity(self.width * self.height);
        for y in 0..self.height {
            for x in 0..self.width {
                v.push(self.get(x, y));
            }
        }
        v
    }

    /// The boundary map of `davis2017`'s `_seg2bmap` (1-pixel boundaries offset half a pixel
    /// towards the origin): `seg ^ east | seg ^ south | seg ^ south-east`, with the last row
    /// compared only eastwards, the last column only southwards and the corner pixel cleared.
    pub fn seg2bmap(&self) -> BitMask {
        let (w, h, nw) = (self.width, self.height, self.words);
        let mut out = BitMask::new(w, h);
        if w == 0 || h == 0 {
            return out;
        }
        let last_word = (w - 1) >> 6;
        let last_bit = 1u64 << ((w - 1) & 63);
        let mut east = vec![0u64; nw];
        let mut south_east = vec![0u64; nw];
        for y in 0..h {
            let seg = self.row(y);
            shift_east(seg, &mut east);
            let o = out.row_mut(y);
            if y + 1 < h {
                let south = self.row(y + 1);
                shift_east(south, &mut south_east);
                for i in 0..nw {
                    o[i] = (seg[i] ^ east[i]) | (seg[i] ^ south[i]) | (seg[i] ^ south_east[i]);
                }
                // last column: seg ^ south only
                let v = (seg[last_word] ^ south[last_word]) & last_bit;
                o[last_word] = (o[last_word] & !last_bit) | v;
            } else {
                for i in 0..nw {
                    o[i] = seg[i] ^ east[i];
                }
                o[last_word] &= !last_bit;
            }
            // bits past the width are never set: seg has none there and shift_east brings none
        }
        out
    }
}

/// `out[x] = row[x + 1]`, with zero shifted in past the last pixel.
fn shift_east(row: &[u64], out: &mut [u64]) {
    let n = row.len();
    for i in 0..n {
        let next = if i + 1 < n { row[i + 1] << 63 } else { 0 };
        out[i] = (row[i] >> 1) | next;
    }
}

/// A disk structuring element as `skimage.morphology.disk(r)` builds it: the offsets with
/// `dx² + dy² ≤ r²`, stored as the half-width of each row `dy ∈ [-r, r]`.
#[derive(Debug, Clone)]
pub struct Disk {
    radius: usize,
    half_widths: Vec<usize>,
}

impl Disk {
    /// Disk of integer radius `r`.
    pub fn new(radius: usize) -> Disk {
        let r2 = (radius * radius) as i64;
        let half_widths = (-(radius as i64)..=radius as i64)
            .map(|dy| {
                let rem = r2 - dy * dy;
                let mut k = (rem as f64).sqrt() as i64;
                while k * k > rem {
                    k -= 1;
                }
                while (k + 1) * (k + 1) <= rem {
                    k += 1;
                }
                k as usize
            })
            .collect();
        Disk {
            radius,
            half_widths,
        }
    }

    /// Radius.
    pub fn radius(&self) -> usize {
        self.radius
    }

    /// Number of pixels in the disk.
    pub fn area(&self) -> usize {
        self.half_widths.iter().map(|k| 2 * k + 1).sum()
    }

    /// Counts the pixels of `target` that lie within the disk around some pixel of `source`,
    /// i.e. `|target ∧ dilate(source, disk)|` — what `cv2.dilate` with this kernel followed
    /// by a product and a sum computes (the kernel is symmetric, pixels outside the image
    /// never contribute).
    pub fn count_covered(&self, source: &BitMask, target: &BitMask) -> u64 {
        let (w, h, nw) = (source.width, source.height, source.words);
        let r = self.radius;
        let nonzero_rows = |m: &BitMask| -> Option<(usize, usize)> {
            let first = (0..h).find(|&y| m.row(y).iter().any(|&v| v != 0))?;
            let last = (0..h).rev().find(|&y| m.row(y).iter().any(|&v| v != 0))?;
            Some((first, last))
        };
        let (Some((s0, s1)), Some((t0, t1))) = (nonzero_rows(source), nonzero_rows(target)) else {
            return 0;
        };
        // rows of the dilated source that can meet the target
        let a0 = s0.saturating_sub(r).max(t0);
        let a1 = (s1 + r).min(h - 1).min(t1);
        if a0 > a1 {
            return 0;
        }
        let mut acc = vec![0u64; (a1 - a0 + 1) * nw];
        let max_k = self.half_widths.iter().copied().max().unwrap_or(0);
        let mut levels = vec![0u64; (max_k + 1) * nw];
        let pad = r.div_ceil(64);
        for sy in s0..=s1 {
            let row = source.row(sy);
            let Some(lo) = row.iter().position(|&v| v != 0) else {
                continue;
            };
            let hi = row.iter().rposition(|&v| v != 0).unwrap_or(lo);
            // only affected rows of acc matter
            let y_lo = sy.saturating_sub(r).max(a0);
            let y_hi = (sy + r).min(a1);
            if y_lo > y_hi {
                continue;
            }
            let (wl, wh) = (lo.saturating_sub(pad), (hi + pad).min(nw - 1));
            levels[..nw].copy_from_slice(row);
            for k in 1..=max_k {
                let (prev, cur) = levels.split_at_mut(k * nw);
                dilate_row_1_range(&prev[(k - 1) * nw..], &mut cur[..nw], w, wl, wh);
            }
            for y in y_lo..=y_hi {
                let dy = y as i64 - sy as i64;
                let k = self.half_widths[(dy + r as i64) as usize];
                let src = &levels[k * nw..(k + 1) * nw];
                let dst = &mut acc[(y - a0) * nw..(y - a0 + 1) * nw];
                for i in wl..=wh {
                    dst[i] |= src[i];
                }
            }
        }
        let mut total = 0u64;
        for y in a0..=a1 {
            let t = target.row(y);
            let a = &acc[(y - a0) * nw..(y - a0 + 1) * nw];
            total += a
                .iter()
                .zip(t)
                .map(|(a, b)| (a & b).count_ones() as u64)
                .sum::<u64>();
        }
        total
    }
}

/// One horizontal dilation step (`row | row << 1 | row >> 1` within the row), restricted to words `wl..=wh` (the others are zero in `row`'s support).
fn dilate_row_1_range(row: &[u64], out: &mut [u64], width: usize, wl: usize, wh: usize) {
    let n = row.len();
    // words outside wl..=wh are zero in the true row (they may hold stale data in `row`)
    for i in wl..=wh {
        let left_carry = if i > wl { row[i - 1] >> 63 } else { 0 };
        let right_carry = if i < wh { row[i + 1] << 63 } else { 0 };
        out[i] = row[i] | (row[i] << 1) | left_carry | (row[i] >> 1) | right_carry;
    }
    let rem = width & 63;
    if rem != 0 && wh == n - 1 {
        out[n - 1] &= (1u64 << rem) - 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_matches_skimage() {
        // skimage.morphology.disk(8).sum() == 197, disk(1).sum() == 5
        assert_eq!(Disk::new(8).area(), 197);
        assert_eq!(Disk::new(1).area(), 5);
        assert_eq!(Disk::new(0).area(), 1);
    }

    #[test]
    fn covered_counts_brute_force() {
        let (w, h) = (70, 9);
        let mut s = BitMask::new(w, h);
        let mut t = BitMask::new(w, h);
        s.set(63, 4, true);
        s.set(0, 0, true);
        for x in 0..w {
            for y in 0..h {
                if (x * 7 + y * 3) % 5 == 0 {
                    t.set(x, y, true);
                }
            }
        }
        for r in [1usize, 2, 3, 8] {
            let d = Disk::new(r);
            let mut brute = 0;
            for y in 0..h {
                for x in 0..w {
                    if !t.get(x, y) {
                        continue;
                    }
                    let hit = [(63i64, 4i64), (0, 0)].iter().any(|&(sx, sy)| {
                        (sx - x as i64).pow(2) + (sy - y as i64).pow(2) <= (r * r) as i64
                    });
                    brute += hit as u64;
                }
            }
            assert_eq!(d.count_covered(&s, &t), brute, "r={r}");
        }
    }

    #[test]
    fn covered_counts_random_brute_force() {
        let mut state = 12345u64;
        let mut rnd = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for case in 0..20 {
            let (w, h) = (40 + (rnd() % 200) as usize, 5 + (rnd() % 40) as usize);
            let mut s = BitMask::new(w, h);
            let mut t = BitMask::new(w, h);
            let density = 1 + rnd() % 40;
            for y in 0..h {
                for x in 0..w {
                    if rnd() % 1000 < density {
                        s.set(x, y, true);
                    }
                    if rnd() % 5 == 0 {
                        t.set(x, y, true);
                    }
                }
            }
            let r = 1 + (rnd() % 9) as usize;
            let mut brute = 0;
            for y in 0..h {
                for x in 0..w {
                    if !t.get(x, y) {
                        continue;
                    }
                    let hit = (y.saturating_sub(r)..=(y + r).min(h - 1)).any(|sy| {
                        (x.saturating_sub(r)..=(x + r).min(w - 1)).any(|sx| {
                            s.get(sx, sy)
                                && (sx as i64 - x as i64).pow(2) + (sy as i64 - y as i64).pow(2)
                                    <= (r * r) as i64
                        })
                    });
                    brute += hit as u64;
                }
            }
            assert_eq!(
                Disk::new(r).count_covered(&s, &t),
                brute,
                "case {case} r={r} {w}x{h}"
            );
        }
    }

    #[test]
    fn seg2bmap_rules() {
        // 3x3 with a single pixel in the middle
        let mut m = BitMask::new(3, 3);
        m.set(1, 1, true);
        let b = m.seg2bmap();
        // pixel (0,0): seg=0, se=1 -> 1; (1,0): s=1 -> 1; (2,0): last column, seg^south = 0
        // (0,1): e=1 -> 1; (1,1): seg=1, e=0 -> 1; (2,1): last col 0^0
        // last row: (0,2): 0^0=0, (1,2): 0, corner 0
        let expect = [[1, 1, 0], [1, 1, 0], [0, 0, 0]];
        for (y, row) in expect.iter().enumerate() {
            for (x, &e) in row.iter().enumerate() {
                assert_eq!(b.get(x, y) as u8, e, "({x},{y})");
            }
        }
    }
}
