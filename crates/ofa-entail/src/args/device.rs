//! Which device the model runs on: the CPU, or, in a `--features cuda` build, the GPU that
//! `GPU_DEVICE` names.

use anyhow::Result;
use clap::Args;
use ofa_model::{Device, Precision, ResNetLayout};

/// Where the model runs and in what number format; every command that loads it takes these.
#[derive(Args, Debug, Clone)]
pub struct DeviceArgs {
    /// CUDA ordinal to run on (a `--features cuda` build); unset: the CPU.
    #[arg(long, env = "GPU_DEVICE")]
    pub gpu_device: Option<String>,
    /// f32 (exact, the default); bf16 / f16 (on a GPU: half the memory, faster); int8 (on the
    /// CPU: dense layers quantised, ~2× faster, a quarter of their memory; check with `eval`).
    #[arg(long, env = "PRECISION", default_value = "f32", value_parser = parse_precision)]
    pub precision: Precision,
    /// On a GPU, replay the ResNet, encoder and decoder from CUDA graphs for batches up to this
    /// size (0: off). Each shape's recording is checked on the GPU first and kept only when its
    /// replay gives the plain run's results and is faster; small batches are bound by kernel
    /// launches, which a replay removes.
    #[arg(long, env = "CUDA_GRAPHS_MAX_BATCH", default_value_t = 8)]
    pub cuda_graphs_max_batch: usize,
    /// How the ResNet's blocks hold activations: channels-last (`nhwc`; each convolution one
    /// GEMM over the batch), channels-first (`nchw`), or `auto`: on a GPU both are timed at
    /// load on the largest batch the command runs and the faster kept; the CPU runs its own
    /// kernels (channels-first).
    #[arg(long, env = "RESNET_LAYOUT", default_value = "auto", value_parser = parse_layout)]
    pub resnet_layout: LayoutArg,
}

/// `--resnet-layout`: one of the model's layouts, or the faster on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayoutArg {
    Auto,
    Fixed(ResNetLayout),
}

pub fn parse_precision(s: &str) -> Result<Precision, String> {
    s.parse().map_err(|e: ofa_model::OfaError| e.to_string())
}

fn parse_layout(s: &str) -> Result<LayoutArg, String> {
    match s {
        "auto" => Ok(LayoutArg::Auto),
        _ => s.parse().map(LayoutArg::Fixed).map_err(|_| {
            format!(
                "unknown ResNet layout {s:?}: auto, channels-last (nhwc) or channels-first (nchw)"
            )
        }),
    }
}

impl DeviceArgs {
    /// The model as loaded, with this device's run-time options applied; `max_batch`: the
    /// largest batch the command will run (what `auto` times the ResNet's layouts on).
    pub fn configure(
        &self,
        model: ofa_model::Entailment,
        max_batch: usize,
    ) -> ofa_model::Result<ofa_model::Entailment> {
        let model = match self.resnet_layout {
            LayoutArg::Fixed(layout) => model.with_resnet_layout(layout)?,
            LayoutArg::Auto => model.with_tuned_resnet_layout(max_batch)?,
        };
        Ok(model.with_cuda_graphs(self.cuda_graphs_max_batch))
    }

    /// [`DeviceArgs::configure`] for a command that runs each shape once (`predict`, the
    /// command-line `rerank`): nothing timed or recorded, since neither would pay back; `auto`
    /// keeps the device's default layout (channels-last on a GPU).
    pub fn configure_for_one_pass(
        &self,
        model: ofa_model::Entailment,
    ) -> ofa_model::Result<ofa_model::Entailment> {
        let model = match self.resnet_layout {
            LayoutArg::Fixed(layout) => model.with_resnet_layout(layout)?,
            LayoutArg::Auto => model,
        };
        Ok(model.with_cuda_graphs(0))
    }

    /// The device and precision, checked together before anything is loaded; plus a warning
    /// to log when a GPU was asked for but this build cannot use one.
    pub fn open(&self) -> Result<(Device, Precision, Option<String>)> {
        let (device, warning) = select(self.gpu_device.as_deref())?;
        self.precision.check(&device)?;
        Ok((device, self.precision, warning))
    }

    /// [`DeviceArgs::open`] for the command line: the warning goes to stderr.
    pub fn open_for_cli(&self) -> Result<(Device, Precision)> {
        let (device, precision, warning) = self.open()?;
        if let Some(w) = warning {
            eprintln!("warning: {w}");
        }
        Ok((device, precision))
    }
}

/// The device for `gpu` (a CUDA ordinal, or unset/empty for the CPU), and a warning to log when
/// a GPU was asked for but this build cannot use one.
pub fn select(gpu: Option<&str>) -> Result<(Device, Option<String>)> {
    let Some(gpu) = gpu.map(str::trim).filter(|g| !g.is_empty()) else {
        return Ok((Device::Cpu, None));
    };
    let ordinal: usize = gpu
        .parse()
        .map_err(|_| anyhow::anyhow!("GPU_DEVICE must be a CUDA ordinal (0, 1, …), got {gpu:?}"))?;
    if !cfg!(feature = "cuda") {
        // A CPU build still serves, and says why the GPU is not used rather than refusing.
        return Ok((
            Device::Cpu,
            Some(format!(
                "this build has no CUDA support (build with --features cuda); GPU_DEVICE={ordinal} ignored, running on the CPU"
            )),
        ));
    }
    Ok((ofa_model::gpu::open(ordinal)?, None))
}

/// For logs: `cpu` or `cuda:N`.
pub fn name(device: &Device) -> String {
    match device.location() {
        ofa_model::DeviceLocation::Cpu => "cpu".into(),
        ofa_model::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        ofa_model::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resnet_layouts_parse_with_their_aliases_and_auto() {
        assert_eq!(parse_layout("auto"), Ok(LayoutArg::Auto));
        for (s, want) in [
            ("channels-last", ResNetLayout::ChannelsLast),
            ("nhwc", ResNetLayout::ChannelsLast),
            ("channels-first", ResNetLayout::ChannelsFirst),
            ("nchw", ResNetLayout::ChannelsFirst),
        ] {
            assert_eq!(parse_layout(s), Ok(LayoutArg::Fixed(want)));
        }
        let err = parse_layout("diagonal").unwrap_err();
        assert!(err.contains("\"diagonal\": auto, channels-last"), "{err}");
    }

    #[test]
    fn cpu_unless_a_gpu_is_named_and_bad_ordinals_are_refused() {
        assert!(matches!(select(None).unwrap(), (Device::Cpu, None)));
        assert!(matches!(select(Some(" ")).unwrap(), (Device::Cpu, None)));
        let err = select(Some("gpu0")).unwrap_err().to_string();
        assert!(err.contains("GPU_DEVICE must be a CUDA ordinal"), "{err}");
        #[cfg(not(feature = "cuda"))]
        {
            let (d, warning) = select(Some("0")).unwrap();
            assert!(d.is_cpu());
            assert!(warning.unwrap().contains("no CUDA support"));
        }
    }
}
