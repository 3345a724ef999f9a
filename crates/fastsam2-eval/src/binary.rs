//! Per-mask binary segmentation metrics (IoU, Dice, pixel accuracy) and threshold sweeps, as
//! fine-tuning validation reports them. Empty prediction and empty ground truth count as a
//! perfect match (IoU = Dice = 1).

/// Pixel counts of a binary prediction against a binary ground truth.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Confusion {
    /// Predicted and true.
    pub tp: u64,
    /// Predicted, not true.
    pub fp: u64,
    /// True, not predicted.
    pub fn_: u64,
    /// Neither.
    pub tn: u64,
}

impl Confusion {
    /// Counts over two masks of equal length.
    ///
    /// # Panics
    /// When the lengths differ.
    pub fn from_masks(pred: &[bool], gt: &[bool]) -> Confusion {
        assert_eq!(
            pred.len(),
            gt.len(),
            "prediction and ground truth sizes differ"
        );
        let mut c = Confusion::default();
        for (&p, &g) in pred.iter().zip(gt) {
            match (p, g) {
                (true, true) => c.tp += 1,
                (true, false) => c.fp += 1,
                (false, true) => c.fn_ += 1,
                (false, false) => c.tn += 1,
            }
        }
        c
    }

    /// Intersection over union.
    pub fn iou(&self) -> f64 {
        let u = self.tp + self.fp + self.fn_;
        if u == 0 {
            1.0
        } else {
            self.tp as f64 / u as f64
        }
    }

    /// Dice coefficient (F1).
    pub fn dice(&self) -> f64 {
        let d = 2 * self.tp + self.fp + self.fn_;
        if d == 0 {
            1.0
        } else {
            2.0 * self.tp as f64 / d as f64
        }
    }

    /// Fraction of correctly classified pixels.
    pub fn pixel_accuracy(&self) -> f64 {
        let n = self.tp + self.fp + self.fn_ + self.tn;
        if n == 0 {
            1.0
        } else {
            (self.tp + self.tn) as f64 / n as f64
        }
    }
}

/// Confusion counts of `scores > t` against `gt` for every threshold `t` (one pass; the
/// thresholds need not be sorted).
///
/// # Panics
/// When the lengths differ.
pub fn threshold_sweep(scores: &[f32], gt: &[bool], thresholds: &[f32]) -> Vec<Confusion> {
    assert_eq!(
        scores.len(),
        gt.len(),
        "scores and ground truth sizes differ"
    );
    let mut out = vec![Confusion::default(); thresholds.len()];
    for (&s, &g) in scores.iter().zip(gt) {
        for (c, &t) in out.iter_mut().zip(thresholds) {
            match (s > t, g) {
                (true, true) => c.tp += 1,
                (true, false) => c.fp += 1,
                (false, true) => c.fn_ += 1,
                (false, false) => c.tn += 1,
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_scores() {
        let p = [true, true, false, false, true];
        let g = [true, false, true, false, true];
        let c = Confusion::from_masks(&p, &g);
        assert_eq!(
            c,
            Confusion {
                tp: 2,
                fp: 1,
                fn_: 1,
                tn: 1
            }
        );
        assert!((c.iou() - 0.5).abs() < 1e-12);
        assert!((c.dice() - 4.0 / 6.0).abs() < 1e-12);
        assert!((c.pixel_accuracy() - 0.6).abs() < 1e-12);
        assert_eq!(Confusion::from_masks(&[false], &[false]).iou(), 1.0);
    }

    #[test]
    fn sweep_matches_per_threshold_counts() {
        let s = [0.9f32, 0.2, 0.6, -1.0, 0.4];
        let g = [true, false, true, false, false];
        let th = [0.5f32, 0.0, 0.95];
        let sw = threshold_sweep(&s, &g, &th);
        for (c, &t) in sw.iter().zip(&th) {
            let p: Vec<bool> = s.iter().map(|&v| v > t).collect();
            assert_eq!(*c, Confusion::from_masks(&p, &g));
        }
    }
}
