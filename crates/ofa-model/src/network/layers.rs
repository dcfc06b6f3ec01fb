//! Building blocks shared by the encoder and decoder: linear and layer-norm layers, OFA's
//! NormFormer attention with additive position biases, and the feed-forward block.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::cpu::norm::LayerNorm;

use crate::cpu::attention::fused_attention;
use crate::cpu::folded_attention::{self, folded_cross_attention, KeyValueWeights};
use crate::cpu::softmax::{attention_probs, Bias};
use crate::load::config::Activation;
use crate::network::heads::{merge_heads, scale_heads, split_heads, split_heads_biased};
use crate::network::linear::{linear, Linear};
use crate::profile::{step, step_some};

pub const LN_EPS: f64 = 1e-5;

pub fn layer_norm(dim: usize, vb: VarBuilder) -> Result<LayerNorm> {
    LayerNorm::new(dim, LN_EPS, vb)
}

/// Multi-head attention with OFA's extras: query scaling `(dh·α)^-½`, an additive bias
/// (absolute + relative positions), and NormFormer's per-head output scale `c_attn`.
#[derive(Debug, Clone)]
pub struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    c_attn: Tensor,
    /// `c_attn` on the host, for the fused CPU kernel.
    c_attn_host: Vec<f32>,
    heads: usize,
    scaling: f64,
}

impl Attention {
    pub fn new(dim: usize, heads: usize, attn_scale_factor: f64, vb: VarBuilder) -> Result<Self> {
        let head_dim = dim / heads;
        let c_attn = vb.get(heads, "c_attn")?;
        let c_attn_host = if c_attn.device().is_cpu() {
            c_attn.to_dtype(candle_core::DType::F32)?.to_vec1()?
        } else {
            Vec::new()
        };
        Ok(Self {
            q_proj: linear(dim, dim, vb.pp("q_proj"))?,
            k_proj: linear(dim, dim, vb.pp("k_proj"))?,
            v_proj: linear(dim, dim, vb.pp("v_proj"))?,
            out_proj: linear(dim, dim, vb.pp("out_proj"))?,
            c_attn,
            c_attn_host,
            heads,
            scaling: (head_dim as f64 * attn_scale_factor).powf(-0.5),
        })
    }

    /// Quantises the four projections to int8 (`--precision int8`).
    pub fn quantize_int8(&mut self) -> Result<()> {
        for p in [
            &mut self.q_proj,
            &mut self.k_proj,
            &mut self.v_proj,
            &mut self.out_proj,
        ] {
            p.quantize_int8()?;
        }
        Ok(())
    }

    /// `x`: `[B, Lq, D]`; `kv`: `[B, Lk, D]`; `bias`: `[1, H, Lq, Lk]`; `mask`: additive, per
    /// key, `[B, Lk]`.
    pub fn forward(
        &self,
        x: &Tensor,
        kv: &Tensor,
        bias: &Bias<'_>,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        if x.id() == kv.id() {
            let projections = [&self.q_proj, &self.k_proj, &self.v_proj];
            if let Some(qkv) = crate::network::linear::int8_shared_input(x, &projections)? {
                let [q, k, v] = <[Tensor; 3]>::try_from(qkv).expect("three projections");
                return self.attend(&(q * self.scaling)?, &k, &v, bias, mask);
            }
        }
        if !crate::network::kernels::fused(x.device()) {
            return self.attend_generic(x, kv, bias, mask);
        }
        let q = (self.q_proj.forward(x)? * self.scaling)?;
        let (b, lq, d) = x.dims3()?;
        let fold = folded_attention::pays(self.heads, lq, kv.dim(1)?, d);
        let kv_weights = match fold {
            true => self
                .k_proj
                .head_weights(self.heads)?
                .zip(self.v_proj.head_weights(self.heads)?),
            false => None,
        };
        if let Some((wk, wv)) = kv_weights {
            let weights = KeyValueWeights {
                wk: &wk,
                wv: &wv,
                bv: self.v_proj.bias(),
            };
            let o = folded_cross_attention(&q, kv, &weights, self.heads, bias, mask)?;
            let o = scale_heads(&o, &self.c_attn, self.heads)?;
            return self
                .out_proj
                .forward(&o.transpose(1, 2)?.reshape((b, lq, d))?);
        }
        let k = self.k_proj.forward(kv)?;
        let v = self.v_proj.forward(kv)?;
        self.attend(&q, &k, &v, bias, mask)
    }

    /// With candle's operations (the GPU's path): each projection's bias rides on the copy
    /// into heads, the query scaling on the softmax's pass over the scores, NormFormer's head
    /// scale on the copy out of heads (one pass each on a GPU).
    fn attend_generic(
        &self,
        x: &Tensor,
        kv: &Tensor,
        bias: &Bias<'_>,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let heads_of = |p: &Linear, x: &Tensor| -> Result<Tensor> {
            match p.forward_unbiased(x)? {
                Some(y) => split_heads_biased(&y, p.bias(), self.heads),
                None => split_heads(&p.forward(x)?, self.heads),
            }
        };
        let d = x.device();
        let (q, k, v) = step("attention q/k/v projections", d, || {
            Ok((
                heads_of(&self.q_proj, x)?,
                heads_of(&self.k_proj, kv)?,
                heads_of(&self.v_proj, kv)?,
            ))
        })?;
        let scores = step("attention scores q·kᵀ", d, || q.matmul(&k.t()?))?;
        let probs = step("attention softmax (bias, mask)", d, || {
            attention_probs(&scores, self.scaling, bias, mask)
        })?;
        let o = step("attention probs·v", d, || probs.matmul(&v))?;
        let o = step("attention merge heads", d, || merge_heads(&o, &self.c_attn))?;
        step("attention out projection", d, || self.out_proj.forward(&o))
    }

    /// Attention over projected (and scaled) queries, keys and values, then `out_proj`.
    fn attend(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        bias: &Bias<'_>,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (b, lq, d) = q.dims3()?;
        let o = match bias {
            Bias::Fused(b) if crate::network::kernels::fused(q.device()) => {
                fused_attention(q, k, v, b, mask, &self.c_attn_host)?
            }
            _ => {
                let q = split_heads(q, self.heads)?;
                let k = split_heads(k, self.heads)?;
                let v = split_heads(v, self.heads)?;
                let probs = attention_probs(&q.matmul(&k.t()?)?, 1.0, bias, mask)?;
                let o = probs.matmul(&v)?; // [B, H, Lq, dh]
                let o = scale_heads(&o, &self.c_attn, self.heads)?;
                o.transpose(1, 2)?.reshape((b, lq, d))?
            }
        };
        self.out_proj.forward(&o)
    }
}

/// `fc2(LN_ffn(act(fc1(x))))` — NormFormer's layer norm sits between the activation and fc2.
#[derive(Debug, Clone)]
pub struct FeedForward {
    fc1: Linear,
    fc2: Linear,
    ffn_layer_norm: LayerNorm,
    activation: Activation,
}

impl FeedForward {
    pub fn new(dim: usize, ffn_dim: usize, activation: Activation, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            fc1: linear(dim, ffn_dim, vb.pp("fc1"))?,
            fc2: linear(ffn_dim, dim, vb.pp("fc2"))?,
            ffn_layer_norm: layer_norm(ffn_dim, vb.pp("ffn_layer_norm"))?,
            activation,
        })
    }

    pub fn quantize_int8(&mut self) -> Result<()> {
        self.fc1.quantize_int8()?;
        self.fc2.quantize_int8()
    }

    /// `residual + forward(x)`. Off the CPU's fused kernels, with the exact GELU: fc1's matmul,
    /// then its bias, the GELU and the layer norm in one pass, then fc2 with its bias and the
    /// residual in one pass (on a GPU; candle's operations in the same order elsewhere).
    pub fn forward_add(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        if matches!(self.activation, Activation::Gelu) {
            let d = x.device();
            if let Some(h) = step_some("ffn fc1", d, || self.fc1.forward_unbiased(x))? {
                let h = step("ffn bias, GELU, layer norm", d, || {
                    crate::network::epilogue::bias_gelu_norm(
                        &h,
                        self.fc1.bias(),
                        &self.ffn_layer_norm,
                    )
                })?;
                return step("ffn fc2, bias, residual", d, || {
                    self.fc2.forward_add(&h, residual)
                });
            }
        }
        residual + self.forward(x)?
    }
}

impl Module for FeedForward {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.fc1.forward(x)?;
        let h = match self.activation {
            Activation::Gelu => return self.fc2.forward(&self.ffn_layer_norm.forward_gelu(&h)?),
            Activation::GeluTanh => h.gelu()?,
            Activation::Relu => h.relu()?,
        };
        self.fc2.forward(&self.ffn_layer_norm.forward(&h)?)
    }
}

/// Projected (and scaled) position rows `[1, Lq, D]`, `[1, Lk, D]` → `heads(q) · heads(k)ᵀ`
/// = `[1, H, Lq, Lk]`.
pub fn position_bias(q: &Tensor, k: &Tensor, heads: usize) -> Result<Tensor> {
    split_heads(q, heads)?.matmul(&split_heads(k, heads)?.t()?)
}

/// The same for one item on the CPU, `[H, Lq, Lk]` flattened on the host for the fused kernels.
pub fn position_bias_host(q: &Tensor, k: &Tensor, heads: usize) -> Result<Vec<f32>> {
    crate::cpu::attention::head_scores(q, k, heads)
}

/// A layer's relative-position table `[buckets, heads]`: the tensor (gathered on a GPU) and,
/// on the CPU, a head-major copy `[heads, buckets]` the fused attention kernel gathers from
/// directly (one head's table, 27 KB for the image buckets, stays in L1 while its rows are built).
#[derive(Debug, Clone)]
pub struct RelTable {
    pub tensor: Tensor,
    pub host: Vec<f32>,
}

pub fn rel_table(vb: &VarBuilder, buckets: usize, heads: usize, name: &str) -> Result<RelTable> {
    let tensor = vb.get((buckets, heads), name)?;
    let host = if tensor.device().is_cpu() {
        tensor
            .to_dtype(candle_core::DType::F32)?
            .t()?
            .contiguous()?
            .flatten_all()?
            .to_vec1()?
    } else {
        Vec::new()
    };
    Ok(RelTable { tensor, host })
}
