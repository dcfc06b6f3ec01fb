//! `x·Wᵀ + b`: f32 weights (the default), or int8 weights quantised at load on the CPU.
//! On the CPU, `linear_cpu`'s and `int8`'s kernels; on a GPU, one 2-D matmul over every row of
//! the batch and the bias added in the same pass (candle's broadcast add of a bias cost 5× the
//! matmul itself there).

use std::sync::{Arc, OnceLock};

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::cpu::int8::quant::{Int8Weights, PackedBytes, BLOCK};
use crate::load::mapped::MappedTensor;
use crate::network::dense_form::{with_host_f32, OFFSET, PACKED, SCALE, TRANSPOSED};

#[derive(Debug, Clone)]
enum Weights {
    /// `[out, in]`, as checkpoints store them (GPUs, random initialisation).
    F32(candle_nn::Linear),
    /// `wt` `[in, out]` (transposed as the checkpoint was read): gemm then reads `x·Wt` with no
    /// per-call repacking of the weight, 10–20 % faster for the encoder's ~900 rows and 2–5×
    /// for the decoder's few.
    F32T {
        wt: TransposedWeight,
        bias: Option<Tensor>,
    },
    /// The bias stays in `bias_host`; int8 runs on the CPU only.
    Int8(Arc<Int8Weights>),
}

/// `Wt` `[in, out]`: memory of its own, or where an engine-layout file maps it (`mapped`).
#[derive(Debug, Clone)]
enum TransposedWeight {
    Owned(Tensor),
    /// Read in place by the fused kernels; copied once, on first use, for the paths that need
    /// candle's operations on it (folded cross-attention, generic operations).
    Mapped {
        wt: MappedTensor,
        copy: OnceLock<Tensor>,
    },
}

impl TransposedWeight {
    fn tensor(&self) -> Result<Tensor> {
        match self {
            TransposedWeight::Owned(t) => Ok(t.clone()),
            TransposedWeight::Mapped { wt, copy } => {
                if let Some(t) = copy.get() {
                    return Ok(t.clone());
                }
                let t = wt.to_tensor()?;
                Ok(copy.get_or_init(|| t).clone())
            }
        }
    }
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
            Weights::F32T { wt, .. } => Some(wt.tensor()?.t()?),
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
                let wt = wt.tensor()?;
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
            Weights::F32T { wt, .. } => Some(x.broadcast_matmul(&wt.tensor()?)?),
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
                let bias_host = self.bias_host.as_deref();
                if crate::network::kernels::fused(x.device()) && x.dtype() == DType::F32 {
                    return match wt {
                        TransposedWeight::Owned(t) => crate::cpu::linear::linear_t(x, t, bias_host),
                        TransposedWeight::Mapped { wt, .. } => {
                            let (k, n) = (wt.dims()[0], wt.dims()[1]);
                            crate::cpu::linear::linear_t_host(x, wt.f32s()?, (k, n), bias_host)
                        }
                    };
                }
                let y = x.broadcast_matmul(&wt.tensor()?)?;
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

/// `vb`'s weight `[n, k]` quantised (`weight_int8`, `_int8_scale`, `_int8_offset`), the packed
/// bytes left in an engine-layout file's mapping where the load put them there; `None` when
/// `vb` has the weight in another form.
pub(crate) fn int8_weights(vb: &VarBuilder, n: usize, k: usize) -> Result<Option<Int8Weights>> {
    let init = candle_nn::Init::Const(0.0);
    let scale_name = format!("weight{SCALE}");
    // The scales are never mapped: where they are, the weight is int8.
    if !vb.contains_tensor(&scale_name) {
        return Ok(None);
    }
    let (prefix, packed_name) = (vb.prefix(), format!("weight{PACKED}"));
    let packed = match crate::load::mapped::take(&format!("{prefix}.{packed_name}")) {
        Some(m) if m.dtype() == DType::U8 => PackedBytes::Mapped(m),
        Some(m) => candle_core::bail!("{prefix}: packed int8 weights as {:?}", m.dtype()),
        None => {
            let len = n.div_ceil(BLOCK) * k.div_ceil(4) * 4 * BLOCK;
            PackedBytes::Owned(vb.get_with_hints_dtype(len, &packed_name, init, DType::U8)?)
        }
    };
    let scale = vb.get_with_hints_dtype(n, &scale_name, init, DType::F32)?;
    let offset_name = format!("weight{OFFSET}");
    let offset = match vb.contains_tensor(&offset_name) {
        true => Some(vb.get_with_hints_dtype(n, &offset_name, init, DType::I32)?),
        false => None,
    };
    Int8Weights::from_parts(packed, &scale, offset.as_ref(), n, k).map(Some)
}

/// A dense layer from `vb`: int8 or transposed as the checkpoint was read (`dense_entries`),
/// left in an engine-layout file's mapping where the load put it there (`mapped`), or as
/// the checkpoint stores it.
pub fn linear(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    if let Some(weights) = int8_weights(&vb, out_dim, in_dim)? {
        let bias = vb.get(out_dim, "bias")?;
        return Ok(Linear {
            weights: Weights::Int8(Arc::new(weights)),
            bias_host: Some(bias.to_dtype(DType::F32)?.to_vec1()?),
        });
    }
    let (prefix, transposed_name) = (vb.prefix(), format!("weight{TRANSPOSED}"));
    let wt = match crate::load::mapped::take(&format!("{prefix}.{transposed_name}")) {
        Some(m) if m.dims() == [in_dim, out_dim] && m.dtype() == DType::F32 => {
            Some(TransposedWeight::Mapped {
                wt: m,
                copy: OnceLock::new(),
            })
        }
        Some(m) => candle_core::bail!(
            "{prefix}: transposed weight {:?} {:?}, expected [{in_dim}, {out_dim}] F32",
            m.dims(),
            m.dtype()
        ),
        None if vb.contains_tensor(&transposed_name) => Some(TransposedWeight::Owned(
            vb.get((in_dim, out_dim), &transposed_name)?,
        )),
        None => None,
    };
    if let Some(wt) = wt {
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
