//! Prompt types (points, boxes, mask inputs) in original-image pixel coordinates, with the
//! validation every entry point shares: a bad prompt is a typed error naming the problem.

/// Errors of prompt validation.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PromptError {
    #[error("point {index} has a non-finite coordinate ({x}, {y})")]
    NonFinitePoint { index: usize, x: f32, y: f32 },
    #[error("point {index} ({x}, {y}) lies outside the {width}x{height} image")]
    PointOutside {
        index: usize,
        x: f32,
        y: f32,
        width: usize,
        height: usize,
    },
    #[error("point {index} has label {label}; labels are 1 (positive) or 0 (negative)")]
    BadLabel { index: usize, label: i32 },
    #[error("box [{x0}, {y0}, {x1}, {y1}] has a non-finite coordinate")]
    NonFiniteBox { x0: f32, y0: f32, x1: f32, y1: f32 },
    #[error("box [{x0}, {y0}, {x1}, {y1}] is inverted: expected x0 <= x1 and y0 <= y1")]
    InvertedBox { x0: f32, y0: f32, x1: f32, y1: f32 },
    #[error("box [{x0}, {y0}, {x1}, {y1}] lies outside the {width}x{height} image")]
    BoxOutside {
        x0: f32,
        y0: f32,
        x1: f32,
        y1: f32,
        width: usize,
        height: usize,
    },
    #[error("mask input has shape {found:?}; expected {expected:?} low-resolution logits")]
    MaskShape {
        found: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error("mask input contains non-finite values")]
    NonFiniteMask,
    #[error("empty prompt: give at least one point, a box or a mask input")]
    Empty,
}

/// A click: pixel coordinates of the original image and its label.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    pub x: f32,
    pub y: f32,
    /// 1 = positive (foreground), 0 = negative (background).
    pub label: i32,
}

impl Point {
    pub fn positive(x: f32, y: f32) -> Self {
        Self { x, y, label: 1 }
    }
    pub fn negative(x: f32, y: f32) -> Self {
        Self { x, y, label: 0 }
    }
}

/// An axis-aligned box `[x0, y0, x1, y1]` in pixel coordinates.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BoxXyxy {
    pub x0: f32,
    pub y0: f32,
    pub x1: f32,
    pub y1: f32,
}

impl BoxXyxy {
    pub fn new(x0: f32, y0: f32, x1: f32, y1: f32) -> Self {
        Self { x0, y0, x1, y1 }
    }
}

/// A previous low-resolution logit mask fed back to the decoder (iterative refinement).
#[derive(Clone, Debug, PartialEq)]
pub struct MaskInput {
    /// Row-major logits, `size * size` values.
    pub logits: Vec<f32>,
    pub size: usize,
}

/// One prompt set: any combination of clicks, one box and a mask input.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Prompt {
    pub points: Vec<Point>,
    pub bbox: Option<BoxXyxy>,
    pub mask: Option<MaskInput>,
}

impl Prompt {
    pub fn points(points: Vec<Point>) -> Self {
        Self {
            points,
            ..Self::default()
        }
    }
    pub fn bbox(b: BoxXyxy) -> Self {
        Self {
            bbox: Some(b),
            ..Self::default()
        }
    }

    /// Check the prompt against an image of `width` x `height` pixels and the model's
    /// low-resolution mask size. Coordinates are continuous pixel coordinates: x in
    /// [0, width], y in [0, height].
    pub fn validate(
        &self,
        width: usize,
        height: usize,
        mask_size: usize,
    ) -> Result<(), PromptError> {
        if self.points.is_empty() && self.bbox.is_none() && self.mask.is_none() {
            return Err(PromptError::Empty);
        }
        let (w, h) = (width as f32, height as f32);
        for (index, p) in self.points.iter().enumerate() {
            if !p.x.is_finite() || !p.y.is_finite() {
                return Err(PromptError::NonFinitePoint {
                    index,
                    x: p.x,
                    y: p.y,
                });
            }
            if p.x < 0.0 || p.y < 0.0 || p.x > w || p.y > h {
                return Err(PromptError::PointOutside {
                    index,
                    x: p.x,
                    y: p.y,
                    width,
                    height,
                });
            }
            if p.label != 0 && p.label != 1 {
                return Err(PromptError::BadLabel {
                    index,
                    label: p.label,
                });
            }
        }
        if let Some(b) = self.bbox {
            let BoxXyxy { x0, y0, x1, y1 } = b;
            if ![x0, y0, x1, y1].iter().all(|v| v.is_finite()) {
                return Err(PromptError::NonFiniteBox { x0, y0, x1, y1 });
            }
            if x1 < x0 || y1 < y0 {
                return Err(PromptError::InvertedBox { x0, y0, x1, y1 });
            }
            if x0 < 0.0 || y0 < 0.0 || x1 > w || y1 > h {
                return Err(PromptError::BoxOutside {
                    x0,
                    y0,
                    x1,
                    y1,
                    width,
                    height,
                });
            }
        }
        if let Some(m) = &self.mask {
            if m.size != mask_size || m.logits.len() != mask_size * mask_size {
                return Err(PromptError::MaskShape {
                    found: vec![m.logits.len() / m.size.max(1), m.size],
                    expected: vec![mask_size, mask_size],
                });
            }
            if m.logits.iter().any(|v| !v.is_finite()) {
                return Err(PromptError::NonFiniteMask);
            }
        }
        Ok(())
    }

    /// Prompts with the same signature can be decoded as one batch.
    pub fn signature(&self) -> (usize, bool, bool) {
        (self.points.len(), self.bbox.is_some(), self.mask.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_problem() {
        let ok = Prompt::points(vec![Point::positive(10.0, 5.0)]);
        assert_eq!(ok.validate(20, 10, 256), Ok(()));
        assert_eq!(
            Prompt::default().validate(20, 10, 256),
            Err(PromptError::Empty)
        );
        let nan = Prompt::points(vec![Point::positive(f32::NAN, 1.0)]);
        assert!(matches!(
            nan.validate(20, 10, 256),
            Err(PromptError::NonFinitePoint { index: 0, .. })
        ));
        let out = Prompt::points(vec![Point::positive(1.0, 1.0), Point::negative(21.0, 1.0)]);
        assert!(matches!(
            out.validate(20, 10, 256),
            Err(PromptError::PointOutside { index: 1, .. })
        ));
        let lab = Prompt::points(vec![Point {
            x: 1.0,
            y: 1.0,
            label: 3,
        }]);
        assert_eq!(
            lab.validate(20, 10, 256),
            Err(PromptError::BadLabel { index: 0, label: 3 })
        );
        let inv = Prompt::bbox(BoxXyxy::new(10.0, 2.0, 5.0, 8.0));
        assert!(matches!(
            inv.validate(20, 10, 256),
            Err(PromptError::InvertedBox { .. })
        ));
        let outb = Prompt::bbox(BoxXyxy::new(0.0, 0.0, 20.0, 10.5));
        assert!(matches!(
            outb.validate(20, 10, 256),
            Err(PromptError::BoxOutside { .. })
        ));
        let full = Prompt::bbox(BoxXyxy::new(0.0, 0.0, 20.0, 10.0));
        assert_eq!(full.validate(20, 10, 256), Ok(()));
        let m = Prompt {
            mask: Some(MaskInput {
                logits: vec![0.0; 64 * 64],
                size: 64,
            }),
            ..Prompt::default()
        };
        assert!(matches!(
            m.validate(20, 10, 256),
            Err(PromptError::MaskShape { .. })
        ));
        let mut logits = vec![0.0; 256 * 256];
        logits[7] = f32::INFINITY;
        let m = Prompt {
            mask: Some(MaskInput { logits, size: 256 }),
            ..Prompt::default()
        };
        assert_eq!(m.validate(20, 10, 256), Err(PromptError::NonFiniteMask));
    }
}
