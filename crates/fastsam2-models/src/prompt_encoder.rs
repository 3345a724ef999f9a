//! `PromptEncoder` and `PositionEmbeddingRandom` (`segment_anything/modeling/prompt_encoder.py`;
//! SAM 2's class is the same plus the box-corner labels 2 and 3 on the point path).

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Embedding, EmbeddingConfig, Gelu};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::common::{LayerNorm2d, tensor_from_vec};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PromptEncoderConfig {
    pub embed_dim: usize,
    /// (H, W) of the image embedding (64, 64).
    pub image_embedding_size: [usize; 2],
    /// (H, W) of the padded encoder input (1024, 1024).
    pub input_image_size: [usize; 2],
    pub mask_in_chans: usize,
}

impl PromptEncoderConfig {
    /// The configuration of every official SAM / MobileSAM / SAM 2 model.
    pub fn sam() -> Self {
        Self {
            embed_dim: 256,
            image_embedding_size: [64, 64],
            input_image_size: [1024, 1024],
            mask_in_chans: 16,
        }
    }

    pub fn init(&self, device: &Device) -> PromptEncoder {
        let c = self.embed_dim;
        let m = self.mask_in_chans;
        let emb = || EmbeddingConfig::new(1, c).init(device);
        let conv = |cin, cout, k| {
            Conv2dConfig::new([cin, cout], [k, k])
                .with_stride([k, k])
                .init(device)
        };
        PromptEncoder {
            pe_layer: PositionEmbeddingRandom {
                positional_encoding_gaussian_matrix: Param::from_tensor(Tensor::zeros(
                    [2, c / 2],
                    device,
                )),
            },
            point_embeddings: (0..4).map(|_| emb()).collect(),
            not_a_point_embed: emb(),
            mask_downscaling: vec![
                DownscaleLayer::Conv(conv(1, m / 4, 2)),
                DownscaleLayer::Norm(LayerNorm2d::new(m / 4, 1e-6, device)),
                DownscaleLayer::Act(Gelu::default()),
                DownscaleLayer::Conv(conv(m / 4, m, 2)),
                DownscaleLayer::Norm(LayerNorm2d::new(m, 1e-6, device)),
                DownscaleLayer::Act(Gelu::default()),
                DownscaleLayer::Conv(conv(m, c, 1)),
            ],
            no_mask_embed: emb(),
            embed_dim: c,
            image_embedding_size: self.image_embedding_size,
            input_image_size: self.input_image_size,
        }
    }
}

/// Random Fourier features of 2-D coordinates.
#[derive(Module, Debug)]
pub struct PositionEmbeddingRandom {
    /// [2, F] (a registered buffer in PyTorch, part of the state dict).
    pub positional_encoding_gaussian_matrix: Param<Tensor<2>>,
}

impl PositionEmbeddingRandom {
    /// coords in [0, 1], [.., 2] -> [.., 2F] (sin then cos).
    fn pe_encoding<const D: usize>(&self, coords: Tensor<D>) -> Tensor<D> {
        let coords = coords * 2.0 - 1.0;
        let g = self.positional_encoding_gaussian_matrix.val();
        let coords = coords.matmul(g.unsqueeze::<D>()) * (2.0 * std::f64::consts::PI);
        Tensor::cat(vec![coords.clone().sin(), coords.cos()], D - 1)
    }

    /// Dense encoding of an (h, w) grid of pixel centres: [2F, h, w].
    pub fn forward(&self, [h, w]: [usize; 2]) -> Tensor<3> {
        let device = self.positional_encoding_gaussian_matrix.device();
        let mut xy = Vec::with_capacity(h * w * 2);
        for y in 0..h {
            for x in 0..w {
                xy.push((x as f32 + 0.5) / w as f32);
                xy.push((y as f32 + 0.5) / h as f32);
            }
        }
        let pe = self.pe_encoding(tensor_from_vec(xy, [h, w, 2], &device));
        pe.permute([2, 0, 1])
    }

    /// Pixel coordinates [B, N, 2] (x, y) of an image of size (H, W) -> [B, N, 2F].
    pub fn forward_with_coords(&self, coords: Tensor<3>, [h, w]: [usize; 2]) -> Tensor<3> {
        let device = coords.device();
        let scale = tensor_from_vec(vec![1.0 / w as f32, 1.0 / h as f32], [1, 1, 2], &device);
        self.pe_encoding(coords * scale)
    }
}

/// Element of `mask_downscaling` (`nn.Sequential`: conv, LN2d, GELU, conv, LN2d, GELU, conv).
#[derive(Module, Debug)]
pub enum DownscaleLayer {
    Conv(Conv2d),
    Norm(LayerNorm2d),
    Act(Gelu),
}

/// Point prompts in the encoder's input frame (pixels of the resized 1024 image).
#[derive(Clone, Debug)]
pub struct PointInput {
    /// [B, N, 2] (x, y).
    pub coords: Tensor<3>,
    /// B*N labels, row-major: 1 positive, 0 negative, -1 padding; SAM 2 also 2/3 (box corners).
    pub labels: Vec<i32>,
}

#[derive(Module, Debug)]
pub struct PromptEncoder {
    pub pe_layer: PositionEmbeddingRandom,
    pub point_embeddings: Vec<Embedding>,
    pub not_a_point_embed: Embedding,
    pub mask_downscaling: Vec<DownscaleLayer>,
    pub no_mask_embed: Embedding,
    pub embed_dim: usize,
    pub image_embedding_size: [usize; 2],
    pub input_image_size: [usize; 2],
}

impl PromptEncoder {
    /// Dense positional encoding of the image embedding grid, [1, C, h, w].
    pub fn get_dense_pe(&self) -> Tensor<4> {
        self.pe_layer
            .forward(self.image_embedding_size)
            .unsqueeze::<4>()
    }

    /// Sparse and dense prompt embeddings: ([B, N', C], [B, C, h, w]).
    pub fn forward(
        &self,
        points: Option<&PointInput>,
        boxes: Option<Tensor<2>>,
        masks: Option<Tensor<4>>,
    ) -> (Tensor<3>, Tensor<4>) {
        let bs = if let Some(p) = points {
            p.coords.dims()[0]
        } else if let Some(b) = &boxes {
            b.dims()[0]
        } else if let Some(m) = &masks {
            m.dims()[0]
        } else {
            1
        };
        let mut sparse: Vec<Tensor<3>> = Vec::new();
        if let Some(p) = points {
            sparse.push(self.embed_points(p, boxes.is_none()));
        }
        if let Some(b) = boxes {
            sparse.push(self.embed_boxes(b));
        }
        let device = self.not_a_point_embed.weight.device();
        let sparse = if sparse.is_empty() {
            Tensor::zeros([bs, 0, self.embed_dim], &device)
        } else {
            Tensor::cat(sparse, 1)
        };
        let dense = match masks {
            Some(m) => self.embed_masks(m),
            None => {
                let [h, w] = self.image_embedding_size;
                self.no_mask_embed
                    .weight
                    .val()
                    .reshape([1, self.embed_dim, 1, 1])
                    .expand([bs, self.embed_dim, h, w])
            }
        };
        (sparse, dense)
    }

    /// `_embed_points` on the host (inference): the same arithmetic as the tensor path, in a
    /// handful of floats instead of a dozen tiny tensor operations.
    fn embed_points_host(&self, p: &PointInput, pad: bool) -> Tensor<3> {
        use crate::kernels::{from_host, to_host};
        let [b, n, _] = p.coords.dims();
        let device = p.coords.device();
        let (coords, _) = to_host(p.coords.clone());
        let (g, [_, f]) = to_host(self.pe_layer.positional_encoding_gaussian_matrix.val());
        let c = self.embed_dim;
        let not_a_point = to_host(self.not_a_point_embed.weight.val()).0;
        let pts: Vec<Vec<f32>> = self
            .point_embeddings
            .iter()
            .map(|e| to_host(e.weight.val()).0)
            .collect();
        let [ih, iw] = self.input_image_size;
        let np = if pad { n + 1 } else { n };
        let mut out = vec![0f32; b * np * c];
        for i in 0..b {
            for j in 0..np {
                let (x, y, label) = if j < n {
                    (
                        coords[(i * n + j) * 2] + 0.5,
                        coords[(i * n + j) * 2 + 1] + 0.5,
                        p.labels[i * n + j],
                    )
                } else {
                    (0.0, 0.0, -1)
                };
                let row = &mut out[(i * np + j) * c..(i * np + j + 1) * c];
                if label == -1 {
                    row.copy_from_slice(&not_a_point);
                    continue;
                }
                let (u, v) = (2.0 * (x / iw as f32) - 1.0, 2.0 * (y / ih as f32) - 1.0);
                for k in 0..f {
                    let a = (u * g[k] + v * g[f + k]) * (2.0 * std::f32::consts::PI);
                    row[k] = a.sin();
                    row[f + k] = a.cos();
                }
                if (0..pts.len() as i32).contains(&label) {
                    for (r, e) in row.iter_mut().zip(&pts[label as usize]) {
                        *r += e;
                    }
                }
            }
        }
        from_host(out, [b, np, c], &device)
    }

    fn embed_points(&self, p: &PointInput, pad: bool) -> Tensor<3> {
        if crate::kernels::host_fast_path(&p.coords.device()) {
            return self.embed_points_host(p, pad);
        }
        let [b, n, _] = p.coords.dims();
        let device = p.coords.device();
        let mut coords = p.coords.clone() + 0.5;
        let mut labels = p.labels.clone();
        let n = if pad {
            coords = Tensor::cat(vec![coords, Tensor::zeros([b, 1, 2], &device)], 1);
            labels = (0..b)
                .flat_map(|i| p.labels[i * n..(i + 1) * n].iter().copied().chain([-1]))
                .collect();
            n + 1
        } else {
            n
        };
        let pe = self
            .pe_layer
            .forward_with_coords(coords, self.input_image_size);
        let mask = |pred: &dyn Fn(i32) -> bool| {
            let v: Vec<f32> = labels
                .iter()
                .map(|&l| if pred(l) { 1.0 } else { 0.0 })
                .collect();
            tensor_from_vec(v, [b, n, 1], &device)
        };
        let c = self.embed_dim;
        let mut out = pe * mask(&|l| l != -1)
            + mask(&|l| l == -1) * self.not_a_point_embed.weight.val().reshape([1, 1, c]);
        for (k, emb) in self.point_embeddings.iter().enumerate() {
            let k = k as i32;
            if labels.contains(&k) {
                out = out + mask(&|l| l == k) * emb.weight.val().reshape([1, 1, c]);
            }
        }
        out
    }

    fn embed_boxes(&self, boxes: Tensor<2>) -> Tensor<3> {
        let [b, _] = boxes.dims();
        let coords = (boxes + 0.5).reshape([b, 2, 2]);
        let pe = self
            .pe_layer
            .forward_with_coords(coords, self.input_image_size);
        let c = self.embed_dim;
        let corners = Tensor::cat(
            vec![
                self.point_embeddings[2].weight.val(),
                self.point_embeddings[3].weight.val(),
            ],
            0,
        )
        .reshape([1, 2, c]);
        pe + corners
    }

    /// [B, 1, 256, 256] low-res mask logits -> [B, C, 64, 64].
    pub fn embed_masks(&self, masks: Tensor<4>) -> Tensor<4> {
        let mut x = masks;
        for layer in &self.mask_downscaling {
            x = match layer {
                DownscaleLayer::Conv(c) => c.forward(x),
                DownscaleLayer::Norm(n) => n.forward(x),
                DownscaleLayer::Act(_) => crate::kernels::gelu(x),
            };
        }
        x
    }
}
