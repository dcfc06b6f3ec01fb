//! Which device the model runs on: the CPU, or, in a `--features cuda` build, the GPU that
//! `GPU_DEVICE` names.

use anyhow::Result;
use ofa_model::Device;

/// The device for `gpu` (a CUDA ordinal, or unset/empty for the CPU), and a warning to log when
/// a GPU was asked for but this build cannot use one.
pub fn select(gpu: Option<&str>) -> Result<(Device, Option<String>)> {
    let Some(gpu) = gpu.map(str::trim).filter(|g| !g.is_empty()) else {
        return Ok((Device::Cpu, None));
    };
    let ordinal: usize = gpu
        .parse()
        .map_err(|_| anyhow::anyhow!("GPU_DEVICE must be a CUDA ordinal (0, 1, …), got {gpu:?}"))?;
    // candle defines `new_cuda` in every build; without its CUDA backend it fails, and the
    // service runs on the CPU and says so rather than refusing to start.
    match Device::new_cuda(ordinal) {
        Ok(device) => Ok((device, None)),
        Err(e) if !cfg!(feature = "cuda") => Ok((
            Device::Cpu,
            Some(format!(
                "this build has no CUDA support (build with --features cuda: {e}); running on the CPU"
            )),
        )),
        Err(e) => Err(anyhow::anyhow!("cannot open CUDA device {ordinal}: {e}")),
    }
}

/// [`select`] for the command line: the warning goes to stderr.
pub fn select_for_cli(gpu: Option<&str>) -> Result<Device> {
    let (device, warning) = select(gpu)?;
    if let Some(w) = warning {
        eprintln!("warning: {w}");
    }
    Ok(device)
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
