//! Metrics records, their files (`metrics.jsonl`, `train_metrics.csv`, `val_metrics.csv`) and
//! the loss / IoU plot (`curves.png`).

use std::io::Write;
use std::path::Path;

use fastsam2_core::image_io::RgbImage;
use serde::{Deserialize, Serialize};

use crate::error::{Result, io_err};

/// One optimizer step.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StepRecord {
    pub step: u64,
    pub epoch: u64,
    pub loss: f64,
    pub seg_loss: f64,
    pub iou_loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub samples_per_s: f64,
}

/// One validation pass.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ValRecord {
    pub step: u64,
    pub epoch: u64,
    pub loss: f64,
    /// Means over validation samples at probability 0.5 (logit 0), full image resolution.
    pub iou: f64,
    pub dice: f64,
    pub pixel_accuracy: f64,
    /// The probability threshold with the best mean IoU, and that IoU.
    pub best_threshold: f64,
    pub best_threshold_iou: f64,
    pub samples: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    Train(StepRecord),
    Val(ValRecord),
}

impl Record {
    pub fn step(&self) -> u64 {
        match self {
            Record::Train(r) => r.step,
            Record::Val(r) => r.step,
        }
    }
}

const TRAIN_HEADER: &str = "step,epoch,loss,seg_loss,iou_loss,lr,grad_norm,samples_per_s";
const VAL_HEADER: &str =
    "step,epoch,loss,iou,dice,pixel_accuracy,best_threshold,best_threshold_iou,samples";

fn train_row(r: &StepRecord) -> String {
    format!(
        "{},{},{},{},{},{},{},{}",
        r.step, r.epoch, r.loss, r.seg_loss, r.iou_loss, r.lr, r.grad_norm, r.samples_per_s
    )
}

fn val_row(r: &ValRecord) -> String {
    format!(
        "{},{},{},{},{},{},{},{},{}",
        r.step,
        r.epoch,
        r.loss,
        r.iou,
        r.dice,
        r.pixel_accuracy,
        r.best_threshold,
        r.best_threshold_iou,
        r.samples
    )
}

/// Appends records to the metric files of a run folder.
pub struct MetricsWriter {
    dir: std::path::PathBuf,
    pub records: Vec<Record>,
}

impl MetricsWriter {
    /// Start fresh, or (resume) keep the records up to `keep_until_step` and rewrite the files
    /// with exactly those (steps after the checkpoint are re-run and logged again).
    pub fn open(dir: &Path, keep_until_step: Option<u64>) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut records = Vec::new();
        if let Some(until) = keep_until_step {
            let p = dir.join("metrics.jsonl");
            if let Ok(text) = std::fs::read_to_string(&p) {
                for line in text.lines() {
                    // A torn last line (killed mid-write) is dropped.
                    if let Ok(r) = serde_json::from_str::<Record>(line)
                        && r.step() <= until
                    {
                        records.push(r);
                    }
                }
            }
        }
        let w = Self {
            dir: dir.to_path_buf(),
            records,
        };
        w.rewrite()?;
        Ok(w)
    }

    fn rewrite(&self) -> Result<()> {
        let mut jsonl = String::new();
        let mut tcsv = format!("{TRAIN_HEADER}\n");
        let mut vcsv = format!("{VAL_HEADER}\n");
        for r in &self.records {
            jsonl.push_str(&serde_json::to_string(r).unwrap_or_default());
            jsonl.push('\n');
            match r {
                Record::Train(t) => tcsv.push_str(&(train_row(t) + "\n")),
                Record::Val(v) => vcsv.push_str(&(val_row(v) + "\n")),
            }
        }
        for (name, text) in [
            ("metrics.jsonl", jsonl),
            ("train_metrics.csv", tcsv),
            ("val_metrics.csv", vcsv),
        ] {
            crate::checkpoint::write_atomic(&self.dir.join(name), text.as_bytes())?;
        }
        Ok(())
    }

    fn append(&self, file: &str, line: &str) -> Result<()> {
        let p = self.dir.join(file);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&p)
            .map_err(io_err(&p))?;
        writeln!(f, "{line}").map_err(io_err(&p))
    }

    pub fn push(&mut self, r: Record) -> Result<()> {
        self.append(
            "metrics.jsonl",
            &serde_json::to_string(&r).unwrap_or_default(),
        )?;
        match &r {
            Record::Train(t) => self.append("train_metrics.csv", &train_row(t))?,
            Record::Val(v) => self.append("val_metrics.csv", &val_row(v))?,
        }
        self.records.push(r);
        Ok(())
    }

    /// Draw `curves.png`: training loss (blue) and validation loss (orange) per step on the
    /// left, validation IoU (green) and best-threshold IoU (grey) on the right.
    pub fn plot(&self) -> Result<()> {
        let train: Vec<(f64, f64)> = self
            .records
            .iter()
            .filter_map(|r| match r {
                Record::Train(t) => Some((t.step as f64, t.loss)),
                _ => None,
            })
            .collect();
        let vals: Vec<&ValRecord> = self
            .records
            .iter()
            .filter_map(|r| match r {
                Record::Val(v) => Some(v),
                _ => None,
            })
            .collect();
        let vloss: Vec<(f64, f64)> = vals.iter().map(|v| (v.step as f64, v.loss)).collect();
        let viou: Vec<(f64, f64)> = vals.iter().map(|v| (v.step as f64, v.iou)).collect();
        let vbest: Vec<(f64, f64)> = vals
            .iter()
            .map(|v| (v.step as f64, v.best_threshold_iou))
            .collect();
        let mut c = Canvas::new(900, 360);
        c.panel(
            10,
            "LOSS",
            &[(&train, [31, 119, 180]), (&vloss, [255, 127, 14])],
            None,
        );
        c.panel(
            460,
            "VAL IOU",
            &[(&vbest, [160, 160, 160]), (&viou, [44, 160, 44])],
            Some((0.0, 1.0)),
        );
        let img = RgbImage::from_raw(c.w as u32, c.h as u32, c.px).expect("canvas size");
        let path = self.dir.join("curves.png");
        let tmp = self.dir.join(".curves.png.tmp.png");
        fastsam2_core::overlay::save_png(&img, &tmp).map_err(|e| crate::error::TrainError::Io {
            path: tmp.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        std::fs::rename(&tmp, &path).map_err(io_err(&path))
    }
}

/// Points of a curve and its colour.
type Series<'a> = (&'a Vec<(f64, f64)>, [u8; 3]);

/// A tiny RGB canvas with lines and a 3x5 pixel font.
struct Canvas {
    w: usize,
    h: usize,
    px: Vec<u8>,
}

const FONT: &[(char, [u8; 5])] = &[
    ('0', [7, 5, 5, 5, 7]),
    ('1', [2, 6, 2, 2, 7]),
    ('2', [7, 1, 7, 4, 7]),
    ('3', [7, 1, 7, 1, 7]),
    ('4', [5, 5, 7, 1, 1]),
    ('5', [7, 4, 7, 1, 7]),
    ('6', [7, 4, 7, 5, 7]),
    ('7', [7, 1, 1, 1, 1]),
    ('8', [7, 5, 7, 5, 7]),
    ('9', [7, 5, 7, 1, 7]),
    ('.', [0, 0, 0, 0, 2]),
    ('-', [0, 0, 7, 0, 0]),
    ('e', [0, 7, 7, 4, 7]),
    ('L', [4, 4, 4, 4, 7]),
    ('O', [7, 5, 5, 5, 7]),
    ('S', [7, 4, 7, 1, 7]),
    ('V', [5, 5, 5, 5, 2]),
    ('A', [2, 5, 7, 5, 5]),
    ('I', [7, 2, 2, 2, 7]),
    ('U', [5, 5, 5, 5, 7]),
    (' ', [0, 0, 0, 0, 0]),
];

impl Canvas {
    fn new(w: usize, h: usize) -> Self {
        Self {
            w,
            h,
            px: vec![255; w * h * 3],
        }
    }

    fn set(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if x >= 0 && y >= 0 && (x as usize) < self.w && (y as usize) < self.h {
            let i = (y as usize * self.w + x as usize) * 3;
            self.px[i..i + 3].copy_from_slice(&c);
        }
    }

    fn line(&mut self, (x0, y0): (f64, f64), (x1, y1): (f64, f64), c: [u8; 3]) {
        let n = ((x1 - x0).abs().max((y1 - y0).abs()).ceil() as usize).max(1);
        for i in 0..=n {
            let t = i as f64 / n as f64;
            let (x, y) = (x0 + (x1 - x0) * t, y0 + (y1 - y0) * t);
            self.set(x.round() as i64, y.round() as i64, c);
            self.set(x.round() as i64, y.round() as i64 + 1, c);
        }
    }

    fn text(&mut self, x: i64, y: i64, s: &str, scale: i64) {
        let mut cx = x;
        for ch in s.chars() {
            if let Some((_, rows)) = FONT.iter().find(|(c, _)| *c == ch) {
                for (r, bits) in rows.iter().enumerate() {
                    for b in 0..3 {
                        if bits & (4 >> b) != 0 {
                            for dy in 0..scale {
                                for dx in 0..scale {
                                    self.set(
                                        cx + b * scale + dx,
                                        y + r as i64 * scale + dy,
                                        [0; 3],
                                    );
                                }
                            }
                        }
                    }
                }
            }
            cx += 4 * scale;
        }
    }

    fn panel(
        &mut self,
        x0: usize,
        title: &str,
        series: &[Series<'_>],
        y_range: Option<(f64, f64)>,
    ) {
        let (left, top, pw, ph) = (x0 as f64 + 50.0, 30.0, 370.0, 290.0);
        let pts: Vec<(f64, f64)> = series
            .iter()
            .flat_map(|(s, _)| s.iter().copied())
            .filter(|(_, y)| y.is_finite())
            .collect();
        let (mut xmin, mut xmax) = (0.0f64, 1.0f64);
        let (mut ymin, mut ymax) = y_range.unwrap_or((f64::INFINITY, f64::NEG_INFINITY));
        if !pts.is_empty() {
            xmin = pts.iter().map(|p| p.0).fold(f64::INFINITY, f64::min);
            xmax = pts.iter().map(|p| p.0).fold(f64::NEG_INFINITY, f64::max);
            if y_range.is_none() {
                ymin = pts
                    .iter()
                    .map(|p| p.1)
                    .fold(f64::INFINITY, f64::min)
                    .min(0.0);
                ymax = pts.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
            }
        }
        if !(ymin.is_finite() && ymax.is_finite()) {
            (ymin, ymax) = (0.0, 1.0);
        }
        if xmax <= xmin {
            xmax = xmin + 1.0;
        }
        if ymax <= ymin {
            ymax = ymin + 1.0;
        }
        let grey = [200, 200, 200];
        for i in 0..=4 {
            let y = top + ph * i as f64 / 4.0;
            self.line((left, y), (left + pw, y), grey);
        }
        self.line((left, top), (left, top + ph), [0; 3]);
        self.line((left, top + ph), (left + pw, top + ph), [0; 3]);
        let fmt = |v: f64| {
            if v.abs() >= 1000.0 || (v != 0.0 && v.abs() < 0.01) {
                format!("{v:.1e}")
            } else {
                format!("{v:.2}")
            }
        };
        self.text(x0 as i64 + 2, top as i64 - 2, &fmt(ymax), 2);
        self.text(x0 as i64 + 2, (top + ph) as i64 - 10, &fmt(ymin), 2);
        self.text(
            left as i64,
            (top + ph) as i64 + 8,
            &format!("{}", xmin as u64),
            2,
        );
        let xs = format!("{}", xmax as u64);
        self.text(
            (left + pw) as i64 - 8 * xs.len() as i64,
            (top + ph) as i64 + 8,
            &xs,
            2,
        );
        self.text(left as i64 + 120, 6, title, 3);
        for (s, c) in series {
            let map = |(x, y): (f64, f64)| {
                (
                    left + (x - xmin) / (xmax - xmin) * pw,
                    top + ph - (y.clamp(ymin, ymax) - ymin) / (ymax - ymin) * ph,
                )
            };
            let s: Vec<(f64, f64)> = s.iter().copied().filter(|p| p.1.is_finite()).collect();
            for w in s.windows(2) {
                self.line(map(w[0]), map(w[1]), *c);
            }
            for &p in &s {
                let (x, y) = map(p);
                for dy in -2..=2 {
                    for dx in -2..=2 {
                        if s.len() < 60 {
                            self.set(x as i64 + dx, y as i64 + dy, *c);
                        }
                    }
                }
            }
        }
    }
}
