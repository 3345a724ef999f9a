//! The training loop: micro-batches with gradient accumulation, AdamW with global-norm
//! clipping and the warm-up + cosine schedule, validation every epoch, atomic best / last
//! checkpoints, and exact resume.
//!
//! Determinism: the sample order of epoch `e` is a permutation seeded by `(seed, e)`; the
//! augmentation, prompts and corrective clicks of the sample at position `p` of epoch `e` are
//! seeded by `(seed, e, p)`; the prompt kind and the LoRA dropout masks of micro-batch `a` of
//! step `s` by `(seed, s, a)`. A run resumed from the checkpoint of step `s` therefore makes the
//! same draws as an uninterrupted one, and (with the optimizer state restored) reaches the same
//! weights.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::{Device, Tensor};
use fastsam2_models::common::{tensor_from_vec, tensor_to_vec};
use fastsam2_models::peft::DropoutRng;
use fastsam2_models::sam::Sam;
use fastsam2_predict::postprocess::sam_postprocess;
use rayon::prelude::*;

use crate::batch::{Prepared, SamplePrompt, corrective_click, prepare, prompt_tensors, simulate};
use crate::checkpoint::{self, TrainState};
use crate::config::{Precision, PromptKind, TrainConfig};
use crate::data::{self, Sample, Splits, augment};
use crate::error::{Result, TrainError, io_err};
use crate::loss::{iou_loss, real_iou, segmentation_loss};
use crate::metrics::{MetricsWriter, Record, StepRecord, ValRecord};
use crate::model::{self, ParamCounts, TrainModel};
use crate::optim::{AdamW, grad_norm, lr_at};
use crate::rng::{Rng, derive_seed};

// Purposes of derived seeds.
const ORDER: u64 = 1;
const AUG: u64 = 2;
const PROMPT: u64 = 3;
const KIND: u64 = 4;
const DROP: u64 = 5;
const CLICK: u64 = 6;
const VAL: u64 = 7;

/// How a run starts and stops.
#[derive(Clone, Debug, Default)]
pub struct TrainOptions {
    /// Continue from `output_dir/checkpoints/last.safetensors` when it exists.
    pub resume: bool,
    /// Start over even if the output folder holds a checkpoint.
    pub overwrite: bool,
    /// Stop (after checkpointing) once this many optimizer steps are done.
    pub stop_after_steps: Option<u64>,
    /// Training device (autodiff); default: the CPU backend.
    pub device: Option<Device>,
}

/// Progress events.
pub enum Event<'a> {
    Start {
        total_steps: u64,
        start_step: u64,
        counts: &'a ParamCounts,
    },
    Step(&'a StepRecord),
    Val(&'a ValRecord),
    Message(&'a str),
}

/// Receives progress events (the CLI draws a progress bar).
pub trait Observer {
    fn event(&self, e: Event<'_>);
}

/// An observer that logs through `tracing`.
pub struct LogObserver;

impl Observer for LogObserver {
    fn event(&self, e: Event<'_>) {
        match e {
            Event::Start {
                total_steps,
                start_step,
                counts,
            } => tracing::info!("{}; steps {start_step}..{total_steps}", counts.summary()),
            Event::Step(r) => tracing::info!(
                "step {} loss {:.4} lr {:.2e} |g| {:.3}",
                r.step,
                r.loss,
                r.lr,
                r.grad_norm
            ),
            Event::Val(v) => tracing::info!(
                "val @ step {}: IoU {:.4} Dice {:.4} acc {:.4} loss {:.4} (best threshold {:.2}: IoU {:.4})",
                v.step,
                v.iou,
                v.dice,
                v.pixel_accuracy,
                v.loss,
                v.best_threshold,
                v.best_threshold_iou
            ),
            Event::Message(m) => tracing::info!("{m}"),
        }
    }
}

/// What a finished (or stopped) run reports.
#[derive(Clone, Debug)]
pub struct Summary {
    pub steps: u64,
    pub first_val: Option<ValRecord>,
    pub last_val: Option<ValRecord>,
    pub best_iou: Option<f64>,
    pub exported: Option<PathBuf>,
}

pub struct Trainer {
    pub cfg: TrainConfig,
    pub device: Device,
    pub data: Splits,
    pub model: TrainModel,
    pub opt: AdamW,
    pub step: u64,
    pub steps_per_epoch: u64,
    pub total_steps: u64,
    pub best_iou: Option<f64>,
    pub best_step: Option<u64>,
    pub counts: ParamCounts,
    metrics: Option<MetricsWriter>,
    image_size: usize,
    /// A frozen image encoder on the plain device (no autodiff bookkeeping, inference kernels).
    frozen_encoder: Option<fastsam2_models::sam::ImageEncoder>,
}

impl std::fmt::Debug for Trainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer")
            .field("output_dir", &self.cfg.output_dir)
            .field("step", &self.step)
            .field("total_steps", &self.total_steps)
            .field("train_samples", &self.data.train.len())
            .field("val_samples", &self.data.val.len())
            .finish_non_exhaustive()
    }
}

pub fn last_checkpoint_path(cfg: &TrainConfig) -> PathBuf {
    cfg.output_dir.join("checkpoints").join("last.safetensors")
}

impl Trainer {
    /// Check the config, read and check all data, build the model (or restore it from the last
    /// checkpoint): every input problem is reported here, before the first step.
    pub fn new(cfg: TrainConfig, opts: &TrainOptions) -> Result<Self> {
        cfg.validate()?;
        if cfg.train.precision != Precision::F32 {
            return Err(TrainError::Config(format!(
                "train.precision = {:?}: mixed precision is not available on this backend (burn 0.22 has no autocast for autodiff); use \"f32\"",
                cfg.train.precision
            ).to_lowercase()));
        }
        let device = opts
            .device
            .clone()
            .unwrap_or_else(|| Device::flex().autodiff());
        let data = data::open(&cfg.data, cfg.seed)?;
        let per_step = cfg.train.batch_size * cfg.train.grad_accum;
        let n_micro = data.train.len() / cfg.train.batch_size;
        let steps_per_epoch = (n_micro / cfg.train.grad_accum) as u64;
        if steps_per_epoch == 0 {
            return Err(TrainError::Data(format!(
                "{} training samples are fewer than one optimizer step needs (batch_size x grad_accum = {per_step})",
                data.train.len()
            )));
        }
        let total_steps = match (cfg.train.max_steps, cfg.train.epochs) {
            (Some(s), _) => s,
            (None, Some(e)) => e * steps_per_epoch,
            (None, None) => unreachable!("validated"),
        };
        let ckpt = last_checkpoint_path(&cfg);
        let resume_from = if ckpt.exists() {
            if opts.resume {
                Some(checkpoint::read(&ckpt)?)
            } else if opts.overwrite {
                None
            } else {
                return Err(TrainError::Config(format!(
                    "{} already holds a training checkpoint ({}): resume it (--resume) or start over (--overwrite)",
                    cfg.output_dir.display(),
                    ckpt.display()
                )));
            }
        } else {
            None
        };
        let (model, opt, step, best_iou, best_step) = match resume_from {
            Some(loaded) => {
                if loaded.state.config != cfg {
                    return Err(TrainError::Config(format!(
                        "the config differs from the one {} was trained with; resume with the same config or use another output_dir",
                        ckpt.display()
                    )));
                }
                let rng = DropoutRng::default();
                let sam = model::skeleton(
                    &loaded.state.model_config,
                    &loaded.state.layout,
                    &device,
                    &rng,
                );
                let mut m = TrainModel {
                    sam,
                    config: loaded.state.model_config.clone(),
                    layout: loaded.state.layout.clone(),
                    dropout_rng: rng,
                    source: ckpt.clone(),
                };
                let opt = checkpoint::restore(&loaded, &mut m, &device)?;
                m.sam = model::set_trainable(m.sam, &cfg.strategy);
                let st = &loaded.state;
                (m, opt, st.step, st.best_iou, st.best_step)
            }
            None => {
                let m = model::build(&cfg.model, &cfg.strategy, cfg.seed, &device)?;
                (m, AdamW::default(), 0, None, None)
            }
        };
        let counts = ParamCounts::of(&model.sam);
        let image_size = model.config.prompt_encoder.input_image_size[0];
        let encoder_trains = counts
            .by_component
            .get("image_encoder")
            .is_some_and(|(t, _)| *t > 0);
        let frozen_encoder = (!encoder_trains
            && cfg.strategy.batchnorm == crate::config::BatchNormMode::Frozen)
            .then(|| model.sam.image_encoder.valid());
        Ok(Self {
            cfg,
            device,
            data,
            model,
            opt,
            step,
            steps_per_epoch,
            total_steps,
            best_iou,
            best_step,
            counts,
            metrics: None,
            image_size,
            frozen_encoder,
        })
    }

    fn prepare_sample(&self, s: &Sample, epoch: u64, pos: u64) -> Result<Prepared> {
        let mut rng = Rng::new(self.cfg.seed, &[AUG, epoch, pos]);
        let a = augment(s, &self.cfg.augment, &mut rng);
        let c = &self.model.config;
        prepare(
            &a.image,
            &a.mask,
            self.image_size,
            c.pixel_mean,
            c.pixel_std,
        )
    }

    /// Loss of one micro-batch on the training model (a differentiable scalar) and its parts.
    fn micro_batch(
        &self,
        sam: &Sam,
        prepared: &[Prepared],
        mut prompts: Vec<SamplePrompt>,
        multimask: bool,
        iterations: usize,
        click_rngs: &mut [Rng],
    ) -> (Tensor<1>, f64, f64) {
        let dev = &self.device;
        let b = prepared.len();
        let s = self.image_size;
        let l = s / 4;
        let pixels: Vec<f32> = prepared
            .iter()
            .flat_map(|p| p.pixels.iter().copied())
            .collect();
        let emb = match &self.frozen_encoder {
            Some(enc) => {
                let x = tensor_from_vec(pixels, [b, 3, s, s], &dev.clone().inner());
                Tensor::from_inner(enc.forward(x))
            }
            None => sam
                .image_encoder
                .forward(tensor_from_vec(pixels, [b, 3, s, s], dev)),
        };
        let dense_pe = sam.prompt_encoder.get_dense_pe();
        let target_h: Vec<f32> = prepared
            .iter()
            .flat_map(|p| p.target.iter().copied())
            .collect();
        let valid_h: Vec<f32> = prepared
            .iter()
            .flat_map(|p| p.valid.iter().copied())
            .collect();
        let target = tensor_from_vec(target_h.clone(), [b, 1, l, l], dev);
        let valid = tensor_from_vec(valid_h.clone(), [b, 1, l, l], dev);
        let lc = &self.cfg.loss;
        let mut mask_in: Option<Tensor<4>> = None;
        let mut total: Option<Tensor<1>> = None;
        let (mut seg_sum, mut iou_sum) = (0.0, 0.0);
        for it in 0..=iterations {
            let (points, boxes) = prompt_tensors(&prompts, dev);
            let (sparse, dense) =
                sam.prompt_encoder
                    .forward(points.as_ref(), boxes, mask_in.clone());
            let out = sam.mask_decoder.forward(
                emb.clone(),
                dense_pe.clone(),
                sparse,
                dense,
                multimask && it == 0,
            );
            let k = out.masks.dims()[1];
            let seg = segmentation_loss(lc, out.masks.clone(), target.clone(), valid.clone());
            let logits_h = tensor_to_vec(out.masks.clone().detach());
            let seg_h = tensor_to_vec(seg.clone().detach());
            // Best mask per sample (SAM back-propagates the lowest loss of ambiguous outputs).
            let sel: Vec<usize> = (0..b)
                .map(|i| {
                    (0..k)
                        .min_by(|&x, &y| seg_h[i * k + x].total_cmp(&seg_h[i * k + y]))
                        .unwrap_or(0)
                })
                .collect();
            let onehot: Vec<f32> = (0..b * k)
                .map(|j| if sel[j / k] == j % k { 1.0 } else { 0.0 })
                .collect();
            let onehot = tensor_from_vec(onehot, [b, k], dev);
            let seg_sel = (seg * onehot).sum() / b as f64;
            let mut term = seg_sel.clone();
            seg_sum += seg_sel.clone().detach().into_scalar::<f32>() as f64;
            if lc.iou_weight > 0.0 {
                let real = real_iou(&logits_h, &target_h, &valid_h, b, k);
                let real = tensor_from_vec(real, [b, k], dev);
                let il = iou_loss(lc, out.iou_pred.clone(), real).mean();
                iou_sum += il.clone().detach().into_scalar::<f32>() as f64;
                term = term + il * lc.iou_weight;
            }
            total = Some(match total {
                Some(t) => t + term,
                None => term,
            });
            if it < iterations {
                let n = l * l;
                let mut next = Vec::with_capacity(b * n);
                for i in 0..b {
                    let m = &logits_h[(i * k + sel[i]) * n..(i * k + sel[i] + 1) * n];
                    let (pt, label) = corrective_click(&prepared[i], m, &mut click_rngs[i]);
                    prompts[i].points.push(pt);
                    prompts[i].labels.push(label);
                    next.extend_from_slice(m);
                }
                mask_in = Some(tensor_from_vec(next, [b, 1, l, l], dev));
            }
        }
        let n_it = (iterations + 1) as f64;
        let total = total.expect("at least one iteration") / n_it;
        (total, seg_sum / n_it, iou_sum / n_it)
    }

    /// One optimizer step (all its micro-batches). Returns its record.
    pub fn train_step(&mut self) -> Result<StepRecord> {
        let t0 = Instant::now();
        let cfg = &self.cfg;
        let (bs, accum) = (cfg.train.batch_size, cfg.train.grad_accum);
        let step = self.step;
        let epoch = step / self.steps_per_epoch;
        let in_epoch = step % self.steps_per_epoch;
        let mut order: Vec<usize> = (0..self.data.train.len()).collect();
        Rng::new(cfg.seed, &[ORDER, epoch]).shuffle(&mut order);
        let mut accumulator = GradientsAccumulator::<Sam>::new();
        let (mut loss_sum, mut seg_sum, mut iou_sum) = (0.0, 0.0, 0.0);
        for a in 0..accum {
            let first = ((in_epoch as usize * accum) + a) * bs;
            let positions: Vec<u64> = (first..first + bs).map(|p| p as u64).collect();
            let prepared: Vec<Prepared> = positions
                .par_iter()
                .map(|&p| self.prepare_sample(&self.data.train[order[p as usize]], epoch, p))
                .collect::<Result<_>>()?;
            let kinds = &cfg.prompts.kinds;
            let kind = kinds[Rng::new(cfg.seed, &[KIND, step, a as u64]).below(kinds.len())];
            let prompts: Vec<SamplePrompt> = prepared
                .iter()
                .zip(&positions)
                .map(|(p, &pos)| {
                    let mut r = Rng::new(cfg.seed, &[PROMPT, epoch, pos]);
                    simulate(p, kind, &cfg.prompts, true, &mut r)
                })
                .collect();
            let single_point = kind == PromptKind::Points
                && cfg.prompts.positive_points + cfg.prompts.negative_points == 1;
            let multimask = single_point && cfg.prompts.multimask_single_point;
            let mut click_rngs: Vec<Rng> = positions
                .iter()
                .map(|&p| Rng::new(cfg.seed, &[CLICK, epoch, p]))
                .collect();
            self.model
                .dropout_rng
                .reseed(Some(derive_seed(cfg.seed, &[DROP, step, a as u64])));
            let (loss, seg, iou) = self.micro_batch(
                &self.model.sam,
                &prepared,
                prompts,
                multimask,
                cfg.prompts.iterative_clicks,
                &mut click_rngs,
            );
            let lv = loss.clone().detach().into_scalar::<f32>() as f64;
            if !lv.is_finite() {
                return Err(TrainError::NonFinite {
                    step: step + 1,
                    value: lv,
                });
            }
            loss_sum += lv;
            seg_sum += seg;
            iou_sum += iou;
            let grads = (loss / accum as f64).backward();
            let grads = GradientsParams::from_grads(grads, &self.model.sam);
            accumulator.accumulate(&self.model.sam, grads);
        }
        self.model.dropout_rng.reseed(None);
        let grads = accumulator.grads();
        let norm = grad_norm(&self.model.sam, &grads);
        let clip = cfg.optim.grad_clip_norm;
        let scale = if clip > 0.0 && norm > clip {
            clip / (norm + 1e-6)
        } else {
            1.0
        };
        let lr = lr_at(&cfg.optim, step, self.total_steps);
        let sam = self.model.sam.clone();
        let (sam, _) = self.opt.step(&cfg.optim, lr, scale, sam, grads);
        self.model.sam = sam;
        self.step += 1;
        let dt = t0.elapsed().as_secs_f64();
        let n = accum as f64;
        Ok(StepRecord {
            step: self.step,
            epoch,
            loss: loss_sum / n,
            seg_loss: seg_sum / n,
            iou_loss: iou_sum / n,
            lr,
            grad_norm: norm,
            samples_per_s: (bs * accum) as f64 / dt.max(1e-9),
        })
    }

    /// Validation at full image resolution: IoU, Dice, pixel accuracy at probability 0.5, the
    /// best threshold over a sweep, and the validation loss (same loss as training, low-res).
    pub fn validate(&self) -> Result<ValRecord> {
        let cfg = &self.cfg;
        let sam = self.model.sam.valid();
        let dev = self.device.clone().inner();
        let s = self.image_size;
        let l = s / 4;
        let nt = cfg.validation.thresholds;
        let probs: Vec<f32> = (0..nt).map(|i| (i + 1) as f32 / (nt + 1) as f32).collect();
        let th_logits: Vec<f32> = probs.iter().map(|p| (p / (1.0 - p)).ln()).collect();
        let mut sums = vec![0.0f64; nt];
        let (mut iou, mut dice, mut acc, mut loss) = (0.0, 0.0, 0.0, 0.0);
        let n = self.data.val.len();
        let bs = cfg.train.batch_size.max(1);
        let dense_pe = sam.prompt_encoder.get_dense_pe();
        for chunk_start in (0..n).step_by(bs) {
            let idx: Vec<usize> = (chunk_start..(chunk_start + bs).min(n)).collect();
            let prepared: Vec<Prepared> = idx
                .par_iter()
                .map(|&i| {
                    let smp = &self.data.val[i];
                    let c = &self.model.config;
                    prepare(&smp.image, &smp.mask, s, c.pixel_mean, c.pixel_std)
                })
                .collect::<Result<_>>()?;
            let prompts: Vec<SamplePrompt> = prepared
                .iter()
                .zip(&idx)
                .map(|(p, &i)| {
                    let mut r = Rng::new(cfg.seed, &[VAL, i as u64]);
                    simulate(p, cfg.validation.prompt, &cfg.prompts, false, &mut r)
                })
                .collect();
            let b = prepared.len();
            let pixels: Vec<f32> = prepared
                .iter()
                .flat_map(|p| p.pixels.iter().copied())
                .collect();
            let emb = sam
                .image_encoder
                .forward(tensor_from_vec(pixels, [b, 3, s, s], &dev));
            let (points, boxes) = prompt_tensors(&prompts, &dev);
            let (sparse, dense) = sam.prompt_encoder.forward(points.as_ref(), boxes, None);
            let out = sam
                .mask_decoder
                .forward(emb, dense_pe.clone(), sparse, dense, false);
            let target_h: Vec<f32> = prepared
                .iter()
                .flat_map(|p| p.target.iter().copied())
                .collect();
            let valid_h: Vec<f32> = prepared
                .iter()
                .flat_map(|p| p.valid.iter().copied())
                .collect();
            let target = tensor_from_vec(target_h.clone(), [b, 1, l, l], &dev);
            let valid = tensor_from_vec(valid_h.clone(), [b, 1, l, l], &dev);
            let seg = segmentation_loss(&cfg.loss, out.masks.clone(), target, valid);
            let logits = tensor_to_vec(out.masks);
            let mut batch_loss = tensor_to_vec(seg).iter().map(|&v| v as f64).sum::<f64>();
            if cfg.loss.iou_weight > 0.0 {
                let real = real_iou(&logits, &target_h, &valid_h, b, 1);
                let pred = tensor_to_vec(out.iou_pred);
                batch_loss += cfg.loss.iou_weight
                    * pred
                        .iter()
                        .zip(&real)
                        .map(|(&p, &r)| match cfg.loss.iou_loss {
                            crate::config::IouLossKind::Mse => ((p - r) * (p - r)) as f64,
                            crate::config::IouLossKind::L1 => (p - r).abs() as f64,
                        })
                        .sum::<f64>();
            }
            loss += batch_loss;
            let per: Vec<(f64, f64, f64, Vec<f64>)> = (0..b)
                .into_par_iter()
                .map(|i| {
                    let p = &prepared[i];
                    let full = sam_postprocess(
                        &logits[i * l * l..(i + 1) * l * l],
                        l,
                        s,
                        p.input_hw,
                        p.original_hw,
                    );
                    let c0 = fastsam2_eval::binary::threshold_sweep(&full, &p.mask, &[0.0])[0];
                    let sweep = fastsam2_eval::binary::threshold_sweep(&full, &p.mask, &th_logits);
                    (
                        c0.iou(),
                        c0.dice(),
                        c0.pixel_accuracy(),
                        sweep.iter().map(|c| c.iou()).collect(),
                    )
                })
                .collect();
            for (a, d, pa, sw) in per {
                iou += a;
                dice += d;
                acc += pa;
                for (s, v) in sums.iter_mut().zip(sw) {
                    *s += v;
                }
            }
        }
        let nf = n.max(1) as f64;
        let (bi, bv) =
            sums.iter().enumerate().fold(
                (0, f64::NEG_INFINITY),
                |b, (i, &v)| if v > b.1 { (i, v) } else { b },
            );
        Ok(ValRecord {
            step: self.step,
            epoch: self.step / self.steps_per_epoch,
            loss: loss / nf,
            iou: iou / nf,
            dice: dice / nf,
            pixel_accuracy: acc / nf,
            best_threshold: probs[bi] as f64,
            best_threshold_iou: bv / nf,
            samples: n,
        })
    }

    fn state(&self) -> TrainState {
        TrainState {
            step: self.step,
            best_iou: self.best_iou,
            best_step: self.best_step,
            adam_steps: Default::default(),
            layout: self.model.layout.clone(),
            config: self.cfg.clone(),
            model_config: self.model.config.clone(),
        }
    }

    /// Write the resumable checkpoint (atomically).
    pub fn save_checkpoint(&self) -> Result<PathBuf> {
        let p = last_checkpoint_path(&self.cfg);
        checkpoint::save(&p, &self.model, &self.opt, &self.state())?;
        Ok(p)
    }

    fn export_info(&self, val: Option<&ValRecord>) -> serde_json::Value {
        serde_json::json!({
            "strategy": self.cfg.strategy.kind,
            "step": self.step,
            "base": self.model.source.display().to_string(),
            "val_iou": val.map(|v| v.iou),
            "best_threshold": val.map(|v| v.best_threshold),
        })
    }

    /// Train to the end (or to `stop_after_steps`), validating, checkpointing and exporting.
    pub fn run(&mut self, opts: &TrainOptions, obs: &dyn Observer) -> Result<Summary> {
        let out = self.cfg.output_dir.clone();
        std::fs::create_dir_all(&out).map_err(io_err(&out))?;
        checkpoint::write_atomic(
            &out.join("config.toml"),
            self.cfg.to_toml_string().as_bytes(),
        )?;
        let resumed = self.step > 0;
        self.metrics = Some(MetricsWriter::open(&out, resumed.then_some(self.step))?);
        obs.event(Event::Start {
            total_steps: self.total_steps,
            start_step: self.step,
            counts: &self.counts,
        });
        if resumed {
            obs.event(Event::Message(&format!(
                "resumed from {} at step {}",
                last_checkpoint_path(&self.cfg).display(),
                self.step
            )));
        }
        let mut first_val = self.metrics_vals().into_iter().next();
        let mut last_val = self.metrics_vals().pop();
        if !resumed && self.cfg.validation.at_start {
            let v = self.validate()?;
            obs.event(Event::Val(&v));
            self.push(Record::Val(v.clone()))?;
            first_val = Some(v.clone());
            last_val = Some(v);
        }
        while self.step < self.total_steps {
            let r = self.train_step()?;
            if self.step.is_multiple_of(self.cfg.train.log_every_steps)
                || self.step == self.total_steps
            {
                self.push(Record::Train(r.clone()))?;
            }
            obs.event(Event::Step(&r));
            let epoch_end = self.step.is_multiple_of(self.steps_per_epoch);
            let last = self.step == self.total_steps;
            if epoch_end || last {
                let epochs_done = self.step / self.steps_per_epoch;
                let every = self.cfg.validation.every_epochs;
                if last || (every > 0 && epochs_done.is_multiple_of(every)) {
                    let v = self.validate()?;
                    obs.event(Event::Val(&v));
                    self.push(Record::Val(v.clone()))?;
                    if first_val.is_none() {
                        first_val = Some(v.clone());
                    }
                    if self.best_iou.is_none_or(|b| v.iou > b) {
                        self.best_iou = Some(v.iou);
                        self.best_step = Some(self.step);
                        self.model
                            .export(&out.join("best.safetensors"), &self.export_info(Some(&v)))?;
                    }
                    last_val = Some(v);
                }
                self.save_checkpoint()?;
                self.plot()?;
            } else if self.cfg.train.checkpoint_every_steps > 0
                && self
                    .step
                    .is_multiple_of(self.cfg.train.checkpoint_every_steps)
            {
                self.save_checkpoint()?;
            }
            if opts.stop_after_steps.is_some_and(|s| self.step >= s) && !last {
                self.save_checkpoint()?;
                self.plot()?;
                obs.event(Event::Message(&format!("stopped after step {}", self.step)));
                return Ok(Summary {
                    steps: self.step,
                    first_val,
                    last_val,
                    best_iou: self.best_iou,
                    exported: None,
                });
            }
        }
        let final_path = out.join("model.safetensors");
        self.model
            .export(&final_path, &self.export_info(last_val.as_ref()))?;
        self.plot()?;
        Ok(Summary {
            steps: self.step,
            first_val,
            last_val,
            best_iou: self.best_iou,
            exported: Some(final_path),
        })
    }

    fn metrics_vals(&self) -> Vec<ValRecord> {
        self.metrics
            .as_ref()
            .map(|m| {
                m.records
                    .iter()
                    .filter_map(|r| match r {
                        Record::Val(v) => Some(v.clone()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn push(&mut self, r: Record) -> Result<()> {
        if let Some(m) = &mut self.metrics {
            m.push(r)?;
        }
        Ok(())
    }

    fn plot(&self) -> Result<()> {
        match &self.metrics {
            Some(m) => m.plot(),
            None => Ok(()),
        }
    }

    /// The output folder.
    pub fn output_dir(&self) -> &Path {
        &self.cfg.output_dir
    }
}
