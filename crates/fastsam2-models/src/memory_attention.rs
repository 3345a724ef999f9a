//! SAM 2's memory attention (`sam2/modeling/memory_attention.py`, `sam/transformer.py`
//! `RoPEAttention`): self-attention over the current frame's tokens and cross-attention to
//! the memory bank (spatial memories + object-pointer tokens), both with 2-D axial rotary
//! position encoding (object-pointer tokens excluded from the rotation).

use burn::module::Module;
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::relu;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::common::tensor_from_vec;
use crate::position_encoding::axial_rope;

fn default_theta() -> f32 {
    10000.0
}
fn default_feat() -> [usize; 2] {
    [64, 64]
}
fn one() -> usize {
    1
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemoryAttentionConfig {
    pub d_model: usize,
    pub num_layers: usize,
    pub dim_feedforward: usize,
    /// Width of the memory tokens (the memory encoder's `out_dim`).
    pub kv_in_dim: usize,
    #[serde(default = "one")]
    pub num_heads: usize,
    #[serde(default = "default_theta")]
    pub rope_theta: f32,
    #[serde(default = "default_feat")]
    pub feat_sizes: [usize; 2],
}

impl MemoryAttentionConfig {
    pub fn sam2() -> Self {
        Self {
            d_model: 256,
            num_layers: 4,
            dim_feedforward: 2048,
            kv_in_dim: 64,
            num_heads: 1,
            rope_theta: 10000.0,
            feat_sizes: [64, 64],
        }
    }

    pub fn init(&self, device: &Device) -> MemoryAttention {
        let d = self.d_model;
        let attn = |kv: usize| RoPEAttention {
            q_proj: LinearConfig::new(d, d).init(device),
            k_proj: LinearConfig::new(kv, d).init(device),
            v_proj: LinearConfig::new(kv, d).init(device),
            out_proj: LinearConfig::new(d, d).init(device),
            num_heads: self.num_heads,
            rope_theta: self.rope_theta,
        };
        let ln = || LayerNormConfig::new(d).init(device);
        MemoryAttention {
            layers: (0..self.num_layers)
                .map(|_| MemoryAttentionLayer {
                    self_attn: attn(d),
                    cross_attn_image: attn(self.kv_in_dim),
                    linear1: LinearConfig::new(d, self.dim_feedforward).init(device),
                    linear2: LinearConfig::new(self.dim_feedforward, d).init(device),
                    norm1: ln(),
                    norm2: ln(),
                    norm3: ln(),
                })
                .collect(),
            norm: ln(),
        }
    }
}

/// Rotation tables (cos, sin), [L, head_dim/2] each, for an `end_x x end_y` grid.
#[derive(Clone, Debug)]
pub struct RopeTables {
    pub cos: Tensor<2>,
    pub sin: Tensor<2>,
    pub len: usize,
}

impl RopeTables {
    pub fn new(head_dim: usize, end_x: usize, end_y: usize, theta: f32, device: &Device) -> Self {
        let t = if end_x == end_y {
            rope_table(head_dim, end_x, theta)
        } else {
            std::sync::Arc::new(axial_rope(head_dim, end_x, end_y, theta))
        };
        let len = end_x * end_y;
        let half = head_dim / 2;
        let cos = tensor_from_vec(t.iter().map(|p| p.0).collect(), [len, half], device);
        let sin = tensor_from_vec(t.iter().map(|p| p.1).collect(), [len, half], device);
        Self { cos, sin, len }
    }
}

/// `apply_rotary_enc` on [B, nH, L, hd]: rotate channel pairs (2c, 2c+1) of token j by table
/// row `j % len` (the repetition is `rope_k_repeat` for memories of several frames).
pub fn apply_rope(x: Tensor<4>, t: &RopeTables) -> Tensor<4> {
    let [b, nh, l, hd] = x.dims();
    let reps = l / t.len;
    let (cos, sin) = if reps > 1 {
        (
            t.cos.clone().repeat_dim(0, reps),
            t.sin.clone().repeat_dim(0, reps),
        )
    } else {
        (t.cos.clone(), t.sin.clone())
    };
    let cos = cos.reshape([1, 1, l, hd / 2, 1]);
    let sin = sin.reshape([1, 1, l, hd / 2, 1]);
    let x = x.reshape([b, nh, l, hd / 2, 2]);
    let x0 = x.clone().narrow(4, 0, 1);
    let x1 = x.narrow(4, 1, 1);
    let r0 = x0.clone() * cos.clone() - x1.clone() * sin.clone();
    let r1 = x0 * sin + x1 * cos;
    Tensor::cat(vec![r0, r1], 4).reshape([b, nh, l, hd])
}

/// The memory's key inputs (tokens + position encoding) and value inputs (tokens) as host
/// buffers, `[B, M, kv]` each: made once per frame and object batch and read by every
/// layer's folded cross-attention (instead of four additions and eight copies of ~2 M floats),
/// with the tile packings of those memories that the first layer makes and the others reuse.
///
/// With [`crate::kernels::set_bf16_attention_weights`] on (when the buffers are made), the
/// folded cross-attention's value products take bf16 attention weights where the values are
/// bf16 (SAM 2's stored memories; `rope_cross_attention_cached`).
#[derive(Debug)]
pub struct HostKv {
    pub k: Vec<f32>,
    pub v: Vec<f32>,
    bf16_probs: bool,
    packed: std::sync::OnceLock<crate::kernels::rope_cross::PackedMemory>,
}

impl HostKv {
    /// Key inputs `k` and value inputs `v`, both `[B, M, kv]` row-major.
    pub fn new(k: Vec<f32>, v: Vec<f32>) -> Self {
        Self {
            k,
            v,
            bf16_probs: crate::kernels::bf16_attention_weights(),
            packed: std::sync::OnceLock::new(),
        }
    }
}

#[derive(Module, Debug)]
pub struct RoPEAttention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub out_proj: Linear,
    pub num_heads: usize,
    pub rope_theta: f32,
}

/// Cached `axial_rope` tables, keyed by (head_dim, side, theta bits).
fn rope_table(hd: usize, side: usize, theta: f32) -> std::sync::Arc<Vec<(f32, f32)>> {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, OnceLock};
    type Tables = HashMap<(usize, usize, u32), Arc<Vec<(f32, f32)>>>;
    static CACHE: OnceLock<Mutex<Tables>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    let mut g = cache.lock().unwrap_or_else(|e| e.into_inner());
    g.entry((hd, side, theta.to_bits()))
        .or_insert_with(|| Arc::new(axial_rope(hd, side, side, theta)))
        .clone()
}

/// Rotate channel pairs of tokens `0..n_rot` of a [L, nh * hd] buffer in place with the table
/// (token j uses row j % table_len).
fn rotate_in_place(x: &mut [f32], n_rot: usize, nh: usize, hd: usize, table: &[(f32, f32)]) {
    use rayon::prelude::*;
    let c = nh * hd;
    let per = hd / 2;
    let len = table.len() / per;
    x[..n_rot * c]
        .par_chunks_mut(c)
        .enumerate()
        .for_each(|(j, row)| {
            let t = &table[(j % len) * per..(j % len + 1) * per];
            for h in 0..nh {
                let r = &mut row[h * hd..(h + 1) * hd];
                for (p, (cos, sin)) in r.chunks_exact_mut(2).zip(t) {
                    let (a, b) = (p[0], p[1]);
                    p[0] = a * cos - b * sin;
                    p[1] = a * sin + b * cos;
                }
            }
        });
}

/// `lin(x)` for `b` items of `l` rows of a host buffer, the first `n_rot` rows of each item
/// rotated (heads of `hd` channels, [`rotate_in_place`]).
fn project_rotated(
    lin: &Linear,
    x: &[f32],
    b: usize,
    l: usize,
    n_rot: usize,
    hd: usize,
    table: &[(f32, f32)],
) -> Vec<f32> {
    let hl = crate::kernels::host::HostLinear::new(lin);
    let c = hl.dout;
    let mut y = hl.rows(x, b * l);
    for item in y.chunks_exact_mut(l * c) {
        rotate_in_place(item, n_rot, c / hd, hd, table);
    }
    y
}

impl RoPEAttention {
    /// Head width and the cached RoPE table for a square grid of `l` queries.
    fn rope(&self, l: usize) -> (usize, std::sync::Arc<Vec<(f32, f32)>>) {
        let hd = self.q_proj.weight.dims()[1] / self.num_heads;
        let side = (l as f64).sqrt() as usize;
        (hd, rope_table(hd, side, self.rope_theta))
    }

    /// Same as `forward`, on host buffers with the fused attention kernels.
    pub fn forward_fused(
        &self,
        q: Tensor<3>,
        k: Tensor<3>,
        v: Tensor<3>,
        num_k_exclude_rope: usize,
    ) -> Tensor<3> {
        self.forward_fused_with(q, k, v, num_k_exclude_rope, None)
    }

    /// [`Self::forward_fused`] with `k` / `v` also given as host buffers (`host`), which
    /// the folded cross-attention then reads instead of copying the tensors.
    pub fn forward_fused_with(
        &self,
        q: Tensor<3>,
        k: Tensor<3>,
        v: Tensor<3>,
        num_k_exclude_rope: usize,
        host: Option<&HostKv>,
    ) -> Tensor<3> {
        let device = q.device();
        let (qx, [bq, lq, _]) = crate::kernels::to_host(q);
        let (out, b) = self.attend_host(&qx, bq, lq, &k, &v, num_k_exclude_rope, host);
        let hl = crate::kernels::host::HostLinear::new(&self.out_proj);
        let out = hl.rows(&out, b * lq);
        crate::kernels::from_host(out, [b, lq, hl.dout], &device)
    }

    /// The attention of [`Self::forward_fused_with`] on host buffers, before the output
    /// projection: queries `qx` `[bq, lq, C]` (not yet projected; `bq` = 1 shares them
    /// between every batch item of `k` / `v`). Returns (`[b, lq, C]`, b).
    #[allow(clippy::too_many_arguments)]
    fn attend_host(
        &self,
        qx: &[f32],
        bq: usize,
        lq: usize,
        k: &Tensor<3>,
        v: &Tensor<3>,
        num_k_exclude_rope: usize,
        host: Option<&HostKv>,
    ) -> (Vec<f32>, usize) {
        use crate::kernels::attention::{attention, attention_shared_values};
        use crate::kernels::host::HostLinear;
        use crate::kernels::to_host;
        let [b, lk, _] = k.dims();
        let nh = self.num_heads;
        let (hd, table) = self.rope(lq);
        // the projected queries straight into a host buffer (no tensor round trip)
        let mut qh = project_rotated(&self.q_proj, qx, bq, lq, lq, hd, &table);
        let scale = (hd as f32).powf(-0.5);
        let vd = v.dims()[2];
        let n_rot = lk - num_k_exclude_rope;
        if let Some(px) = self.try_folded(
            &qh,
            [bq, lq, hd],
            k,
            v,
            num_k_exclude_rope,
            &table,
            scale,
            host,
        ) {
            return (self.project_values_host(px, b, lq, vd), b);
        }
        if bq < b {
            qh = qh.repeat(b / bq);
        }
        let (kx, _) = to_host(k.clone());
        let kh = project_rotated(&self.k_proj, &kx, b, lk, n_rot, hd, &table);
        let (xh, _) = to_host(v.clone());
        if vd < hd {
            // softmax rows sum to one: P (X Wv + bv) = (P X) Wv + bv, with P X over vd channels
            let px = attention_shared_values(&qh, &kh, &xh, b, lq, lk, nh, hd, vd, scale);
            return (self.project_values_host(px, b, lq, vd), b);
        }
        let vh = HostLinear::new(&self.v_proj).rows(&xh, b * lk);
        (attention(&qh, &kh, &vh, b, lq, lk, nh, hd, scale), b)
    }

    /// One head over narrower memories on a square grid whose rotated keys are whole grids
    /// (memory frames): the attention with the key projection folded into the queries
    /// (`kernels/rope_cross.rs`), when that needs fewer operations. Returns the attention
    /// over the value inputs, [b, lq, kv].
    #[allow(clippy::too_many_arguments)]
    fn try_folded(
        &self,
        qh: &[f32],
        [bq, lq, hd]: [usize; 3],
        k: &Tensor<3>,
        v: &Tensor<3>,
        n_ptr: usize,
        table: &[(f32, f32)],
        scale: f32,
        host: Option<&HostKv>,
    ) -> Option<Vec<f32>> {
        use crate::kernels::rope_cross::{
            RopeKeys, fast_kernels, rope_cross_attention, rope_cross_attention_cached,
            worth_folding,
        };
        use crate::kernels::to_host;
        let [b, lk, kv] = k.dims();
        let side = (lq as f64).sqrt() as usize;
        let n_rot = lk - n_ptr;
        let frames = n_rot / lq.max(1);
        let fold = self.num_heads == 1
            && v.dims()[2] == kv
            && kv < hd
            && hd % 4 == 0
            && side * side == lq
            && frames > 0
            && frames * lq == n_rot
            && fast_kernels();
        if !fold {
            return None;
        }
        let (wk, _) = to_host(self.k_proj.weight.val());
        let bk = self.k_proj.bias.as_ref().map(|p| to_host(p.val()).0);
        let keys = RopeKeys {
            side,
            hd,
            kv,
            wk: &wk,
            bk: bk.as_deref(),
            table,
        };
        if !worth_folding(&keys, frames, b, bq == 1 && b > 1) {
            return None;
        }
        let kptr = if n_ptr > 0 {
            to_host(crate::kernels::host::linear3(
                &self.k_proj,
                k.clone().narrow(1, n_rot, n_ptr),
            ))
            .0
        } else {
            Vec::new()
        };
        let n = b * lk * kv;
        Some(match host {
            Some(h) if h.k.len() == n && h.v.len() == n => rope_cross_attention_cached(
                &keys,
                qh,
                bq,
                &h.k,
                &h.v,
                &kptr,
                b,
                frames,
                n_ptr,
                scale,
                h.bf16_probs,
                &h.packed,
            ),
            _ => {
                let (kin, vin) = (to_host(k.clone()).0, to_host(v.clone()).0);
                rope_cross_attention(&keys, qh, bq, &kin, &vin, &kptr, b, frames, n_ptr, scale)
            }
        })
    }

    /// `P X Wv + bv` (before the output projection), `[b, lq, nh * hd]`, from the attention
    /// over the value inputs `px` `[b, lq, nh, vd]`: each head's slice of the value projection.
    fn project_values_host(&self, px: Vec<f32>, b: usize, lq: usize, vd: usize) -> Vec<f32> {
        use crate::kernels::host::{HostLinear, matmul};
        use crate::kernels::to_host;
        let nh = self.num_heads;
        let hl = HostLinear::new(&self.v_proj); // w [vd, nh * hd]
        if nh == 1 {
            return hl.rows(&px, b * lq);
        }
        let c = hl.dout;
        let hd = c / nh;
        let rows = b * lq;
        let mut out = vec![0f32; rows * c];
        for h in 0..nh {
            let ph: Vec<f32> = (0..rows)
                .flat_map(|r| px[(r * nh + h) * vd..(r * nh + h + 1) * vd].iter().copied())
                .collect();
            let wh: Vec<f32> = (0..vd)
                .flat_map(|e| hl.w[e * c + h * hd..e * c + (h + 1) * hd].iter().copied())
                .collect();
            let oh = matmul(&ph, &wh, (rows, vd, hd));
            for r in 0..rows {
                out[r * c + h * hd..r * c + (h + 1) * hd]
                    .copy_from_slice(&oh[r * hd..(r + 1) * hd]);
            }
        }
        if let Some(bias) = &self.v_proj.bias {
            let (bv, _) = to_host(bias.val());
            for row in out.chunks_exact_mut(c) {
                for (o, bb) in row.iter_mut().zip(&bv) {
                    *o += bb;
                }
            }
        }
        out
    }

    fn heads(&self, x: Tensor<3>) -> Tensor<4> {
        let [b, n, c] = x.dims();
        x.reshape([b, n, self.num_heads, c / self.num_heads])
            .swap_dims(1, 2)
    }

    /// q: [B, Lq, C] (a square grid) or [1, Lq, C] (shared by every batch item), k/v:
    /// [B, Lk, kv]; the last `num_k_exclude_rope` keys are not rotated.
    pub fn forward(
        &self,
        q: Tensor<3>,
        k: Tensor<3>,
        v: Tensor<3>,
        num_k_exclude_rope: usize,
    ) -> Tensor<3> {
        self.forward_with(q, k, v, num_k_exclude_rope, None)
    }

    /// [`Self::forward`] with `k` / `v` optionally also as host buffers (see [`HostKv`]).
    pub fn forward_with(
        &self,
        q: Tensor<3>,
        k: Tensor<3>,
        v: Tensor<3>,
        num_k_exclude_rope: usize,
        host: Option<&HostKv>,
    ) -> Tensor<3> {
        if crate::kernels::host_fast_path(&q.device()) {
            return self.forward_fused_with(q, k, v, num_k_exclude_rope, host);
        }
        self.forward_generic(q, k, v, num_k_exclude_rope)
    }

    /// Burn ops only (any device, differentiable).
    pub fn forward_generic(
        &self,
        q: Tensor<3>,
        k: Tensor<3>,
        v: Tensor<3>,
        num_k_exclude_rope: usize,
    ) -> Tensor<3> {
        let [bq, lq, c] = q.dims();
        let b = k.dims()[0];
        let q = if bq == 1 && b > 1 {
            q.expand([b, lq, c])
        } else {
            q
        };
        let q = self.heads(crate::kernels::host::linear3(&self.q_proj, q));
        let k = self.heads(crate::kernels::host::linear3(&self.k_proj, k));
        let v = self.heads(crate::kernels::host::linear3(&self.v_proj, v));
        let [b, nh, lq, hd] = q.dims();
        let side = (lq as f64).sqrt() as usize;
        let tables = RopeTables::new(hd, side, side, self.rope_theta, &q.device());
        let q = apply_rope(q, &tables);
        let lk = k.dims()[2];
        let n_rope = lk - num_k_exclude_rope;
        let k = if num_k_exclude_rope == 0 {
            apply_rope(k, &tables)
        } else {
            let rot = apply_rope(k.clone().narrow(2, 0, n_rope), &tables);
            Tensor::cat(vec![rot, k.narrow(2, n_rope, num_k_exclude_rope)], 2)
        };
        let out = attention(q, k, v, None, None, AttentionModuleOptions::default());
        let out = out.swap_dims(1, 2).reshape([b, lq, nh * hd]);
        crate::kernels::host::linear3(&self.out_proj, out)
    }
}

/// The memory-attention layers' LayerNorm epsilon (`nn.LayerNorm`'s default, which their
/// `LayerNormConfig` keeps too).
const LN_EPS: f32 = 1e-5;

#[derive(Module, Debug)]
pub struct MemoryAttentionLayer {
    pub self_attn: RoPEAttention,
    pub cross_attn_image: RoPEAttention,
    pub linear1: Linear,
    pub linear2: Linear,
    pub norm1: LayerNorm,
    pub norm2: LayerNorm,
    pub norm3: LayerNorm,
}

impl MemoryAttentionLayer {
    /// tgt: [B, L, C]; memory / pos: [B, M, kv].
    pub fn forward(
        &self,
        tgt: Tensor<3>,
        memory: Tensor<3>,
        pos: Tensor<3>,
        num_k_exclude_rope: usize,
    ) -> Tensor<3> {
        let tgt = self.forward_self(tgt);
        self.forward_cross_mlp(tgt, memory, pos, num_k_exclude_rope)
    }

    /// The self-attention half (pos_enc_at_attn = false): depends on the frame only.
    pub fn forward_self(&self, tgt: Tensor<3>) -> Tensor<3> {
        if crate::kernels::host_fast_path(&tgt.device()) {
            return self.forward_self_host(tgt);
        }
        let t2 = self.norm1.forward(tgt.clone());
        tgt + self.self_attn.forward(t2.clone(), t2.clone(), t2, 0)
    }

    /// [`Self::forward_self`] on host buffers: the target is copied out once and the result
    /// in once, with the norm, the three projections of the same normalised rows, the
    /// rotations, the attention, the output projection and the residual in between (through
    /// burn's ops, each projection cost a copy in and two out, ~1.3 ms per 4 MB object map;
    /// the self-attention took ~13 ms per layer and object outside its attention kernel).
    fn forward_self_host(&self, tgt: Tensor<3>) -> Tensor<3> {
        let device = tgt.device();
        let (t, [b, l, c]) = crate::kernels::to_host(tgt);
        crate::kernels::from_host(self.self_block_host(t, b, l), [b, l, c], &device)
    }

    /// The self-attention block on a host buffer `t` `[b, l, C]`.
    fn self_block_host(&self, t: Vec<f32>, b: usize, l: usize) -> Vec<f32> {
        use crate::kernels::attention::attention;
        use crate::kernels::host::{HostLinear, add_assign, layer_norm_params, layer_norm_rows};
        let a = &self.self_attn;
        let mut x = t.clone();
        let (w, beta) = layer_norm_params(&self.norm1);
        layer_norm_rows(&mut x, &w, &beta, LN_EPS);
        let (hd, table) = a.rope(l);
        let q = project_rotated(&a.q_proj, &x, b, l, l, hd, &table);
        let k = project_rotated(&a.k_proj, &x, b, l, l, hd, &table);
        let v = HostLinear::new(&a.v_proj).rows(&x, b * l);
        let nh = a.num_heads;
        let out = attention(&q, &k, &v, b, l, l, nh, hd, (hd as f32).powf(-0.5));
        let mut o = HostLinear::new(&a.out_proj).rows(&out, b * l);
        add_assign(&mut o, &t);
        o
    }

    /// Cross-attention to the memories (keys get the memory pos enc, queries do not), then
    /// the MLP. `tgt` may have one row for a batch of memories (the same frame for every
    /// object): the queries are then projected once and shared.
    pub fn forward_cross_mlp(
        &self,
        tgt: Tensor<3>,
        memory: Tensor<3>,
        pos: Tensor<3>,
        num_k_exclude_rope: usize,
    ) -> Tensor<3> {
        self.forward_cross_mlp_kv(tgt, memory.clone() + pos, memory, num_k_exclude_rope, None)
    }

    /// [`Self::forward_cross_mlp`] from the key inputs (`memory + pos`) and value inputs
    /// (`memory`), optionally with their host copies (see [`HostKv`]).
    pub fn forward_cross_mlp_kv(
        &self,
        tgt: Tensor<3>,
        k_in: Tensor<3>,
        memory: Tensor<3>,
        num_k_exclude_rope: usize,
        host: Option<&HostKv>,
    ) -> Tensor<3> {
        if crate::kernels::host_fast_path(&tgt.device()) {
            return self.forward_cross_mlp_host(tgt, k_in, memory, num_k_exclude_rope, host);
        }
        let t2 = self.norm2.forward(tgt.clone());
        let attn = self
            .cross_attn_image
            .forward_with(t2, k_in, memory, num_k_exclude_rope, host);
        // a [1, L, C] target shared by every object: its queries were computed once
        let [b, l, c] = attn.dims();
        let tgt = if tgt.dims()[0] != b {
            tgt.expand([b, l, c])
        } else {
            tgt
        };
        let tgt = tgt + attn;
        let t2 = self.norm3.forward(tgt.clone());
        tgt + self.mlp(t2)
    }

    /// [`Self::forward_cross_mlp_kv`] on host buffers: the target copied out once and the
    /// result in once, with the norms, the query / value / output projections, the attention,
    /// the residuals and the MLP in between (through burn's ops: ~7 elementwise passes and
    /// four copies of each 4 MB object map per layer).
    fn forward_cross_mlp_host(
        &self,
        tgt: Tensor<3>,
        k_in: Tensor<3>,
        memory: Tensor<3>,
        num_k_exclude_rope: usize,
        host: Option<&HostKv>,
    ) -> Tensor<3> {
        let device = tgt.device();
        let (t, [bt, l, c]) = crate::kernels::to_host(tgt);
        let (y, b) = self.cross_block_host(t, bt, l, &k_in, &memory, num_k_exclude_rope, host);
        crate::kernels::from_host(y, [b, l, c], &device)
    }

    /// The cross-attention + MLP block on a host buffer `t` `[bt, l, C]` (`bt` = 1: one
    /// target shared by every memory batch item). Returns (`[b, l, C]`, b).
    #[allow(clippy::too_many_arguments)]
    fn cross_block_host(
        &self,
        t: Vec<f32>,
        bt: usize,
        l: usize,
        k_in: &Tensor<3>,
        memory: &Tensor<3>,
        num_k_exclude_rope: usize,
        host: Option<&HostKv>,
    ) -> (Vec<f32>, usize) {
        use crate::kernels::host::{HostLinear, add_assign, layer_norm_params, layer_norm_rows};
        use crate::kernels::mlp::{Act, HostMlp};
        let c = t.len() / (bt * l);
        let mut x = t.clone();
        let (w, beta) = layer_norm_params(&self.norm2);
        layer_norm_rows(&mut x, &w, &beta, LN_EPS);
        let a = &self.cross_attn_image;
        let (attn, b) = a.attend_host(&x, bt, l, k_in, memory, num_k_exclude_rope, host);
        let mut y = HostLinear::new(&a.out_proj).rows(&attn, b * l);
        // a [1, L, C] target shared by every object (its queries were computed once) is
        // every object's residual
        if bt == b {
            add_assign(&mut y, &t);
        } else {
            for item in y.chunks_exact_mut(l * c) {
                add_assign(item, &t);
            }
        }
        let mut x = y.clone();
        let (w, beta) = layer_norm_params(&self.norm3);
        layer_norm_rows(&mut x, &w, &beta, LN_EPS);
        let m = HostMlp::new(&self.linear1, &self.linear2, Act::Relu);
        add_assign(&mut y, &m.rows(&x, b * l));
        (y, b)
    }

    /// `linear2(relu(linear1(x)))`, on host buffers on the flex device.
    pub fn mlp(&self, x: Tensor<3>) -> Tensor<3> {
        use crate::kernels::mlp::{Act, HostMlp};
        use crate::kernels::{from_host, host_fast_path, to_host};
        let device = x.device();
        if !host_fast_path(&device) {
            return self.linear2.forward(relu(self.linear1.forward(x)));
        }
        let [b, l, _] = x.dims();
        let m = HostMlp::new(&self.linear1, &self.linear2, Act::Relu);
        let out = m.rows(&to_host(x).0, b * l);
        from_host(out, [b, l, m.dout], &device)
    }
}

#[derive(Module, Debug)]
pub struct MemoryAttention {
    pub layers: Vec<MemoryAttentionLayer>,
    pub norm: LayerNorm,
}

impl MemoryAttention {
    /// curr / curr_pos: [B, L, C]; memory / memory_pos: [B, M, kv].
    pub fn forward(
        &self,
        curr: Tensor<3>,
        curr_pos: Tensor<3>,
        memory: Tensor<3>,
        memory_pos: Tensor<3>,
        num_obj_ptr_tokens: usize,
    ) -> Tensor<3> {
        let first = self.forward_first_self(curr, curr_pos);
        self.forward_from_first_self(first, memory, memory_pos, num_obj_ptr_tokens)
    }

    /// The part of [`Self::forward`] that depends on the current frame only (the input
    /// embedding and the first layer's self-attention): computed once per frame, it is shared
    /// by every object tracked in that frame.
    pub fn forward_first_self(&self, curr: Tensor<3>, curr_pos: Tensor<3>) -> Tensor<3> {
        let out = curr + curr_pos * 0.1;
        match self.layers.first() {
            Some(l) => l.forward_self(out),
            None => out,
        }
    }

    /// The rest of [`Self::forward`], from the output of [`Self::forward_first_self`]
    /// (broadcast over the batch when it has one row).
    pub fn forward_from_first_self(
        &self,
        first: Tensor<3>,
        memory: Tensor<3>,
        memory_pos: Tensor<3>,
        num_obj_ptr_tokens: usize,
    ) -> Tensor<3> {
        // layer 0's cross-attention takes `first` as it is: one row shared by every object
        let mut out = first;
        let k_in = memory.clone() + memory_pos;
        let device = memory.device();
        if crate::kernels::host_fast_path(&device) {
            // every layer on host buffers: the target is copied out once and in once
            use crate::kernels::host::{layer_norm_params, layer_norm_rows};
            use crate::kernels::{from_host, to_host};
            let host = HostKv::new(to_host(k_in.clone()).0, to_host(memory.clone()).0);
            let (mut t, [mut bt, l, c]) = to_host(out);
            for (i, layer) in self.layers.iter().enumerate() {
                if i > 0 {
                    t = layer.self_block_host(t, bt, l);
                }
                (t, bt) = layer.cross_block_host(
                    t,
                    bt,
                    l,
                    &k_in,
                    &memory,
                    num_obj_ptr_tokens,
                    Some(&host),
                );
            }
            let b = memory.dims()[0];
            if bt != b {
                t = t.repeat(b / bt);
            }
            let (w, beta) = layer_norm_params(&self.norm);
            layer_norm_rows(&mut t, &w, &beta, LN_EPS);
            return from_host(t, [b, l, c], &device);
        }
        let host: Option<HostKv> = None;
        for (i, layer) in self.layers.iter().enumerate() {
            if i > 0 {
                out = layer.forward_self(out);
            }
            out = layer.forward_cross_mlp_kv(
                out,
                k_in.clone(),
                memory.clone(),
                num_obj_ptr_tokens,
                host.as_ref(),
            );
        }
        let b = memory.dims()[0];
        let [fb, l, c] = out.dims();
        if fb != b {
            out = out.expand([b, l, c]);
        }
        self.norm.forward(out)
    }
}

#[cfg(test)]
mod tests {
    use burn::module::Param;
    use burn::tensor::{Device, Distribution, Tensor};

    use super::*;

    #[test]
    fn fused_rope_attention_equals_generic() {
        let device = Device::flex();
        let cfg = MemoryAttentionConfig {
            d_model: 32,
            num_layers: 1,
            dim_feedforward: 16,
            kv_in_dim: 16,
            num_heads: 2,
            rope_theta: 10000.0,
            feat_sizes: [8, 8],
        };
        let m = cfg.init(&device);
        let ca = &m.layers[0].cross_attn_image;
        let rnd = |p: &Param<Tensor<2>>| {
            let t = p.val();
            Param::from_tensor(Tensor::random(
                t.shape(),
                Distribution::Normal(0.0, 0.5),
                &t.device(),
            ))
        };
        let mut ca = ca.clone();
        ca.k_proj.weight = rnd(&ca.k_proj.weight);
        let q = Tensor::<3>::random([2, 64, 32], Distribution::Normal(0.0, 1.0), &device);
        // two memory frames of 64 tokens + 4 pointer tokens (not rotated)
        let k = Tensor::<3>::random([2, 132, 16], Distribution::Normal(0.0, 1.0), &device);
        let v = Tensor::<3>::random([2, 132, 16], Distribution::Normal(0.0, 1.0), &device);
        let a = ca.forward_generic(q.clone(), k.clone(), v.clone(), 4);
        let b = ca.forward_fused(q, k, v, 4);
        let d: f32 = (a - b).abs().max().into_scalar();
        assert!(d < 1e-5, "{d}");
        // one head of 32 channels over 16-wide memories: the shared-values path (vd < hd)
        let cfg1 = MemoryAttentionConfig {
            num_heads: 1,
            ..cfg
        };
        let m1 = cfg1.init(&device);
        let mut ca1 = m1.layers[0].cross_attn_image.clone();
        ca1.v_proj.weight = rnd(&ca1.v_proj.weight);
        let q = Tensor::<3>::random([2, 64, 32], Distribution::Normal(0.0, 1.0), &device);
        let k = Tensor::<3>::random([2, 132, 16], Distribution::Normal(0.0, 1.0), &device);
        let v = Tensor::<3>::random([2, 132, 16], Distribution::Normal(0.0, 1.0), &device);
        let a = ca1.forward_generic(q.clone(), k.clone(), v.clone(), 4);
        let b = ca1.forward_fused(q, k, v, 4);
        let d: f32 = (a - b).abs().max().into_scalar();
        assert!(d < 1e-5, "shared values: {d}");
    }

    /// The host paths of a whole layer (self-attention block; cross-attention + MLP block,
    /// per-object and shared targets; plain, shared-values with two heads, and folded
    /// attention) equal the same layer in burn's ops.
    #[test]
    fn host_layer_blocks_equal_burn_ops() {
        let device = Device::flex();
        let n = |s: f32| Distribution::Normal(0.0, s as f64);
        let rnd1 = |p: &Param<Tensor<1>>, m: f32| {
            let t = p.val();
            Param::from_tensor(Tensor::random(t.shape(), n(0.3), &t.device()) + m)
        };
        // (d_model, heads, kv, memory frames): plain (kv = hd), shared values with two heads
        // (kv < hd), folded (one head, six frames)
        for (d, nh, kv, frames) in [(32, 2, 16, 2), (64, 2, 16, 2), (64, 1, 8, 6)] {
            let cfg = MemoryAttentionConfig {
                d_model: d,
                num_layers: 1,
                dim_feedforward: 48,
                kv_in_dim: kv,
                num_heads: nh,
                rope_theta: 10000.0,
                feat_sizes: [8, 8],
            };
            let mut layer = cfg.init(&device).layers[0].clone();
            for norm in [&mut layer.norm1, &mut layer.norm2, &mut layer.norm3] {
                norm.gamma = rnd1(&norm.gamma, 1.0);
                norm.beta = norm.beta.as_ref().map(|b| rnd1(b, 0.0));
            }
            let b = 2;
            let lk = frames * 64 + 4;
            let k = Tensor::<3>::random([b, lk, kv], n(1.0), &device);
            let v = Tensor::<3>::random([b, lk, kv], n(1.0), &device);
            for bt in [2, 1] {
                let tgt = Tensor::<3>::random([bt, 64, d], n(1.0), &device);
                // self-attention block
                let n1 = layer.norm1.forward(tgt.clone());
                let want = tgt.clone()
                    + layer
                        .self_attn
                        .forward_generic(n1.clone(), n1.clone(), n1, 0);
                let got = layer.forward_self(tgt.clone());
                let e: f32 = (want - got).abs().max().into_scalar();
                assert!(e < 1e-4, "self block d {d} heads {nh} batch {bt}: {e}");
                // cross-attention + MLP block
                let t2 = layer.norm2.forward(tgt.clone());
                let attn = layer
                    .cross_attn_image
                    .forward_generic(t2, k.clone(), v.clone(), 4);
                let t = tgt.clone().expand([b, 64, d]) + attn;
                let t3 = layer.norm3.forward(t.clone());
                let want = t + layer.linear2.forward(relu(layer.linear1.forward(t3)));
                let got = layer.forward_cross_mlp_kv(tgt, k.clone(), v.clone(), 4, None);
                assert_eq!(got.dims(), [b, 64, d]);
                let e: f32 = (want - got).abs().max().into_scalar();
                assert!(
                    e < 1e-4,
                    "cross block d {d} heads {nh} kv {kv} batch {bt}: {e}"
                );
            }
        }
    }

    /// The whole memory attention on host buffers (`forward_from_first_self`: layers chained
    /// without tensor round trips, a shared first output broadcast, the final norm) equals
    /// the same layers in burn's ops.
    #[test]
    fn host_memory_attention_equals_burn_ops() {
        let device = Device::flex();
        let n = |s: f64| Distribution::Normal(0.0, s);
        let cfg = MemoryAttentionConfig {
            d_model: 32,
            num_layers: 2,
            dim_feedforward: 48,
            kv_in_dim: 16,
            num_heads: 1,
            rope_theta: 10000.0,
            feat_sizes: [8, 8],
        };
        let mut m = cfg.init(&device);
        let rnd1 = |p: &Param<Tensor<1>>, mean: f32| {
            let t = p.val();
            Param::from_tensor(Tensor::random(t.shape(), n(0.3), &t.device()) + mean)
        };
        m.norm.gamma = rnd1(&m.norm.gamma, 1.0);
        m.norm.beta = m.norm.beta.as_ref().map(|b| rnd1(b, 0.0));
        let (b, frames) = (2, 2);
        let lk = frames * 64 + 4;
        let mem = Tensor::<3>::random([b, lk, 16], n(1.0), &device);
        let pos = Tensor::<3>::random([b, lk, 16], n(1.0), &device);
        for bt in [1, 2] {
            let first = Tensor::<3>::random([bt, 64, 32], n(1.0), &device);
            let got = m.forward_from_first_self(first.clone(), mem.clone(), pos.clone(), 4);
            let k = mem.clone() + pos.clone();
            let mut t = first;
            for (i, layer) in m.layers.iter().enumerate() {
                if i > 0 {
                    let n1 = layer.norm1.forward(t.clone());
                    t = t + layer
                        .self_attn
                        .forward_generic(n1.clone(), n1.clone(), n1, 0);
                }
                let t2 = layer.norm2.forward(t.clone());
                let attn = layer
                    .cross_attn_image
                    .forward_generic(t2, k.clone(), mem.clone(), 4);
                let tt = if t.dims()[0] == b {
                    t
                } else {
                    t.expand([b, 64, 32])
                } + attn;
                let t3 = layer.norm3.forward(tt.clone());
                t = tt + layer.linear2.forward(relu(layer.linear1.forward(t3)));
            }
            let want = m.norm.forward(t);
            assert_eq!(got.dims(), [b, 64, 32]);
            let e: f32 = (want - got).abs().max().into_scalar();
            assert!(e < 1e-4, "first batch {bt}: {e}");
        }
    }

    #[test]
    fn folded_rope_cross_attention_equals_generic() {
        // one head of 64 channels over 8-wide memories, six 8x8 memory frames + 4 pointer
        // tokens: the shape where `forward_fused` folds the key projection into the queries
        let device = Device::flex();
        let cfg = MemoryAttentionConfig {
            d_model: 64,
            num_layers: 1,
            dim_feedforward: 16,
            kv_in_dim: 8,
            num_heads: 1,
            rope_theta: 10000.0,
            feat_sizes: [8, 8],
        };
        let (wk, table) = (
            vec![0f32; 8 * 64],
            crate::position_encoding::axial_rope(64, 8, 8, 10000.0),
        );
        let keys = crate::kernels::rope_cross::RopeKeys {
            side: 8,
            hd: 64,
            kv: 8,
            wk: &wk,
            bk: None,
            table: &table,
        };
        assert!(crate::kernels::rope_cross::worth_folding(
            &keys, 6, 2, false
        ));
        let m = cfg.init(&device);
        let ca = m.layers[0].cross_attn_image.clone();
        let k = Tensor::<3>::random([2, 6 * 64 + 4, 8], Distribution::Normal(0.0, 1.0), &device);
        let v = Tensor::<3>::random([2, 6 * 64 + 4, 8], Distribution::Normal(0.0, 1.0), &device);
        // per-object queries, then one query grid shared by both objects
        for bq in [2, 1] {
            let q = Tensor::<3>::random([bq, 64, 64], Distribution::Normal(0.0, 1.0), &device);
            let a = ca.forward_generic(q.clone(), k.clone(), v.clone(), 4);
            let b = ca.forward_fused(q, k.clone(), v.clone(), 4);
            assert_eq!(a.dims(), [2, 64, 64]);
            let d: f32 = (a - b).abs().max().into_scalar();
            assert!(d < 1e-5, "queries batch {bq}: {d}");
        }
    }
}
