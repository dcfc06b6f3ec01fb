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

pub fn linear(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
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
