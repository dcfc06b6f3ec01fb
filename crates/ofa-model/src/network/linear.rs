//! `x·Wᵀ + b`: f32 weights (the default), or int8 weights quantised at load on the CPU.
//! On the CPU, `linear_cpu`'s and `int8`'s kernels; on a GPU, one 2-D matmul over every row of
//! the batch and the bias added in the same pass (candle's broadcast add of a bias cost 5× the
//! matmul itself there).

use std::sync::Arc;

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::cpu::int8::quant::Int8Weights;

#[derive(Debug, Clone)]
enum Weights {
    /// `[out, in]`, as checkpoints store them (GPUs, random initialisation).
    F32(candle_nn::Linear),
    /// `wt` `[in, out]` (transposed as the checkpoint was read): gemm then reads `x·Wt` with no
    /// per-call repacking of the weight, 10–20 % faster for the encoder's ~900 rows and 2–5×
    /// for the decoder's few.
    F32T { wt: Tensor, bias: Option<Tensor> },
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
    /// The float weight `[out, in]` (a view when stored transposed); none once quantised.
    fn weight(&self) -> Result<Option<Tensor>> {
        Ok(match &self.weights {
            Weights::F32(l) => Some(l.weight().clone()),
            Weights::F32T { wt, .. } => Some(wt.t()?),
            Weights::Int8(_) => None,
        })
    }

    /// Each head's rows of the weight, `[1, heads, out/heads, in]` (a view, not a copy, in
    /// either layout); none once quantised.
    pub fn head_weights(&self, heads: usize) -> Result<Option<Tensor>> {
        Ok(match &self.weights {
            Weights::F32(l) => {
                let (n, k) = l.weight().dims2()?;
                Some(l.weight().reshape((1, heads, n / heads, k))?)
            }
            Weights::F32T { wt, .. } => {
                let (k, n) = wt.dims2()?;
                Some(
                    wt.reshape((k, heads, n / heads))?
                        .permute((1, 2, 0))?
                        .unsqueeze(0)?,
                )
            }
            Weights::Int8(_) => None,
        })
    }

    pub fn bias(&self) -> Option<&Tensor> {
        match &self.weights {
            Weights::F32(l) => l.bias(),
            Weights::F32T { bias, .. } => bias.as_ref(),
            Weights::Int8(_) => None,
        }
    }

    /// `x·Wᵀ` without the bias, for a caller that adds the bias in its own pass; `None` where
    /// the CPU's fused kernels run (they add the bias themselves) or the weights are int8.
    pub fn forward_unbiased(&self, x: &Tensor) -> Result<Option<Tensor>> {
        if crate::network::kernels::fused(x.device()) && x.dtype() == DType::F32 {
            return Ok(None);
        }
        Ok(match &self.weights {
            Weights::Int8(_) => None,
            Weights::F32T { wt, .. } => Some(x.broadcast_matmul(wt)?),
            Weights::F32(l) => {
                #[cfg(feature = "cuda")]
                if x.device().is_cuda() {
                    let y = rows_matmul(x, l.weight())?;
                    let mut dims = x.dims().to_vec();
                    *dims.last_mut().expect("at least one axis") = y.dim(1)?;
                    return Ok(Some(y.reshape(dims)?));
                }
                Some(candle_nn::Linear::new(l.weight().clone(), None).forward(x)?)
            }
        })
    }

    /// `residual + x·Wᵀ + b`; on a GPU the bias and the residual in one pass after the matmul.
    pub fn forward_add(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        #[cfg(feature = "cuda")]
        if let (true, Weights::F32(l)) = (x.device().is_cuda(), &self.weights) {
            let y = rows_matmul(x, l.weight())?;
            let Some(b) = l.bias() else {
                return residual + y.reshape(residual.shape())?;
            };
            let r = residual.reshape(y.shape())?;
            return crate::cuda::ops::channel_op(&y, 1, b, Some(&r), false, false)?
                .reshape(residual.shape());
        }
        residual + self.forward(x)?
    }

    /// Replaces the f32 weight by its int8 quantisation (and frees it). CPU only.
    pub fn quantize_int8(&mut self) -> Result<()> {
        let Some(w) = self.weight()? else {
            return Ok(());
        };
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
            Weights::Int8(w) => {
                return crate::cpu::int8::linear::linear_tensor(x, w, self.bias_host.as_deref())
            }
            Weights::F32T { wt, bias } => {
                if crate::network::kernels::fused(x.device()) && x.dtype() == DType::F32 {
                    return crate::cpu::linear::linear_t(x, wt, self.bias_host.as_deref());
                }
                let y = x.broadcast_matmul(wt)?;
                return match bias {
                    Some(b) => y.broadcast_add(b),
                    None => Ok(y),
                };
            }
            Weights::F32(l) => l,
        };
        #[cfg(feature = "cuda")]
        if x.device().is_cuda() {
            let y = rows_matmul(x, l.weight())?;
            let y = match l.bias() {
                Some(b) => crate::cuda::ops::channel_op(&y, 1, b, None, false, false)?,
                None => y,
            };
            let mut out = x.dims().to_vec();
            *out.last_mut().expect("at least one axis") = y.dim(1)?;
            return y.reshape(out);
        }
        if crate::network::kernels::fused(x.device()) && x.dtype() == DType::F32 {
            return crate::cpu::linear::linear(x, l.weight(), self.bias_host.as_deref());
        }
        l.forward(x)
    }
}

/// Every row of `x` (`[…, in]`) times `wᵀ` (`w` `[out, in]`) as one 2-D matmul: `[rows, out]`.
#[cfg(feature = "cuda")]
fn rows_matmul(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let d = x.dims().last().copied().unwrap_or(0);
    let rows = x.elem_count() / d.max(1);
    x.reshape((rows, d))?.matmul(&w.t()?)
}

/// int8 layers applied to one input, quantised once for all of them (a self-attention's
/// query, key and value projections read the same rows). `None` unless every layer is int8
/// and `x` is f32 on the CPU.
pub fn int8_shared_input(x: &Tensor, layers: &[&Linear]) -> Result<Option<Vec<Tensor>>> {
    let parts: Option<Vec<_>> = layers
        .iter()
        .map(|l| match &l.weights {
            Weights::Int8(w) => Some((w, l.bias_host.as_deref())),
            _ => None,
        })
        .collect();
    let Some(parts) = parts else {
        return Ok(None);
    };
    if parts.is_empty() || x.dtype() != DType::F32 || !x.device().is_cpu() {
        return Ok(None);
    }
    let x = x.contiguous()?;
    let k = x.dims().last().copied().unwrap_or(0);
    if parts.iter().any(|(w, _)| w.k != k) {
        candle_core::bail!(
            "int8 linear: input {:?} does not fit the weights",
            x.shape()
        );
    }
    let rows = with_host_f32(&x, |v| crate::cpu::int8::quant::quantize_rows(v, k))?;
    parts
        .into_iter()
        .map(|(w, bias)| {
            let epilogue = crate::cpu::int8::linear::Epilogue {
                bias,
                ..Default::default()
            };
            let out = crate::cpu::int8::linear::linear_rows(&rows, w, epilogue)?;
            let mut shape = x.dims().to_vec();
            *shape.last_mut().expect("k checked above") = w.n;
            Tensor::from_vec(out, shape, x.device())
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

/// Where a quantised weight travels next to (instead of) `NAME`: `NAME_int8` (packed bytes,
/// u8) and `NAME_int8_scale` (f32 per output).
const PACKED: &str = "_int8";
const SCALE: &str = "_int8_scale";

/// Where a weight kept transposed travels instead of `NAME`: `NAME_t`, `[in, out]`.
const TRANSPOSED: &str = "_t";

/// How the dense layers' weights are kept, by where and in what precision they will run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenseForm {
    /// `[out, in]`, as the checkpoint stores them (GPUs).
    Stored,
    /// `[in, out]`, for the CPU's gemm (see [`Linear`]).
    Transposed,
    /// Quantised to int8 (`--precision int8`, CPU).
    Int8,
}

/// Whether `--precision int8` quantises (or the CPU transposes) this checkpoint tensor: the
/// projections and feed-forward weights of the encoder's and decoder's layers.
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

/// A checkpoint tensor in `form`: a dense layer's weight transposed or replaced by its
/// quantisation (the stored copy freed at once, so a load never holds the model twice),
/// anything else unchanged.
pub fn dense_entries(name: String, t: Tensor, form: DenseForm) -> Result<Vec<(String, Tensor)>> {
    // A checkpoint written with the weights already transposed (`random-model`'s): int8
    // quantises the stored orientation, so it is turned back first.
    if let Some(stored) = name.strip_suffix(TRANSPOSED) {
        if form == DenseForm::Int8 && is_int8_weight(stored) && t.rank() == 2 {
            let (k, n) = t.dims2()?;
            let t = t.to_dtype(DType::F32)?.contiguous()?;
            let w = with_host_f32(&t, |v| transpose(v, k, n))?;
            drop(t);
            let w = Tensor::from_vec(w, (n, k), &candle_core::Device::Cpu)?;
            return dense_entries(stored.to_owned(), w, form);
        }
        return Ok(vec![(name, t)]);
    }
    if form == DenseForm::Stored || !is_int8_weight(&name) || t.rank() != 2 {
        return Ok(vec![(name, t)]);
    }
    if form == DenseForm::Transposed {
        let (n, k) = t.dims2()?;
        let t = t.to_dtype(DType::F32)?.contiguous()?;
        let wt = with_host_f32(&t, |v| transpose(v, n, k))?;
        let wt = Tensor::from_vec(wt, (k, n), t.device())?;
        return Ok(vec![(format!("{name}{TRANSPOSED}"), wt)]);
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

/// `f` over a contiguous f32 CPU tensor's values, borrowed rather than copied out.
fn with_host_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    let candle_core::Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("a CPU tensor expected, not one on {:?}", t.device());
    };
    Ok(f(crate::network::conv::f32_slice(cpu, layout)?))
}

/// `[rows, cols]` → `[cols, rows]`, in 32 × 32 tiles that stay in L1 (candle's strided copy,
/// element by element, doubled the load time of OFA-large).
fn transpose(src: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    use rayon::prelude::*;
    const TILE: usize = 32;
    let mut out = vec![0f32; src.len()];
    // Each task writes 32 whole rows of the output.
    out.par_chunks_mut(TILE * rows.max(1))
        .enumerate()
        .for_each(|(tile, block)| {
            let c0 = tile * TILE;
            for r0 in (0..rows).step_by(TILE) {
                for (dc, row) in block.chunks_mut(rows).enumerate() {
                    for r in r0..(r0 + TILE).min(rows) {
                        row[r] = src[r * cols + c0 + dc];
                    }
                }
            }
        });
    out
}

/// Whether a checkpoint entry is part of a quantised weight (bytes, not a float tensor).
pub fn is_int8_entry(name: &str) -> bool {
    name.ends_with(PACKED)
}

pub fn linear(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    let packed_name = format!("weight{PACKED}");
    if vb.contains_tensor(&packed_name) {
        // Quantised as the checkpoint was read (`dense_entries`).
        let len = out_dim.div_ceil(crate::cpu::int8::quant::BLOCK)
            * in_dim.div_ceil(4)
            * 4
            * crate::cpu::int8::quant::BLOCK;
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
    let transposed_name = format!("weight{TRANSPOSED}");
    if vb.contains_tensor(&transposed_name) {
        let wt = vb.get((in_dim, out_dim), &transposed_name)?;
        let bias = vb.get(out_dim, "bias")?;
        let bias_host = match bias.device().is_cpu() {
            true => Some(bias.to_dtype(DType::F32)?.to_vec1()?),
            false => None,
        };
        return Ok(Linear {
            weights: Weights::F32T {
                wt,
                bias: Some(bias),
            },
            bias_host,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transposes_sizes_that_are_not_multiples_of_the_tile() {
        for (rows, cols) in [(1, 1), (3, 70), (33, 65), (64, 32)] {
            let src: Vec<f32> = (0..rows * cols).map(|v| v as f32).collect();
            let out = transpose(&src, rows, cols);
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(
                        out[c * rows + r],
                        src[r * cols + c],
                        "{rows}×{cols} at {r},{c}"
                    );
                }
            }
        }
    }
}
