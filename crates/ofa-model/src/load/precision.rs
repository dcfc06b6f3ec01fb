//! The number format the network computes in. f32 is the default and matches the reference;
//! bf16 and f16 halve the weights and run on a GPU's tensor cores, at some cost in accuracy;
//! int8 quantises the dense layers' weights on the CPU (a quarter of their memory, ~3× their
//! speed with AVX-512 VNNI), also at some cost in accuracy.

use candle_core::{DType, Device};

use crate::error::{OfaError, Result};
use crate::network::dense_form::DenseForm;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    Bf16,
    F16,
    Int8,
}

impl Precision {
    pub const ALL: [Precision; 4] = [
        Precision::F32,
        Precision::Bf16,
        Precision::F16,
        Precision::Int8,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::F16 => "f16",
            Precision::Int8 => "int8",
        }
    }

    pub fn dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::Bf16 => DType::BF16,
            Precision::F16 => DType::F16,
            // Activations and everything but the dense layers' weights stay f32.
            Precision::Int8 => DType::F32,
        }
    }

    /// How the dense layers' weights are kept as they load: quantised for int8, transposed for
    /// the CPU's gemm otherwise, as stored on a GPU.
    pub fn dense_form(self, device: &Device) -> DenseForm {
        match self {
            Precision::Int8 => DenseForm::Int8,
            _ if device.is_cpu() => DenseForm::Transposed,
            _ => DenseForm::Stored,
        }
    }

    /// Refuses what `device` cannot run well: the CPU kernels are f32 or int8, and candle's
    /// generic half-precision CPU path would be slower than f32, not faster; int8 has CPU
    /// kernels only.
    pub fn check(self, device: &Device) -> Result<()> {
        match self {
            Precision::F32 => Ok(()),
            Precision::Int8 if !device.is_cpu() => Err(OfaError::Precision(
                "int8 runs on the CPU only; on a GPU use bf16 or f16".into(),
            )),
            Precision::Int8 => Ok(()),
            _ if device.is_cpu() && !crate::network::kernels::generic_forced() => {
                Err(OfaError::Precision(format!(
                    "{} runs on a GPU only (set GPU_DEVICE with a CUDA build); on the CPU use f32 or int8",
                    self.name()
                )))
            }
            _ => Ok(()),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Precision {
    type Err = OfaError;

    fn from_str(s: &str) -> Result<Self> {
        let wanted = s.trim().to_ascii_lowercase();
        let alias = match wanted.as_str() {
            "fp32" | "float32" => "f32",
            "bfloat16" => "bf16",
            "fp16" | "float16" | "half" => "f16",
            other => other,
        };
        Precision::ALL
            .into_iter()
            .find(|p| p.name() == alias)
            .ok_or_else(|| {
                OfaError::Precision(format!(
                    "unknown precision {s:?}; supported: {}",
                    Precision::ALL.map(Precision::name).join(", ")
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_aliases_and_names_the_supported_ones() {
        assert_eq!("bf16".parse::<Precision>().unwrap(), Precision::Bf16);
        assert_eq!(" FP16".parse::<Precision>().unwrap(), Precision::F16);
        assert_eq!("float32".parse::<Precision>().unwrap(), Precision::F32);
        let err = "int4".parse::<Precision>().unwrap_err().to_string();
        assert!(err.contains("supported: f32, bf16, f16, int8"), "{err}");
        assert_eq!("INT8".parse::<Precision>().unwrap(), Precision::Int8);
    }

    #[test]
    fn half_precision_is_refused_on_the_cpu() {
        assert!(Precision::F32.check(&Device::Cpu).is_ok());
        let err = Precision::Bf16.check(&Device::Cpu).unwrap_err().to_string();
        assert!(err.contains("bf16 runs on a GPU only"), "{err}");
        assert!(Precision::Int8.check(&Device::Cpu).is_ok());
    }
}
