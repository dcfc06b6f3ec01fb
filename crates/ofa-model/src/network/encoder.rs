//! OFA encoder: ResNet patch features and text embeddings in one sequence (image first), with
//! decoupled absolute position biases and per-layer relative biases, NormFormer pre-LN layers.

use std::sync::Arc;

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::cpu::norm::LayerNorm;

use crate::cpu::bias::{block_diagonal, rel_block_tensor, RelBlock};
use crate::cpu::softmax::{AttnBias, Bias};
use crate::load::config::OfaConfig;
use crate::network::buckets::{image_buckets, image_position_ids, token_buckets};
use crate::network::epilogue::add_norm;
use crate::network::layers::{
    layer_norm, position_bias, position_bias_host, rel_table, Attention, FeedForward, RelTable,
};
use crate::network::linear::{linear, Linear};
use crate::network::position_cache::{bias_rows, text_rows, LayerBiases, RowCache};
use crate::network::resnet::{ResNet, ResNetLayout};
use crate::profile::step;

/// Which of the cached position rows [`Encoder::position_rows`] gives.
const QUERIES: usize = 0;
const KEYS: usize = 1;
const POSITIONS: usize = 2;

#[derive(Debug, Clone)]
struct EncoderLayer {
    self_attn: Attention,
    self_attn_layer_norm: LayerNorm,
    self_attn_mid_layer_norm: LayerNorm,
    final_layer_norm: LayerNorm,
    ffn: FeedForward,
}

impl EncoderLayer {
    fn new(cfg: &OfaConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.d_model;
        let act = cfg.activation().map_err(candle_core::Error::msg)?;
        Ok(Self {
            self_attn: Attention::new(
                d,
                cfg.encoder_attention_heads,
                cfg.attn_scale_factor,
                vb.pp("self_attn"),
            )?,
            self_attn_layer_norm: layer_norm(d, vb.pp("self_attn_layer_norm"))?,
            self_attn_mid_layer_norm: layer_norm(d, vb.pp("self_attn_mid_layer_norm"))?,
            final_layer_norm: layer_norm(d, vb.pp("final_layer_norm"))?,
            ffn: FeedForward::new(d, cfg.encoder_ffn_dim, act, vb)?,
        })
    }

    fn quantize_int8(&mut self) -> Result<()> {
        self.self_attn.quantize_int8()?;
        self.ffn.quantize_int8()
    }

    fn forward(&self, x: &Tensor, bias: &Bias<'_>, mask: Option<&Tensor>) -> Result<Tensor> {
        let d = x.device();
        let h = step("layer norm", d, || self.self_attn_layer_norm.forward(x))?;
        let h = self.self_attn.forward(&h, &h, bias, mask)?;
        let x = step("residual, mid layer norm", d, || {
            add_norm(x, &h, &self.self_attn_mid_layer_norm)
        })?;
        let h = step("layer norm", d, || self.final_layer_norm.forward(&x))?;
        self.ffn.forward_add(&h, &x)
    }
}

/// What the decoder needs from the encoder.
#[derive(Debug, Clone)]
pub struct EncoderOutput {
    /// `[B, N + T, D]` after the final layer norm.
    pub hidden: Tensor,
    /// `[1, N + T, D]` layer-normed position embeddings (image then text), reused by cross-attention.
    pub positions: Tensor,
    /// Additive key mask `[B, N + T]` when some text is padded.
    pub key_mask: Option<Tensor>,
    /// The patch grid `(h, w)`: the first `h·w` rows of `positions` are the image's.
    pub grid: (usize, usize),
}

#[derive(Debug, Clone)]
pub struct Encoder {
    embed_tokens: Tensor,
    type_embedding: Tensor,
    resnet: ResNet,
    image_proj: Linear,
    patch_layernorm_embedding: LayerNorm,
    layernorm_embedding: LayerNorm,
    embed_positions: Tensor,
    embed_image_positions: Tensor,
    pos_ln: LayerNorm,
    image_pos_ln: LayerNorm,
    pos_q_linear: Linear,
    pos_k_linear: Linear,
    layers: Vec<EncoderLayer>,
    token_rel_tables: Vec<RelTable>,
    image_rel_tables: Vec<RelTable>,
    layer_norm: LayerNorm,
    heads: usize,
    pos_scaling: f64,
    token_bucket_size: usize,
    image_bucket_size: usize,
    max_positions: usize,
    pad_id: u32,
    /// The position rows through `pos_q_linear` (scaled) and `pos_k_linear`, and the rows.
    position_rows: Arc<RowCache>,
    /// Off the CPU: each layer's bias for a grid and the longest text so far.
    layer_biases: Arc<LayerBiases<(usize, usize)>>,
}

impl Encoder {
    pub fn new(cfg: &OfaConfig, embed_tokens: Tensor, vb: VarBuilder) -> Result<Self> {
        let d = cfg.d_model;
        let heads = cfg.encoder_attention_heads;
        let layers_cfg = cfg.resnet_layers().map_err(candle_core::Error::msg)?;
        let img_pos_rows = cfg.image_bucket_size * cfg.image_bucket_size + 1;
        let img_rel_rows = (2 * cfg.image_bucket_size - 1).pow(2) + 3;
        let tok_rel_rows = 2 * cfg.token_bucket_size - 1;
        let mut token_rel_tables = Vec::new();
        let mut image_rel_tables = Vec::new();
        let mut layers = Vec::new();
        for l in 0..cfg.encoder_layers {
            layers.push(EncoderLayer::new(cfg, vb.pp(format!("layers.{l}")))?);
            token_rel_tables.push(rel_table(
                &vb,
                tok_rel_rows,
                heads,
                &format!("token_rel_pos_table_list.{l}.weight"),
            )?);
            image_rel_tables.push(rel_table(
                &vb,
                img_rel_rows,
                heads,
                &format!("image_rel_pos_table_list.{l}.weight"),
            )?);
        }
        Ok(Self {
            embed_tokens,
            type_embedding: vb.get((2, d), "type_embedding.weight")?,
            resnet: ResNet::new(layers_cfg, vb.pp("embed_images"))?,
            image_proj: linear(ResNet::OUT_CHANNELS, d, vb.pp("image_proj"))?,
            patch_layernorm_embedding: layer_norm(d, vb.pp("patch_layernorm_embedding"))?,
            layernorm_embedding: layer_norm(d, vb.pp("layernorm_embedding"))?,
            embed_positions: vb.get(
                (cfg.max_position_embeddings + 2, d),
                "embed_positions.weight",
            )?,
            embed_image_positions: vb.get((img_pos_rows, d), "embed_image_positions.weight")?,
            pos_ln: layer_norm(d, vb.pp("pos_ln"))?,
            image_pos_ln: layer_norm(d, vb.pp("image_pos_ln"))?,
            pos_q_linear: linear(d, d, vb.pp("pos_q_linear"))?,
            pos_k_linear: linear(d, d, vb.pp("pos_k_linear"))?,
            layers,
            token_rel_tables,
            image_rel_tables,
            layer_norm: layer_norm(d, vb.pp("layer_norm"))?,
            heads,
            pos_scaling: (d as f64 / heads as f64 * cfg.attn_scale_factor).powf(-0.5),
            token_bucket_size: cfg.token_bucket_size,
            image_bucket_size: cfg.image_bucket_size,
            max_positions: cfg.max_position_embeddings + 2,
            pad_id: cfg.pad_token_id,
            position_rows: Arc::default(),
            layer_biases: Arc::default(),
        })
    }

    /// The layers' dense weights to int8 (the embeddings, position and image projections,
    /// which run once per pass, stay f32).
    pub fn quantize_int8(&mut self) -> Result<()> {
        self.resnet.quantize_int8()?;
        self.layers
            .iter_mut()
            .try_for_each(EncoderLayer::quantize_int8)
    }

    pub fn resnet_layout(&self) -> ResNetLayout {
        self.resnet.layout()
    }

    pub fn set_resnet_layout(&mut self, layout: ResNetLayout) -> Result<()> {
        self.resnet.set_layout(layout)
    }

    /// ResNet features `[B, 1024, h, w]` of normalised images `[B, 3, S, S]`.
    pub fn embed_images(&self, images: &Tensor) -> Result<Tensor> {
        self.resnet.forward(images)
    }

    /// `ids`: `[B, T]` u32, right-padded with the pad id; `features`: ResNet output.
    pub fn forward(&self, ids: &Tensor, features: &Tensor) -> Result<EncoderOutput> {
        let has_pads = self.has_pads(ids)?;
        self.forward_with(ids, features, has_pads)
    }

    /// Whether any of `ids` is the pad id (read back from the device).
    pub fn has_pads(&self, ids: &Tensor) -> Result<bool> {
        Ok(ids
            .eq(self.pad_id)?
            .flatten_all()?
            .max(0)?
            .to_scalar::<u8>()?
            > 0)
    }

    /// [`Encoder::forward`] told whether `ids` hold padding, so the pass reads nothing back
    /// from the device (it can be recorded as a CUDA graph).
    pub fn forward_with(
        &self,
        ids: &Tensor,
        features: &Tensor,
        has_pads: bool,
    ) -> Result<EncoderOutput> {
        let device = ids.device().clone();
        let (b, t) = ids.dims2()?;
        let (_, _, gh, gw) = features.dims4()?;
        let n = gh * gw;
        let l = n + t;
        if t > self.max_positions || t > 1024 {
            candle_core::bail!(
                "text of {t} tokens exceeds the position table ({} rows)",
                self.max_positions
            );
        }

        // Image tokens in row-major grid order. Made contiguous: candle folds a batched matmul
        // against broadcast weights into one GEMM, which is wrong for a transposed input.
        let img = features.flatten_from(2)?.transpose(1, 2)?.contiguous()?;
        let img = self.image_proj.forward(&img)?;
        let img = img.broadcast_add(&self.type_embedding.get(1)?)?;
        let img = self.patch_layernorm_embedding.forward(&img)?;

        let txt = self
            .embed_tokens
            .embedding(&ids.flatten_all()?)?
            .reshape((b, t, ()))?;
        let txt = txt.broadcast_add(&self.type_embedding.get(0)?)?;
        let mut txt = self.layernorm_embedding.forward(&txt)?;

        let key_mask = if has_pads {
            let pad = ids.eq(self.pad_id)?.to_dtype(DType::F32)?; // [B, T]
            let keep = (1.0 - &pad)?.to_dtype(txt.dtype())?;
            txt = txt.broadcast_mul(&keep.unsqueeze(2)?)?;
            // Built in f32: in f16, 0 · f32::MIN would be 0 · -inf = NaN.
            let text_mask = (pad * f64::from(f32::MIN))?;
            let mask = Tensor::cat(&[Tensor::zeros((b, n), DType::F32, &device)?, text_mask], 1)?;
            Some(mask.to_dtype(txt.dtype())?)
        } else {
            None
        };
        let mut x = Tensor::cat(&[img, txt], 1)?;

        let positions = self.position_rows(gh, gw, t, &device, POSITIONS)?;
        if crate::network::kernels::fused(&device) {
            let q_pos = self.position_rows(gh, gw, t, &device, QUERIES)?;
            let k_pos = self.position_rows(gh, gw, t, &device, KEYS)?;
            let abs = position_bias_host(&q_pos, &k_pos, self.heads)?;
            let img_idx = image_buckets(gh, gw, self.image_bucket_size);
            let tok_idx = token_buckets(t, self.token_bucket_size);
            for (i, layer) in self.layers.iter().enumerate() {
                let bias = AttnBias {
                    abs: &abs,
                    heads: self.heads,
                    lq: l,
                    lk: l,
                    blocks: vec![
                        RelBlock {
                            table: &self.image_rel_tables[i].host,
                            index: &img_idx,
                            offset: 0,
                            size: n,
                        },
                        RelBlock {
                            table: &self.token_rel_tables[i].host,
                            index: &tok_idx,
                            offset: n,
                            size: t,
                        },
                    ],
                    causal: false,
                };
                x = layer.forward(&x, &Bias::Fused(bias), key_mask.as_ref())?;
            }
        } else {
            // On a GPU each layer's bias is built there, once for the longest text so far: a
            // shorter text's bias is the top-left corner of a longer one's. A pass then slices
            // it (one copy) where building it took a dozen kernels.
            let biases = self.layer_biases.get((gh, gw), t, |t| {
                let t = bias_rows(t, self.max_positions);
                Ok((t, Arc::new(self.build_layer_biases(gh, gw, t, &device)?)))
            })?;
            for (layer, bias) in self.layers.iter().zip(biases.iter()) {
                let bias = Bias::Dense(bias.narrow(1, 0, l)?.narrow(2, 0, l)?);
                x = layer.forward(&x, &bias, key_mask.as_ref())?;
            }
        }
        let hidden = self.layer_norm.forward(&x)?;
        Ok(EncoderOutput {
            hidden,
            positions,
            key_mask,
            grid: (gh, gw),
        })
    }

    /// Each layer's attention bias `[H, N + T, N + T]` (absolute plus relative positions), built
    /// on the model's device.
    fn build_layer_biases(
        &self,
        gh: usize,
        gw: usize,
        t: usize,
        device: &Device,
    ) -> Result<Vec<Tensor>> {
        let n = gh * gw;
        let q_pos = self.position_rows(gh, gw, t, device, QUERIES)?;
        let k_pos = self.position_rows(gh, gw, t, device, KEYS)?;
        let abs = position_bias(&q_pos, &k_pos, self.heads)?.squeeze(0)?;
        let img_idx = image_buckets(gh, gw, self.image_bucket_size);
        let img_idx = Tensor::from_vec(img_idx, n * n, device)?;
        let tok_idx = Tensor::from_vec(token_buckets(t, self.token_bucket_size), t * t, device)?;
        (0..self.layers.len())
            .map(|i| {
                let rel = block_diagonal(&[
                    rel_block_tensor(&self.image_rel_tables[i].tensor, &img_idx, n)?,
                    rel_block_tensor(&self.token_rel_tables[i].tensor, &tok_idx, t)?,
                ])?;
                // Same shapes, so candle adds them without its (slow) broadcasting kernel.
                &abs + rel
            })
            .collect()
    }

    /// `[1, N + T, D]`: the layer-normed position rows (`POSITIONS`), or them through
    /// `pos_q_linear`, scaled (`QUERIES`), or `pos_k_linear` (`KEYS`), from the cache.
    fn position_rows(
        &self,
        gh: usize,
        gw: usize,
        t: usize,
        device: &Device,
        which: usize,
    ) -> Result<Tensor> {
        let project = |rows: Tensor| -> Result<Vec<Tensor>> {
            let batch = rows.unsqueeze(0)?;
            let q = (self.pos_q_linear.forward(&batch)? * self.pos_scaling)?;
            let k = self.pos_k_linear.forward(&batch)?;
            Ok(vec![q.squeeze(0)?, k.squeeze(0)?, rows])
        };
        let img = self
            .position_rows
            .image((gh, gw), || project(self.image_positions(gh, gw, device)?))?;
        let txt = self.position_rows.text(t, |t| {
            project(self.text_positions(text_rows(t, self.max_positions))?)
        })?;
        Tensor::cat(&[&img[which], &txt[which]], 0)?.unsqueeze(0)
    }

    /// `[h·w, D]`: the layer-normed positions of the patch grid, row-major.
    fn image_positions(&self, gh: usize, gw: usize, device: &Device) -> Result<Tensor> {
        let ids = image_position_ids(gh, gw, self.image_bucket_size);
        let ids = Tensor::from_vec(ids, gh * gw, device)?;
        self.image_pos_ln
            .forward(&self.embed_image_positions.index_select(&ids, 0)?)
    }

    /// `[t, D]`: the layer-normed text positions `0..t`.
    fn text_positions(&self, t: usize) -> Result<Tensor> {
        self.pos_ln.forward(&self.embed_positions.narrow(0, 0, t)?)
    }
}
