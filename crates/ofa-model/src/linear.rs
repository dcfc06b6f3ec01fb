//! `x·Wᵀ + b`: f32 weights (the default), or int8 weights quantised at load on the CPU.
//! On the CPU, `linear_cpu`'s and `int8`'s kernels; on a GPU, one 2-D matmul over every row of
//! the batch and the bias added in the same pass (candle's broadcast add of a bias cost 5× the
//! matmul itself there).

use std::sync::Arc;

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::int8::Int8Weights;

#[derive(Debug, Clone)]
enum Weights {
    F32(candle_nn::Linear),
    /// The bias stays in `bias_host`; int8 runs on the CPU only.
    Int8(Arc<Int8Weights>),
}

#[derive(Debug, Clone)]
pub struct Linear {
    weights: Weights,
    /// The bias on the host, for the CPU kernels.
    bias_host: Option<Vec<f32>>,
}

impl Linear {
    /// The f32 weight `[out, in]`; none once quantised.
    pub fn weight(&self) -> Option<&Tensor> {
        match &self.weights {
            Weights::F32(l) => Some(l.weight()),
            Weights::Int8(_) => None,
        }
    }

    pub fn bias(&self) -> Option<&Tensor> {
        match &self.weights {
            Weights::F32(l) => l.bias(),
            Weights::Int8(_) => None,
        }
    }

    /// Replaces the f32 weight by its int8 quantisation (and frees it). CPU only.
    pub fn quantize_int8(&mut self) -> Result<()> {
        let Weights::F32(l) = &self.weights else {
            return Ok(());
        };
        let w = l.weight();
        if !w.device().is_cpu() {
            candle_core::bail!("int8 weights run on the CPU only");
        }
        let (n, k) = w.dims2()?;
        let host = w.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        self.weights = Weights::Int8(Arc::new(Int8Weights::quantize(&host, n, k)));
        Ok(())
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let l = match &self.weights {
            Weights::Int8(w) => return crate::int8::linear_tensor(x, w, self.bias_host.as_deref()),
            Weights::F32(l) => l,
        };
        #[cfg(feature = "cuda")]
        if x.device().is_cuda() {
            let dims = x.dims();
            let rows: usize = dims[..dims.len() - 1].iter().product();
            let d = dims[dims.len() - 1];
            let w = l.weight();
            let y = x.reshape((rows, d))?.matmul(&w.t()?)?;
            let y = match l.bias() {
                Some(b) => crate::cuda_ops::channel_op(&y, 1, b, None, false, false)?,
                None => y,
            };
            let mut out = dims.to_vec();
            *out.last_mut().expect("at least one axis") = w.dim(0)?;
            return y.reshape(out);
        }
        if crate::kernels::fused(x.device()) && x.dtype() == DType::F32 {
            return crate::linear_cpu::linear(x, l.weight(), self.bias_host.as_deref());
        }
        l.forward(x)
    }
}

/// Where a quantised weight travels next to (instead of) `NAME`: `NAME_int8` (packed bytes,
/// u8) and `NAME_int8_scale` (f32 per output).
const PACKED: &str = "_int8";
const SCALE: &str = "_int8_scale";

/// Whether `--precision int8` quantises this checkpoint tensor: the projections and
/// feed-forward weights of the encoder's and decoder's layers.
pub fn is_int8_weight(name: &str) -> bool {
    (name.contains("encoder.layers.") || name.contains("decoder.layers."))
        && [
            ".q_proj.weight",
            ".k_proj.weight",
            ".v_proj.weight",
            ".out_proj.weight",
            ".fc1.weight",
            ".fc2.weight",
        ]
        .iter()
        .any(|s| name.ends_with(s))
}

/// A checkpoint tensor as `--precision int8` stores it: a dense layer's weight replaced by its
/// quantisation (the f32 copy freed at once, so a load never holds the f32 model), anything
/// else unchanged.
pub fn int8_entries(name: String, t: Tensor) -> Result<Vec<(String, Tensor)>> {
    if !is_int8_weight(&name) || t.rank() != 2 {
        return Ok(vec![(name, t)]);
    }
    let (n, k) = t.dims2()?;
    let host = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    drop(t);
    let (packed, scale) = Int8Weights::quantize(&host, n, k).to_tensors()?;
    Ok(vec![
        (format!("{name}{PACKED}"), packed),
        (format!("{name}{SCALE}"), scale),
    ])
}

/// Whether a checkpoint entry is part of a quantised weight (bytes, not a float tensor).
pub fn is_int8_entry(name: &str) -> bool {
    name.ends_with(PACKED)
}

pub fn linear(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    let packed_name = format!("weight{PACKED}");
    if vb.contains_tensor(&packed_name) {
        // Quantised as the checkpoint was read (`int8_entries`).
        let len =
            out_dim.div_ceil(crate::int8::BLOCK) * in_dim.div_ceil(4) * 4 * crate::int8::BLOCK;
        let init = candle_nn::Init::Const(0.0);
        let packed = vb.get_with_hints_dtype(len, &packed_name, init, DType::U8)?;
        let scale =
            vb.get_with_hints_dtype(out_dim, &format!("weight{SCALE}"), init, DType::F32)?;
        let weights = Int8Weights::from_tensors(&packed, &scale, out_dim, in_dim)?;
        let bias = vb.get(out_dim, "bias")?;
        return Ok(Linear {
            weights: Weights::Int8(Arc::new(weights)),
            bias_host: Some(bias.to_dtype(DType::F32)?.to_vec1()?),
        });
    }
    let inner = candle_nn::linear(in_dim, out_dim, vb)?;
    let bias_host = match inner.bias() {
        Some(b) if b.device().is_cpu() => Some(b.to_dtype(DType::F32)?.to_vec1()?),
        _ => None,
    };
    Ok(Linear {
        weights: Weights::F32(inner),
        bias_host,
    })
}
