//! `--device cpu|cuda|cuda:N`.

use candle_core::Device;

/// Parses a device name and opens it; a CUDA device without a usable GPU or
/// without the `cuda` feature is a clear error, not a panic.
pub fn open(name: &str) -> anyhow::Result<Device> {
    let name = name.trim();
    let ordinal = match name {
        "cpu" => return Ok(Device::Cpu),
        "cuda" => 0,
        s => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => n,
            _ => {
                return Err(crate::exit::InvalidInput(format!(
                    "unknown --device `{name}`: use cpu, cuda or cuda:N (e.g. cuda:0)"
                ))
                .into());
            }
        },
    };
    if !candle_core::utils::cuda_is_available() {
        return Err(crate::exit::InvalidInput(format!(
            "--device `{name}` asked for, but this muq was built without CUDA support: \
             rebuild with `--features cuda` (see docs/experiment.md) or use --device cpu"
        ))
        .into());
    }
    Device::new_cuda(ordinal).map_err(|e| {
        anyhow::anyhow!("cannot open CUDA device {ordinal} (`{name}`): {e}; check nvidia-smi or use --device cpu")
    })
}

/// A stable, human-readable name of a device for result files.
pub fn describe(device: &Device) -> String {
    match device {
        Device::Cpu => "cpu".to_string(),
        Device::Cuda(_) => match device.location() {
            candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
            _ => "cuda".to_string(),
        },
        Device::Metal(_) => "metal".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_and_rejects_nonsense() {
        assert!(open("cpu").unwrap().is_cpu());
        let err = open("gpu0").unwrap_err().to_string();
        assert!(err.contains("cpu, cuda or cuda:N"), "{err}");
    }

    #[test]
    fn cuda_without_a_gpu_build_is_a_clear_error() {
        if candle_core::utils::cuda_is_available() {
            eprintln!("cuda_without_a_gpu_build_is_a_clear_error: did not run (CUDA is available)");
            return;
        }
        let err = open("cuda:0").unwrap_err().to_string();
        assert!(err.contains("--features cuda"), "{err}");
    }
}
