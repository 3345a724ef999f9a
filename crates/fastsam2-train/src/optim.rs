//! AdamW (PyTorch's `torch.optim.AdamW` update, per-parameter step counts), global-norm
//! gradient clipping (`clip_grad_norm_`), and the warm-up + cosine learning-rate schedule.
//!
//! The state is keyed by parameter *path*, not by burn's random `ParamId`, so it can be saved
//! next to the weights and restored into a freshly built model for an exact resume.

use std::collections::BTreeMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;

use crate::config::{OptimSection, Schedule};

/// Learning rate of optimizer step `step` (0-based) out of `total`.
pub fn lr_at(cfg: &OptimSection, step: u64, total: u64) -> f64 {
    let warm = cfg.warmup_steps;
    if step < warm {
        return cfg.lr * (step + 1) as f64 / warm as f64;
    }
    match cfg.schedule {
        Schedule::Constant => cfg.lr,
        Schedule::Cosine => {
            let span = total.saturating_sub(warm).max(1) as f64;
            let progress = ((step - warm) as f64 / span).min(1.0);
            let min = cfg.lr * cfg.min_lr_ratio;
            min + (cfg.lr - min) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
        }
    }
}

/// One parameter's AdamW state (burn layout).
#[derive(Clone, Debug)]
pub struct AdamState {
    pub step: u64,
    pub m: Tensor<1>,
    pub v: Tensor<1>,
}

#[derive(Clone, Debug, Default)]
pub struct AdamW {
    pub state: BTreeMap<String, AdamState>,
}

/// Global L2 norm of all gradients of `module` present in `grads`.
pub fn grad_norm<M: Module>(module: &M, grads: &GradientsParams) -> f64 {
    struct V<'a> {
        grads: &'a GradientsParams,
        sum: f64,
    }
    impl ModuleVisitor for V<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = self.grads.get::<D>(param.id) {
                let s: f32 = (g.clone() * g).sum().into_scalar();
                self.sum += s as f64;
            }
        }
    }
    let mut v = V { grads, sum: 0.0 };
    module.visit(&mut v);
    v.sum.sqrt()
}

struct Step<'a> {
    cfg: &'a OptimSection,
    lr: f64,
    grad_scale: f64,
    grads: &'a mut GradientsParams,
    state: &'a mut BTreeMap<String, AdamState>,
    path: Vec<String>,
    updated: usize,
}

impl ModuleMapper for Step<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, tensor, mapper): (ParamId, Tensor<D>, _) = param.consume();
        let Some(grad) = self.grads.remove::<D>(id) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let require_grad = tensor.is_require_grad();
        let checkpointing = tensor.gradient_checkpointing_strategy();
        let shape = tensor.shape();
        let n = shape.num_elements();
        let cfg = self.cfg;
        let p = tensor.inner().reshape([n]);
        let mut g = grad.reshape([n]);
        if self.grad_scale != 1.0 {
            g = g * self.grad_scale;
        }
        let key = self.path.join(".");
        let device = p.device();
        let st = self.state.entry(key).or_insert_with(|| AdamState {
            step: 0,
            m: Tensor::zeros([n], &device),
            v: Tensor::zeros([n], &device),
        });
        st.step += 1;
        let t = st.step as i32;
        let decay = if D >= 2 || cfg.decay_bias_and_norm {
            cfg.weight_decay
        } else {
            0.0
        };
        // torch.optim.AdamW (single-tensor path):
        let p = if decay > 0.0 {
            p * (1.0 - self.lr * decay)
        } else {
            p
        };
        let m = st.m.clone() * cfg.beta1 + g.clone() * (1.0 - cfg.beta1);
        let v = st.v.clone() * cfg.beta2 + g.clone() * g * (1.0 - cfg.beta2);
        let bc1 = 1.0 - cfg.beta1.powi(t);
        let bc2 = 1.0 - cfg.beta2.powi(t);
        let step_size = self.lr / bc1;
        let denom = v.clone().sqrt() / bc2.sqrt() + cfg.eps;
        let p = p - m.clone() / denom * step_size;
        st.m = m;
        st.v = v;
        self.updated += 1;
        let mut out = Tensor::<D>::from_inner(p.reshape(shape));
        if let Some(s) = checkpointing {
            out = out.with_gradient_checkpointing_strategy(s);
        }
        if require_grad {
            out = out.require_grad();
        }
        Param::from_mapped_value(id, out, mapper)
    }
}

impl AdamW {
    /// Update every parameter of `module` that has a gradient in `grads` (scaled by
    /// `grad_scale`, the clipping factor). Returns the module and the number of updated tensors.
    pub fn step<M: Module>(
        &mut self,
        cfg: &OptimSection,
        lr: f64,
        grad_scale: f64,
        module: M,
        mut grads: GradientsParams,
    ) -> (M, usize) {
        let mut mapper = Step {
            cfg,
            lr,
            grad_scale,
            grads: &mut grads,
            state: &mut self.state,
            path: Vec::new(),
            updated: 0,
        };
        let module = module.map(&mut mapper);
        let n = mapper.updated;
        (module, n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine() {
        let cfg = OptimSection {
            lr: 1.0,
            warmup_steps: 4,
            min_lr_ratio: 0.1,
            ..Default::default()
        };
        let lrs: Vec<f64> = (0..14).map(|s| lr_at(&cfg, s, 14)).collect();
        assert_eq!(&lrs[..4], &[0.25, 0.5, 0.75, 1.0]);
        assert!((lrs[4] - 1.0).abs() < 1e-12);
        assert!(
            (lrs[9] - (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * 0.5).cos()))).abs() < 1e-12
        );
        assert!(lrs.windows(2).skip(4).all(|w| w[1] < w[0]));
        assert!((lr_at(&cfg, 14, 14) - 0.1).abs() < 1e-12);
    }

    /// One AdamW step on a quadratic against PyTorch's update rule computed by hand.
    #[test]
    fn adamw_matches_torch_update() {
        use burn::module::{Module, Param};
        use burn::tensor::{Device, Tensor};
        use fastsam2_models::common::{tensor_from_vec, tensor_to_vec};
        #[derive(Module, Debug)]
        struct M {
            w: Param<Tensor<2>>,
        }
        let dev = Device::flex().autodiff();
        let m = M {
            w: Param::from_tensor(tensor_from_vec(vec![1.0, -2.0, 0.5, 3.0], [2, 2], &dev)),
        };
        let cfg = OptimSection {
            lr: 0.1,
            weight_decay: 0.01,
            ..Default::default()
        };
        let mut opt = AdamW::default();
        let mut m = m;
        let mut w = [1.0f64, -2.0, 0.5, 3.0];
        let (mut mm, mut vv) = ([0.0f64; 4], [0.0f64; 4]);
        for t in 1..=3 {
            let loss = (m.w.val() * m.w.val()).sum();
            let grads = GradientsParams::from_grads(loss.backward(), &m);
            let (m2, n) = opt.step(&cfg, cfg.lr, 1.0, m, grads);
            assert_eq!(n, 1);
            m = m2;
            for i in 0..4 {
                let g = 2.0 * w[i];
                w[i] *= 1.0 - cfg.lr * cfg.weight_decay;
                mm[i] = 0.9 * mm[i] + 0.1 * g;
                vv[i] = 0.999 * vv[i] + 0.001 * g * g;
                let bc1 = 1.0 - 0.9f64.powi(t);
                let bc2 = 1.0 - 0.999f64.powi(t);
                w[i] -= cfg.lr / bc1 * mm[i] / (vv[i].sqrt() / bc2.sqrt() + cfg.eps);
            }
        }
        let got = tensor_to_vec(m.w.val().detach());
        for (a, b) in got.iter().zip(w) {
            assert!((*a as f64 - b).abs() < 1e-5, "{got:?} vs {w:?}");
        }
    }
}
