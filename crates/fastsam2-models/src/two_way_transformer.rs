//! `TwoWayTransformer` of SAM's mask decoder (`segment_anything/modeling/transformer.py`;
//! identical in SAM 2).

use burn::module::Module;
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::common::{Activation, Mlp, MlpBlock};

/// `x += pe` item by item (`item` floats each): `pe` is one item (shared) or one per item.
fn add_items(x: &mut [f32], pe: &[f32], item: usize) {
    use crate::kernels::host::add_assign;
    assert!(
        pe.len() == item || pe.len() == x.len(),
        "position encoding: {} floats for items of {item}",
        pe.len()
    );
    for (bi, chunk) in x.chunks_exact_mut(item).enumerate() {
        let p = if pe.len() == item {
            pe
        } else {
            &pe[bi * item..(bi + 1) * item]
        };
        add_assign(chunk, p);
    }
}

/// The blocks' LayerNorm epsilon (their `LayerNormConfig`'s too).
const LN_EPS: f32 = 1e-5;

/// `dst [m, n] (+)= alpha A B` for row-major `dst` and strided `A` `[m, k]` / `B` `[k, n]`
/// (`(pointer, row stride, column stride)`), on every thread.
///
/// # Safety
/// Every index of the three operands is in bounds.
unsafe fn gemm_par(
    [m, n, k]: [usize; 3],
    dst: *mut f32,
    accumulate: bool,
    (a, a_rs, a_cs): (*const f32, usize, usize),
    (b, b_rs, b_cs): (*const f32, usize, usize),
    alpha: f32,
) {
    // SAFETY: the caller's contract.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            n as isize,
            accumulate,
            a,
            a_cs as isize,
            a_rs as isize,
            b,
            b_cs as isize,
            b_rs as isize,
            if accumulate { 1.0 } else { 0.0 },
            alpha,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(0),
        )
    }
}

/// The MLP of a two-way block: SAM's `MLPBlock` or SAM 2's `MLP(num_layers=2)` (ReLU).
#[allow(clippy::large_enum_variant)] // one per block
#[derive(Module, Debug)]
pub enum TwoWayMlp {
    Block(MlpBlock),
    Layers(Mlp),
}

impl TwoWayMlp {
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        match self {
            TwoWayMlp::Block(m) => m.forward(x),
            TwoWayMlp::Layers(m) => m.forward(x),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TwoWayTransformerConfig {
    pub depth: usize,
    pub embedding_dim: usize,
    pub num_heads: usize,
    pub mlp_dim: usize,
    pub attention_downsample_rate: usize,
    /// SAM 2 keys the block MLP as `mlp.layers.{0,1}` (`sam2_utils.MLP`) instead of
    /// `mlp.lin1/lin2`; same computation.
    #[serde(default)]
    pub sam2_mlp_keys: bool,
}

impl TwoWayTransformerConfig {
    /// The official decoder transformer (depth 2, 256 wide, 8 heads, MLP 2048).
    pub fn sam() -> Self {
        Self {
            depth: 2,
            embedding_dim: 256,
            num_heads: 8,
            mlp_dim: 2048,
            attention_downsample_rate: 2,
            sam2_mlp_keys: false,
        }
    }

    pub fn init(&self, device: &Device) -> TwoWayTransformer {
        let d = self.embedding_dim;
        let ln = || LayerNormConfig::new(d).with_epsilon(1e-5).init(device);
        let layers = (0..self.depth)
            .map(|i| TwoWayAttentionBlock {
                self_attn: Attention::new(d, self.num_heads, 1, device),
                norm1: ln(),
                cross_attn_token_to_image: Attention::new(
                    d,
                    self.num_heads,
                    self.attention_downsample_rate,
                    device,
                ),
                norm2: ln(),
                mlp: if self.sam2_mlp_keys {
                    TwoWayMlp::Layers(Mlp::new(d, self.mlp_dim, d, 2, false, device))
                } else {
                    TwoWayMlp::Block(MlpBlock::new(d, self.mlp_dim, Activation::Relu, device))
                },
                norm3: ln(),
                norm4: ln(),
                cross_attn_image_to_token: Attention::new(
                    d,
                    self.num_heads,
                    self.attention_downsample_rate,
                    device,
                ),
                skip_first_layer_pe: i == 0,
            })
            .collect();
        TwoWayTransformer {
            layers,
            final_attn_token_to_image: Attention::new(
                d,
                self.num_heads,
                self.attention_downsample_rate,
                device,
            ),
            norm_final_attn: ln(),
        }
    }
}

/// Attention with projections to an internal dim of `embedding_dim / downsample_rate`.
/// The few-token factors of [`Attention`]'s few-keys route: scores are `q m (+ bk)`, the
/// output `P vo (+ b_o)`.
struct FewKeys {
    /// `W_q,h k_h^T`: `[B, d_q, nH * lk]`.
    m: Tensor<3>,
    /// `b_q,h . k_h` per key (unscaled): `[B, nH * lk]`.
    bk: Option<Tensor<2>>,
    /// `v_h W_o,h`: `[B, nH * lk, d_out]`.
    vo: Tensor<3>,
    hd: usize,
}

#[derive(Module, Debug)]
pub struct Attention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub out_proj: Linear,
    pub num_heads: usize,
}

impl Attention {
    pub fn new(dim: usize, num_heads: usize, downsample_rate: usize, device: &Device) -> Self {
        Self::with_kv_dim(dim, dim, num_heads, downsample_rate, device)
    }

    /// Keys/values of another width (SAM 2 memory attention: `kv_in_dim`).
    pub fn with_kv_dim(
        dim: usize,
        kv_dim: usize,
        num_heads: usize,
        downsample_rate: usize,
        device: &Device,
    ) -> Self {
        let internal = dim / downsample_rate;
        Self {
            q_proj: LinearConfig::new(dim, internal).init(device),
            k_proj: LinearConfig::new(kv_dim, internal).init(device),
            v_proj: LinearConfig::new(kv_dim, internal).init(device),
            out_proj: LinearConfig::new(internal, dim).init(device),
            num_heads,
        }
    }

    /// [B, N, C] -> [B, nH, N, C/nH]
    pub fn separate_heads(&self, x: Tensor<3>) -> Tensor<4> {
        let [b, n, c] = x.dims();
        x.reshape([b, n, self.num_heads, c / self.num_heads])
            .swap_dims(1, 2)
    }

    /// [B, nH, N, c] -> [B, N, nH*c]
    pub fn recombine_heads(x: Tensor<4>) -> Tensor<3> {
        let [b, nh, n, c] = x.dims();
        x.swap_dims(1, 2).reshape([b, n, nh * c])
    }

    /// Attention between a few tokens and many image positions, reordered so that the wide
    /// side is never projected: with few queries, scores are `(q W_k^T) x^T` and values
    /// `(P x) W_v`; with few keys, scores are `x (W_q k^T)` and the output `P (v W_o)`.
    /// Same result as [`Attention::forward_generic`] (the key bias only shifts each query's
    /// scores by a constant, which softmax ignores); 2-3x fewer FLOPs in SAM's decoder.
    pub fn forward(&self, q: Tensor<3>, k: Tensor<3>, v: Tensor<3>) -> Tensor<3> {
        let [_, lq, _] = q.dims();
        let [_, lk, _] = k.dims();
        let internal = self.q_proj.weight.dims()[1];
        let nh = self.num_heads;
        if lq * nh < internal && lk > internal {
            self.forward_few_queries(q, k, v)
        } else if lk * nh < internal && lq > internal {
            self.forward_few_keys(q, k, v)
        } else {
            self.forward_generic(q, k, v)
        }
    }

    fn forward_few_queries(&self, q: Tensor<3>, k: Tensor<3>, v: Tensor<3>) -> Tensor<3> {
        let [b, lq, _] = q.dims();
        let d_kv = k.dims()[2];
        let (qk, hd) = self.few_queries_qk(q); // [B, nH*lq, d_kv]
        let scores = qk.matmul(k.swap_dims(1, 2)) * (hd as f64).powf(-0.5); // [B, nH*lq, lk]
        let p = crate::kernels::softmax_last(scores);
        let px = p.matmul(v).reshape([b, self.num_heads, lq, d_kv]); // P x_v
        self.few_queries_out(px, hd)
    }

    /// The few-token side of the few-queries route: `(q_h W_k,h^T [B, nH * lq, d_kv], hd)`.
    fn few_queries_qk(&self, q: Tensor<3>) -> (Tensor<3>, usize) {
        let [b, lq, _] = q.dims();
        let nh = self.num_heads;
        let d_kv = self.k_proj.weight.dims()[0];
        let qh = self.separate_heads(self.q_proj.forward(q)); // [B, nH, lq, hd]
        let hd = qh.dims()[3];
        let wk = self.k_proj.weight.val(); // [d_kv, nH*hd]
        let wk = wk
            .reshape([d_kv, nh, hd])
            .permute([1, 2, 0])
            .unsqueeze::<4>(); // [1, nH, hd, d_kv]
        (qh.matmul(wk).reshape([b, nh * lq, d_kv]), hd)
    }

    /// The output of the few-queries route from `P x_v` `[B, nH, lq, d_kv]`:
    /// `out_proj((P x_v) W_v,h + b_v)`.
    fn few_queries_out(&self, px: Tensor<4>, hd: usize) -> Tensor<3> {
        let nh = self.num_heads;
        let d_kv = px.dims()[3];
        let wv = self
            .v_proj
            .weight
            .val()
            .reshape([d_kv, nh, hd])
            .swap_dims(0, 1)
            .unsqueeze::<4>(); // [1, nH, d_kv, hd]
        let mut out = px.matmul(wv); // [B, nH, lq, hd]
        if let Some(bv) = &self.v_proj.bias {
            out = out + bv.val().reshape([1, nh, 1, hd]);
        }
        self.out_proj.forward(Self::recombine_heads(out))
    }

    fn forward_few_keys(&self, q: Tensor<3>, k: Tensor<3>, v: Tensor<3>) -> Tensor<3> {
        let [b, lq, _] = q.dims();
        let [_, lk, _] = k.dims();
        let nh = self.num_heads;
        let f = self.few_keys_factors(k, v);
        let mut scores = q.matmul(f.m); // [B, lq, nH*lk]
        if let Some(bk) = f.bk {
            scores = scores + bk.unsqueeze_dim::<3>(1);
        }
        let scores = scores.reshape([b, lq, nh, lk]) * (f.hd as f64).powf(-0.5);
        let p = crate::kernels::softmax_last(scores).reshape([b, lq, nh * lk]);
        let mut out = p.matmul(f.vo);
        if let Some(bo) = &self.out_proj.bias {
            out = out + bo.val().unsqueeze::<3>();
        }
        out
    }

    /// The few-token side of the few-keys route (see [`FewKeys`]).
    fn few_keys_factors(&self, k: Tensor<3>, v: Tensor<3>) -> FewKeys {
        let [b, lk, _] = k.dims();
        let nh = self.num_heads;
        let d_q = self.q_proj.weight.dims()[0];
        let kh = self.separate_heads(self.k_proj.forward(k)); // [B, nH, lk, hd]
        let vh = self.separate_heads(self.v_proj.forward(v));
        let hd = kh.dims()[3];
        let wq = self
            .q_proj
            .weight
            .val()
            .reshape([d_q, nh, hd])
            .swap_dims(0, 1)
            .unsqueeze::<4>(); // [1, nH, d_q, hd]
        let m = wq.matmul(kh.clone().swap_dims(2, 3)); // [B, nH, d_q, lk]
        let m = m.permute([0, 2, 1, 3]).reshape([b, d_q, nh * lk]);
        // b_q,h . k_h per key
        let bk = self.q_proj.bias.as_ref().map(|bq| {
            bq.val()
                .reshape([1, nh, 1, hd])
                .matmul(kh.swap_dims(2, 3))
                .reshape([b, nh * lk])
        });
        let d_out = self.out_proj.weight.dims()[1];
        let wo = self
            .out_proj
            .weight
            .val()
            .reshape([nh, hd, d_out])
            .unsqueeze::<4>(); // [1, nH, hd, d_out]
        let vo = vh.matmul(wo).reshape([b, nh * lk, d_out]); // v_h W_o,h
        FewKeys { m, bk, vo, hd }
    }

    /// Whether [`Self::forward`] takes the few-queries (`Some(true)`) or few-keys
    /// (`Some(false)`) route for `lq` queries and `lk` keys, `None` for the generic one.
    fn route(&self, lq: usize, lk: usize) -> Option<bool> {
        let internal = self.q_proj.weight.dims()[1];
        let nh = self.num_heads;
        if lq * nh < internal && lk > internal {
            Some(true)
        } else if lk * nh < internal && lq > internal {
            Some(false)
        } else {
            None
        }
    }

    /// [`Self::forward_few_queries`] with the many keys and values as host buffers
    /// `[b, lk, d_kv]`: the wide products and the softmax on the host, the few-token side in
    /// burn's ops.
    fn few_queries_host(&self, q: Tensor<3>, k: &[f32], v: &[f32], lk: usize) -> Tensor<3> {
        use crate::kernels::attention::softmax_rows;
        use crate::kernels::{from_host, to_host};
        let device = q.device();
        let [b, lq, _] = q.dims();
        let nh = self.num_heads;
        let d_kv = self.k_proj.weight.dims()[0];
        assert!(
            k.len() == b * lk * d_kv && v.len() == k.len(),
            "few_queries_host: sizes"
        );
        let (qk, hd) = self.few_queries_qk(q);
        let (qk, _) = to_host(qk);
        let rows = nh * lq;
        let scale = (hd as f32).powf(-0.5);
        let mut px = vec![0f32; b * rows * d_kv];
        let mut s = vec![0f32; rows * lk];
        for bi in 0..b {
            let (kb, vb) = (&k[bi * lk * d_kv..], &v[bi * lk * d_kv..]);
            // SAFETY: s [rows, lk] = qk_b [rows, d_kv] k_b^T (k_b [lk, d_kv] read transposed);
            // px_b [rows, d_kv] = s v_b.
            unsafe {
                gemm_par(
                    [rows, lk, d_kv],
                    s.as_mut_ptr(),
                    false,
                    (qk[bi * rows * d_kv..].as_ptr(), d_kv, 1),
                    (kb.as_ptr(), 1, d_kv),
                    scale,
                );
            }
            softmax_rows(&mut s, lk);
            unsafe {
                gemm_par(
                    [rows, d_kv, lk],
                    px[bi * rows * d_kv..].as_mut_ptr(),
                    false,
                    (s.as_ptr(), lk, 1),
                    (vb.as_ptr(), d_kv, 1),
                    1.0,
                );
            }
        }
        self.few_queries_out(from_host(px, [b, nh, lq, d_kv], &device), hd)
    }

    /// [`Self::forward_few_keys`] with the many queries as a host buffer `q` `[b, lq, d_q]`:
    /// returns the output `[b, lq, d_out]` on the host (output bias included).
    fn few_keys_host(
        &self,
        q: &[f32],
        b: usize,
        lq: usize,
        k: Tensor<3>,
        v: Tensor<3>,
    ) -> Vec<f32> {
        use crate::kernels::attention::softmax_rows;
        use crate::kernels::to_host;
        let [_, lk, _] = k.dims();
        let nh = self.num_heads;
        let d_q = self.q_proj.weight.dims()[0];
        let d_out = self.out_proj.weight.dims()[1];
        assert!(q.len() == b * lq * d_q, "few_keys_host: sizes");
        let f = self.few_keys_factors(k, v);
        let scale = (f.hd as f32).powf(-0.5);
        let w = nh * lk;
        let (m, _) = to_host(f.m);
        // per key: (b_q,h . k_h) * scale, added to every query's scores
        let bk = f.bk.map(|bk| to_host(bk * scale as f64).0);
        let (vo, _) = to_host(f.vo);
        let bo = self.out_proj.bias.as_ref().map(|p| to_host(p.val()).0);
        let mut out = vec![0f32; b * lq * d_out];
        let mut s = vec![0f32; lq * w];
        for bi in 0..b {
            // scores [lq, nH lk] = q_b m_b (+ the key terms), scaled
            match &bk {
                Some(bk) => {
                    for row in s.chunks_exact_mut(w) {
                        row.copy_from_slice(&bk[bi * w..(bi + 1) * w]);
                    }
                }
                None => s.fill(0.0),
            }
            // SAFETY: q_b [lq, d_q], m_b [d_q, w], s [lq, w]; then o_b [lq, d_out] = p vo_b.
            unsafe {
                gemm_par(
                    [lq, w, d_q],
                    s.as_mut_ptr(),
                    true,
                    (q[bi * lq * d_q..].as_ptr(), d_q, 1),
                    (m[bi * d_q * w..].as_ptr(), w, 1),
                    scale,
                );
            }
            // one softmax per (query, head): rows of lk
            softmax_rows(&mut s, lk);
            let ob = &mut out[bi * lq * d_out..(bi + 1) * lq * d_out];
            if let Some(bo) = &bo {
                for row in ob.chunks_exact_mut(d_out) {
                    row.copy_from_slice(bo);
                }
            }
            unsafe {
                gemm_par(
                    [lq, d_out, w],
                    ob.as_mut_ptr(),
                    bo.is_some(),
                    (s.as_ptr(), w, 1),
                    (vo[bi * w * d_out..].as_ptr(), d_out, 1),
                    1.0,
                );
            }
        }
        out
    }

    /// Burn ops only (any device, differentiable).
    pub fn forward_generic(&self, q: Tensor<3>, k: Tensor<3>, v: Tensor<3>) -> Tensor<3> {
        let q = self.separate_heads(self.q_proj.forward(q));
        let k = self.separate_heads(self.k_proj.forward(k));
        let v = self.separate_heads(self.v_proj.forward(v));
        let out = attention(q, k, v, None, None, AttentionModuleOptions::default());
        self.out_proj.forward(Self::recombine_heads(out))
    }
}

#[derive(Module, Debug)]
pub struct TwoWayAttentionBlock {
    pub self_attn: Attention,
    pub norm1: LayerNorm,
    pub cross_attn_token_to_image: Attention,
    pub norm2: LayerNorm,
    pub mlp: TwoWayMlp,
    pub norm3: LayerNorm,
    pub norm4: LayerNorm,
    pub cross_attn_image_to_token: Attention,
    pub skip_first_layer_pe: bool,
}

impl TwoWayAttentionBlock {
    pub fn forward(
        &self,
        queries: Tensor<3>,
        keys: Tensor<3>,
        query_pe: Tensor<3>,
        key_pe: Tensor<3>,
    ) -> (Tensor<3>, Tensor<3>) {
        let queries = self.token_self_attention(queries, &query_pe);

        let q = queries.clone() + query_pe.clone();
        let k = keys.clone() + key_pe;
        let queries = queries
            + self
                .cross_attn_token_to_image
                .forward(q, k.clone(), keys.clone());
        let queries = self.token_mlp(self.norm2.forward(queries));

        let q = queries.clone() + query_pe;
        let keys = keys
            + self
                .cross_attn_image_to_token
                .forward(k, q, queries.clone());
        let keys = self.norm4.forward(keys);
        (queries, keys)
    }
}

impl TwoWayAttentionBlock {
    /// The token side's first step, shared by [`Self::forward`] and [`Self::forward_host`]:
    /// `norm1` of the queries' self-attention (with the position encoding unless this is the
    /// first layer, which replaces the queries by the attention output).
    fn token_self_attention(&self, queries: Tensor<3>, query_pe: &Tensor<3>) -> Tensor<3> {
        let queries = if self.skip_first_layer_pe {
            self.self_attn
                .forward(queries.clone(), queries.clone(), queries)
        } else {
            let q = queries.clone() + query_pe.clone();
            queries.clone() + self.self_attn.forward(q.clone(), q, queries)
        };
        self.norm1.forward(queries)
    }

    /// `norm3(queries + mlp(queries))`, the token side's feed-forward step.
    fn token_mlp(&self, queries: Tensor<3>) -> Tensor<3> {
        self.norm3
            .forward(queries.clone() + self.mlp.forward(queries))
    }

    /// [`Self::forward`] with the image side (`keys` `[b, lk, C]`, `key_pe` `[1 or b, lk, C]`)
    /// as host buffers: the key position sum, both wide attention products, the residual
    /// and `norm4` on the host (through burn's ops each was a pass over a 4 MB map and a
    /// copy); the token side stays in burn's ops.
    fn forward_host(
        &self,
        queries: Tensor<3>,
        mut keys: Vec<f32>,
        lk: usize,
        query_pe: Tensor<3>,
        key_pe: &[f32],
    ) -> (Tensor<3>, Vec<f32>) {
        use crate::kernels::host::{add_assign, layer_norm_params, layer_norm_rows};
        let queries = self.token_self_attention(queries, &query_pe);
        let b = queries.dims()[0];
        let mut k = keys.clone();
        add_items(&mut k, key_pe, keys.len() / b);
        let q = queries.clone() + query_pe.clone();
        let queries = queries
            + self
                .cross_attn_token_to_image
                .few_queries_host(q, &k, &keys, lk);
        let queries = self.token_mlp(self.norm2.forward(queries));
        let q = queries.clone() + query_pe;
        let out = self
            .cross_attn_image_to_token
            .few_keys_host(&k, b, lk, q, queries.clone());
        add_assign(&mut keys, &out);
        let (w, beta) = layer_norm_params(&self.norm4);
        layer_norm_rows(&mut keys, &w, &beta, LN_EPS);
        (queries, keys)
    }
}

#[derive(Module, Debug)]
pub struct TwoWayTransformer {
    pub layers: Vec<TwoWayAttentionBlock>,
    pub final_attn_token_to_image: Attention,
    pub norm_final_attn: LayerNorm,
}

impl TwoWayTransformer {
    /// image_embedding, image_pe: [B, C, h, w]; point_embedding: [B, N, C].
    /// Returns (queries [B, N, C], keys [B, h*w, C]).
    pub fn forward(
        &self,
        image_embedding: Tensor<4>,
        image_pe: Tensor<4>,
        point_embedding: Tensor<3>,
    ) -> (Tensor<3>, Tensor<3>) {
        let n_tok = point_embedding.dims()[1];
        let [_, _, h, w] = image_embedding.dims();
        if crate::kernels::host_fast_path(&image_embedding.device())
            && self.host_routes(n_tok, h * w)
        {
            return self.forward_host(image_embedding, image_pe, point_embedding);
        }
        self.forward_ops(image_embedding, image_pe, point_embedding)
    }

    /// [`Self::forward`] in burn's ops (the block-level kernels of [`Attention::forward`]).
    pub fn forward_ops(
        &self,
        image_embedding: Tensor<4>,
        image_pe: Tensor<4>,
        point_embedding: Tensor<3>,
    ) -> (Tensor<3>, Tensor<3>) {
        let image_embedding =
            crate::kernels::contiguous(image_embedding.flatten::<3>(2, 3).swap_dims(1, 2));
        let image_pe = crate::kernels::contiguous(image_pe.flatten::<3>(2, 3).swap_dims(1, 2));
        let mut queries = point_embedding.clone();
        let mut keys = image_embedding;
        for layer in &self.layers {
            (queries, keys) =
                layer.forward(queries, keys, point_embedding.clone(), image_pe.clone());
        }
        let q = queries.clone() + point_embedding;
        let k = keys.clone() + image_pe;
        let queries = queries + self.final_attn_token_to_image.forward(q, k, keys.clone());
        (self.norm_final_attn.forward(queries), keys)
    }

    /// Whether every image-side attention takes the few-token routes (the host path).
    fn host_routes(&self, n_tok: usize, n_img: usize) -> bool {
        self.layers.iter().all(|l| {
            l.cross_attn_token_to_image.route(n_tok, n_img) == Some(true)
                && l.cross_attn_image_to_token.route(n_img, n_tok) == Some(false)
        }) && self.final_attn_token_to_image.route(n_tok, n_img) == Some(true)
    }

    /// [`Self::forward`] with the image side on host buffers from the first layer to the
    /// last (see [`TwoWayAttentionBlock::forward_host`]).
    fn forward_host(
        &self,
        image_embedding: Tensor<4>,
        image_pe: Tensor<4>,
        point_embedding: Tensor<3>,
    ) -> (Tensor<3>, Tensor<3>) {
        use crate::kernels::{from_host, to_host};
        let device = image_embedding.device();
        let [b, c, h, w] = image_embedding.dims();
        let lk = h * w;
        let (mut keys, _) = to_host(image_embedding.flatten::<3>(2, 3).swap_dims(1, 2));
        let (pe, _) = to_host(image_pe.flatten::<3>(2, 3).swap_dims(1, 2));
        let mut queries = point_embedding.clone();
        for layer in &self.layers {
            (queries, keys) = layer.forward_host(queries, keys, lk, point_embedding.clone(), &pe);
        }
        let q = queries.clone() + point_embedding;
        let mut k = keys.clone();
        add_items(&mut k, &pe, lk * c);
        let queries = queries
            + self
                .final_attn_token_to_image
                .few_queries_host(q, &k, &keys, lk);
        (
            self.norm_final_attn.forward(queries),
            from_host(keys, [b, lk, c], &device),
        )
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, Distribution, Tensor};

    #[test]
    fn fused_attention_equals_generic() {
        let device = Device::flex();
        let mut a = super::Attention::new(64, 4, 2, &device);
        let rnd = |p: &burn::module::Param<Tensor<1>>| {
            let t = p.val();
            burn::module::Param::from_tensor(Tensor::random(
                t.shape(),
                Distribution::Normal(0.0, 1.0),
                &t.device(),
            ))
        };
        for l in [&mut a.q_proj, &mut a.k_proj, &mut a.v_proj, &mut a.out_proj] {
            l.bias = l.bias.as_ref().map(rnd);
        }
        let q = Tensor::<3>::random([2, 7, 64], Distribution::Normal(0.0, 1.0), &device);
        let k = Tensor::<3>::random([2, 300, 64], Distribution::Normal(0.0, 1.0), &device);
        for (q, k) in [(q.clone(), k.clone()), (k, q)] {
            let d: f32 = (a.forward(q.clone(), k.clone(), k.clone())
                - a.forward_generic(q, k.clone(), k))
            .abs()
            .max()
            .into_scalar();
            assert!(d < 1e-5, "{d}");
        }
    }

    /// The transformer with its image side on host buffers equals it in burn's ops (random
    /// biases and norms; SAM's shape scaled down; one and per-item position maps).
    #[test]
    fn host_transformer_equals_burn_ops() {
        let device = Device::flex();
        let n = |s: f64| Distribution::Normal(0.0, s);
        let cfg = super::TwoWayTransformerConfig {
            depth: 2,
            embedding_dim: 64,
            num_heads: 4,
            mlp_dim: 96,
            attention_downsample_rate: 2,
            sam2_mlp_keys: true,
        };
        let mut t = cfg.init(&device);
        let rnd = |p: &burn::module::Param<Tensor<1>>, m: f32| {
            let x = p.val();
            burn::module::Param::from_tensor(Tensor::random(x.shape(), n(0.3), &x.device()) + m)
        };
        let mut attns: Vec<&mut super::Attention> = Vec::new();
        let mut norms: Vec<&mut burn::nn::LayerNorm> = vec![&mut t.norm_final_attn];
        for l in &mut t.layers {
            attns.push(&mut l.self_attn);
            attns.push(&mut l.cross_attn_token_to_image);
            attns.push(&mut l.cross_attn_image_to_token);
            norms.extend([&mut l.norm1, &mut l.norm2, &mut l.norm3, &mut l.norm4]);
        }
        attns.push(&mut t.final_attn_token_to_image);
        for a in attns {
            for l in [&mut a.q_proj, &mut a.k_proj, &mut a.v_proj, &mut a.out_proj] {
                l.bias = l.bias.as_ref().map(|b| rnd(b, 0.0));
            }
        }
        for nm in norms {
            nm.gamma = rnd(&nm.gamma, 1.0);
            nm.beta = nm.beta.as_ref().map(|b| rnd(b, 0.0));
        }
        let b = 2;
        let img = Tensor::<4>::random([b, 64, 16, 16], n(1.0), &device);
        let tokens = Tensor::<3>::random([b, 6, 64], n(1.0), &device);
        for pb in [1, b] {
            let pe = Tensor::<4>::random([pb, 64, 16, 16], n(1.0), &device);
            let pe_b = pe.clone().expand([b, 64, 16, 16]);
            assert!(t.host_routes(6, 256));
            let (q0, k0) = t.forward_ops(img.clone(), pe_b, tokens.clone());
            let (q1, k1) = t.forward(img.clone(), pe, tokens.clone());
            assert_eq!(k1.dims(), [b, 256, 64]);
            let dq: f32 = (q0 - q1).abs().max().into_scalar();
            let dk: f32 = (k0 - k1).abs().max().into_scalar();
            assert!(
                dq < 1e-4 && dk < 1e-4,
                "position maps {pb}: queries {dq}, keys {dk}"
            );
        }
    }
}
