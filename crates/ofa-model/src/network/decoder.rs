//! OFA decoder: causal NormFormer layers with self-attention position biases (absolute +
//! per-layer relative) and cross-attention whose bias pairs decoder and encoder positions.

use std::sync::Arc;

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::cpu::norm::LayerNorm;

use crate::cpu::bias::{causal_mask, rel_block_tensor, RelBlock};
use crate::cpu::softmax::{AttnBias, Bias};
use crate::load::config::OfaConfig;
use crate::network::buckets::token_buckets;
use crate::network::encoder::EncoderOutput;
use crate::network::epilogue::add_norm;
use crate::network::layers::{
    layer_norm, position_bias, position_bias_host, rel_table, Attention, FeedForward, RelTable,
};
use crate::network::linear::{linear, Linear};
use crate::network::position_cache::{bias_rows, text_rows, LayerBiases, RowCache};
use crate::profile::step;

#[derive(Debug, Clone)]
struct DecoderLayer {
    self_attn: Attention,
    self_attn_layer_norm: LayerNorm,
    self_attn_mid_layer_norm: LayerNorm,
    cross_attn: Attention,
    cross_attn_layer_norm: LayerNorm,
    cross_attn_mid_layer_norm: LayerNorm,
    final_layer_norm: LayerNorm,
    ffn: FeedForward,
}

impl DecoderLayer {
    fn new(cfg: &OfaConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.d_model;
        let h = cfg.decoder_attention_heads;
        let act = cfg.activation().map_err(candle_core::Error::msg)?;
        Ok(Self {
            self_attn: Attention::new(d, h, cfg.attn_scale_factor, vb.pp("self_attn"))?,
            self_attn_layer_norm: layer_norm(d, vb.pp("self_attn_layer_norm"))?,
            self_attn_mid_layer_norm: layer_norm(d, vb.pp("self_attn_mid_layer_norm"))?,
            cross_attn: Attention::new(d, h, cfg.attn_scale_factor, vb.pp("cross_attn"))?,
            cross_attn_layer_norm: layer_norm(d, vb.pp("cross_attn_layer_norm"))?,
            cross_attn_mid_layer_norm: layer_norm(d, vb.pp("cross_attn_mid_layer_norm"))?,
            final_layer_norm: layer_norm(d, vb.pp("final_layer_norm"))?,
            ffn: FeedForward::new(d, cfg.decoder_ffn_dim, act, vb)?,
        })
    }

    fn quantize_int8(&mut self) -> Result<()> {
        self.self_attn.quantize_int8()?;
        self.cross_attn.quantize_int8()?;
        self.ffn.quantize_int8()
    }

    fn forward(
        &self,
        x: &Tensor,
        self_bias: &Bias<'_>,
        enc: &EncoderOutput,
        cross_bias: &Bias<'_>,
    ) -> Result<Tensor> {
        let d = x.device();
        let h = step("layer norm", d, || self.self_attn_layer_norm.forward(x))?;
        let h = self.self_attn.forward(&h, &h, self_bias, None)?;
        let x = step("residual, mid layer norm", d, || {
            add_norm(x, &h, &self.self_attn_mid_layer_norm)
        })?;
        let h = step("layer norm", d, || self.cross_attn_layer_norm.forward(&x))?;
        let h = self
            .cross_attn
            .forward(&h, &enc.hidden, cross_bias, enc.key_mask.as_ref())?;
        let x = step("residual, mid layer norm", d, || {
            add_norm(&x, &h, &self.cross_attn_mid_layer_norm)
        })?;
        let h = step("layer norm", d, || self.final_layer_norm.forward(&x))?;
        self.ffn.forward_add(&h, &x)
    }
}

/// Projected position rows for one pass (`[1, rows, D]`, queries scaled).
struct PositionRows {
    self_q: Tensor,
    self_k: Tensor,
    cross_q: Tensor,
    cross_k: Tensor,
}

#[derive(Debug, Clone)]
pub struct Decoder {
    embed_tokens: Tensor,
    layernorm_embedding: LayerNorm,
    embed_positions: Tensor,
    pos_ln: LayerNorm,
    self_pos_q_linear: Linear,
    self_pos_k_linear: Linear,
    cross_pos_q_linear: Linear,
    cross_pos_k_linear: Linear,
    layers: Vec<DecoderLayer>,
    token_rel_tables: Vec<RelTable>,
    layer_norm: LayerNorm,
    heads: usize,
    pos_scaling: f64,
    token_bucket_size: usize,
    max_positions: usize,
    /// The decoder's positions through `self_pos_q_linear` (scaled), `self_pos_k_linear` and
    /// `cross_pos_q_linear` (scaled).
    position_rows: Arc<RowCache>,
    /// The encoder's positions through `cross_pos_k_linear`.
    encoder_rows: Arc<RowCache>,
    /// Off the CPU: each layer's self-attention bias for the longest input so far.
    self_biases: Arc<LayerBiases<()>>,
}

impl Decoder {
    pub fn new(cfg: &OfaConfig, embed_tokens: Tensor, vb: VarBuilder) -> Result<Self> {
        let d = cfg.d_model;
        let heads = cfg.decoder_attention_heads;
        let tok_rel_rows = 2 * cfg.token_bucket_size - 1;
        let mut layers = Vec::new();
        let mut token_rel_tables = Vec::new();
        for l in 0..cfg.decoder_layers {
            layers.push(DecoderLayer::new(cfg, vb.pp(format!("layers.{l}")))?);
            token_rel_tables.push(rel_table(
                &vb,
                tok_rel_rows,
                heads,
                &format!("token_rel_pos_table_list.{l}.weight"),
            )?);
        }
        Ok(Self {
            embed_tokens,
            layernorm_embedding: layer_norm(d, vb.pp("layernorm_embedding"))?,
            embed_positions: vb.get(
                (cfg.max_position_embeddings + 2, d),
                "embed_positions.weight",
            )?,
            pos_ln: layer_norm(d, vb.pp("pos_ln"))?,
            self_pos_q_linear: linear(d, d, vb.pp("self_pos_q_linear"))?,
            self_pos_k_linear: linear(d, d, vb.pp("self_pos_k_linear"))?,
            cross_pos_q_linear: linear(d, d, vb.pp("cross_pos_q_linear"))?,
            cross_pos_k_linear: linear(d, d, vb.pp("cross_pos_k_linear"))?,
            layers,
            token_rel_tables,
            layer_norm: layer_norm(d, vb.pp("layer_norm"))?,
            heads,
            pos_scaling: (d as f64 / heads as f64 * cfg.attn_scale_factor).powf(-0.5),
            token_bucket_size: cfg.token_bucket_size,
            max_positions: cfg.max_position_embeddings + 2,
            position_rows: Arc::default(),
            encoder_rows: Arc::default(),
            self_biases: Arc::default(),
        })
    }

    /// The layers' dense weights to int8.
    pub fn quantize_int8(&mut self) -> Result<()> {
        self.layers
            .iter_mut()
            .try_for_each(DecoderLayer::quantize_int8)
    }

    /// `tokens`: `[B, M]` u32 (right-padded; causal attention keeps padding out of earlier
    /// positions). Returns the final hidden states `[B, M, D]` after the last layer norm.
    pub fn forward(&self, tokens: &Tensor, enc: &EncoderOutput) -> Result<Tensor> {
        let (b, m) = tokens.dims2()?;
        if m > self.max_positions || m > 1024 {
            candle_core::bail!("decoder input of {m} tokens exceeds the position table");
        }
        let x = self
            .embed_tokens
            .embedding(&tokens.flatten_all()?)?
            .reshape((b, m, ()))?;
        let mut x = self.layernorm_embedding.forward(&x)?;
        let p = self.projected_positions(m, enc)?;
        let lk = p.cross_k.dim(1)?;
        let heads = self.heads;
        if !crate::network::kernels::fused(tokens.device()) {
            // On a GPU the biases are built there. Each layer's self-attention bias is built
            // once for the longest input so far and sliced (as in the encoder).
            let self_biases = self.self_biases.get((), m, |m| {
                let m = bias_rows(m, self.max_positions);
                Ok((m, Arc::new(self.build_self_biases(m, tokens.device())?)))
            })?;
            let cross_bias = Bias::Dense(position_bias(&p.cross_q, &p.cross_k, heads)?);
            for (layer, bias) in self.layers.iter().zip(self_biases.iter()) {
                let self_bias = Bias::Dense(bias.narrow(1, 0, m)?.narrow(2, 0, m)?);
                x = layer.forward(&x, &self_bias, enc, &cross_bias)?;
            }
            return self.layer_norm.forward(&x);
        }
        let tok_idx = token_buckets(m, self.token_bucket_size);
        let self_abs = position_bias_host(&p.self_q, &p.self_k, heads)?;
        let cross_abs = position_bias_host(&p.cross_q, &p.cross_k, heads)?;
        let cross_bias = Bias::Fused(AttnBias {
            abs: &cross_abs,
            heads: self.heads,
            lq: m,
            lk,
            blocks: vec![],
            causal: false,
        });
        for (i, layer) in self.layers.iter().enumerate() {
            let self_bias = Bias::Fused(AttnBias {
                abs: &self_abs,
                heads: self.heads,
                lq: m,
                lk: m,
                blocks: vec![RelBlock {
                    table: &self.token_rel_tables[i].host,
                    index: &tok_idx,
                    offset: 0,
                    size: m,
                }],
                causal: true,
            });
            x = layer.forward(&x, &self_bias, enc, &cross_bias)?;
        }
        self.layer_norm.forward(&x)
    }

    /// Each layer's causal self-attention bias `[H, m, m]` (absolute plus relative positions),
    /// built on the model's device.
    fn build_self_biases(&self, m: usize, device: &candle_core::Device) -> Result<Vec<Tensor>> {
        let s = self.pos_scaling;
        let rows = self
            .position_rows
            .text(m, |m| self.project_own_rows(m, s))?;
        let (q, k) = (rows[0].unsqueeze(0)?, rows[1].unsqueeze(0)?);
        let abs = position_bias(&q, &k, self.heads)?.squeeze(0)?;
        // `[H, m, m]`, the same shape as each layer's relative part: candle then adds them
        // without its (slow) broadcasting kernel, as in the encoder.
        let abs = abs.broadcast_add(&causal_mask(m, abs.dtype(), device)?)?;
        let tok_idx = token_buckets(m, self.token_bucket_size);
        let tok_idx = Tensor::from_vec(tok_idx, m * m, device)?;
        self.token_rel_tables
            .iter()
            .map(|table| &abs + rel_block_tensor(&table.tensor, &tok_idx, m)?)
            .collect()
    }

    /// The decoder's position rows `0..n` (at least `m`) through the self-attention pair and
    /// the cross-attention query (queries scaled by `s`).
    fn project_own_rows(&self, m: usize, s: f64) -> Result<Vec<Tensor>> {
        let n = text_rows(m, self.max_positions);
        let rows = self
            .pos_ln
            .forward(&self.embed_positions.narrow(0, 0, n)?)?
            .unsqueeze(0)?;
        [
            (self.self_pos_q_linear.forward(&rows)? * s)?,
            self.self_pos_k_linear.forward(&rows)?,
            (self.cross_pos_q_linear.forward(&rows)? * s)?,
        ]
        .iter()
        .map(|p| p.squeeze(0))
        .collect()
    }

    /// The decoder's position rows `0..m` through the self-attention pair and the
    /// cross-attention query (`[1, m, D]` each, queries scaled), and the encoder's through the
    /// cross-attention key (`[1, N + T, D]`), from the caches.
    fn projected_positions(&self, m: usize, enc: &EncoderOutput) -> Result<PositionRows> {
        let s = self.pos_scaling;
        let own = self
            .position_rows
            .text(m, |m| self.project_own_rows(m, s))?;
        let (gh, gw) = enc.grid;
        let n = gh * gw;
        let t = enc.positions.dim(1)? - n;
        let key = |start: usize, len: usize| -> Result<Vec<Tensor>> {
            let rows = enc.positions.narrow(1, start, len)?;
            Ok(vec![self.cross_pos_k_linear.forward(&rows)?.squeeze(0)?])
        };
        // The encoder's rows: its image grid, then its text positions 0..T (only those the
        // encoder output holds can be computed here).
        let img = self.encoder_rows.image((gh, gw), || key(0, n))?;
        let txt = self.encoder_rows.text(t, |_| key(n, t))?;
        let ck = Tensor::cat(&[&img[0], &txt[0]], 0)?.unsqueeze(0)?;
        let one = |i: usize| own[i].unsqueeze(0);
        Ok(PositionRows {
            self_q: one(0)?,
            self_k: one(1)?,
            cross_q: one(2)?,
            cross_k: ck,
        })
    }
}
