//! Flags every subcommand shares (device, dtype, threads, JSON output) and output helpers.

use anyhow::{Result, bail};
use clap::Args;
use tch::{Device, Kind};

#[derive(Args, Clone, Debug)]
pub struct Global {
    /// Where tensors live: cpu, cuda or cuda:N.
    #[arg(long, global = true, default_value = "cpu")]
    pub device: String,
    /// Weight and activation dtype: f32, bf16 or f16.
    #[arg(long, global = true, default_value = "f32")]
    pub dtype: String,
    /// CPU threads for libtorch (default: all cores).
    #[arg(long, global = true)]
    pub threads: Option<i32>,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

impl Global {
    pub fn device(&self) -> Result<Device> {
        let d = match self.device.as_str() {
            "cpu" => Device::Cpu,
            "cuda" => Device::Cuda(0),
            s => match s.strip_prefix("cuda:").and_then(|n| n.parse::<usize>().ok()) {
                Some(n) => Device::Cuda(n),
                None => bail!("--device `{s}` is not one of cpu, cuda, cuda:N"),
            },
        };
        if let Device::Cuda(n) = d {
            let count = tch::Cuda::device_count() as usize;
            if n >= count {
                bail!(
                    "--device {} asked for, but this build sees {count} CUDA device(s)\nhint: run `emu doctor`; \
                     a CUDA build needs LIBTORCH_USE_PYTORCH=1 with a CUDA PyTorch 2.11 (see README)",
                    self.device
                );
            }
        }
        Ok(d)
    }

    pub fn kind(&self) -> Result<Kind> {
        Ok(match self.dtype.as_str() {
            "f32" | "float32" => Kind::Float,
            "bf16" | "bfloat16" => Kind::BFloat16,
            "f16" | "float16" => Kind::Half,
            s => bail!("--dtype `{s}` is not one of f32, bf16, f16"),
        })
    }

    pub fn apply_threads(&self) {
        if let Some(n) = self.threads {
            tch::set_num_threads(n.max(1));
        }
    }
}

/// Prints `value` as JSON, or `text()` otherwise.
pub fn emit<T: serde::Serialize>(
    g: &Global,
    value: &T,
    text: impl FnOnce() -> String,
) -> Result<()> {
    if g.json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        print!("{}", text());
    }
    Ok(())
}
