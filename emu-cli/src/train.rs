//! `emu train`: the training pipeline (records -> VQ -> BPE -> tokens -> LM -> eval -> report).
//! Launched once, or once per rank by torchrun / Slurm / `cargo xtask train --nproc N`.

use crate::common::Global;
use anyhow::{Context, Result, bail};
use clap::Args;
use emu_train::dist::c10d::Backend;
use emu_train::dist::{Dist, Topology};
use emu_train::lm::Stage;
use emu_train::presets::{ChatPhase, PipelineConfig, Source};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Named configuration: smoke, default or large.
    #[arg(long, default_value = "default")]
    pub preset: String,
    /// A pipeline config (JSON, as written to runs/<name>/pipeline.json) instead of a preset.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Run name: the run lives in <runs>/<name> (default: the preset's name).
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long, default_value = "runs")]
    pub runs: PathBuf,
    /// Start the language model from this model folder (ours or an official Emu3).
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Training stage of the language model (`model/`): pretrain, sft-gen or sft-chat.
    #[arg(long)]
    pub stage: Option<String>,
    /// Replace the transformer's shape with a named preset (tiny, small, base, emu3-8b); its
    /// vocabulary and token ids still come from the tokenizer.
    #[arg(long)]
    pub model_preset: Option<String>,
    /// Override the number of LM steps (of `model/`; the chat phase keeps its own).
    #[arg(long)]
    pub steps: Option<i64>,
    /// Steps of the chat phase, which trains on from `model/` into `chat/` (0: no chat model,
    /// one model is judged on everything).
    #[arg(long)]
    pub chat_steps: Option<i64>,
    /// Shard the optimizer state over ranks (ZeRO-1).
    #[arg(long)]
    pub zero1: bool,
    /// Collective backend for multi-process runs: gloo (CPU) or nccl (CUDA).
    #[arg(long, default_value = "gloo")]
    pub backend: String,
    /// Seconds before a collective (or the rendezvous) gives up and names the failing rank.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
    /// Train on an image folder described by a captions JSONL instead of the built-in world.
    #[arg(long, requires = "captions")]
    pub images: Option<PathBuf>,
    #[arg(long)]
    pub captions: Option<PathBuf>,
    /// Add a folder of videos (sub-folders of frames with caption.txt).
    #[arg(long)]
    pub videos: Option<PathBuf>,
    /// Pixel size images are resized to (folder sources).
    #[arg(long, default_value_t = 64)]
    pub size: u32,
    /// Peak TFLOP/s of one device, to log model FLOPs utilisation (989 for an H100/H200 in bf16).
    #[arg(long)]
    pub peak_tflops: Option<f64>,
    /// Skip the final evaluation.
    #[arg(long)]
    pub no_eval: bool,
}

pub fn run(g: &Global, a: &TrainArgs) -> Result<()> {
    let mut cfg = match &a.config {
        Some(p) => serde_json::from_str(
            &std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        )
        .with_context(|| format!("{} is not a pipeline config", p.display()))?,
        None => PipelineConfig::preset(&a.preset)?,
    };
    if let (Some(dir), Some(captions)) = (&a.images, &a.captions) {
        cfg.sources = vec![Source::ImageFolder {
            dir: dir.clone(),
            captions: captions.clone(),
            size: a.size,
        }];
    }
    if let Some(dir) = &a.videos {
        cfg.sources.push(Source::VideoFolder { dir: dir.clone(), size: a.size, frames: 8, fps: 8 });
    }
    if let Some(s) = &a.stage {
        cfg.lm_train.stage = Stage::parse(s)?;
    }
    if let Some(m) = &a.model_preset {
        cfg.model = emu_model::Emu3Config::preset(m)?;
    }
    if let Some(n) = a.steps {
        cfg.lm_train.steps = n;
    }
    match a.chat_steps {
        Some(n) if n < 0 => bail!("--chat-steps {n}: expected 0 (no chat model) or more"),
        Some(0) => cfg.chat = None,
        Some(n) => cfg.chat = Some(ChatPhase { steps: n, ..cfg.chat.unwrap_or_default() }),
        None => {}
    }
    cfg.lm_train.zero1 |= a.zero1;
    cfg.lm_train.device = g.device.clone();
    cfg.vq_train.device = g.device.clone();
    cfg.lm_train.bf16 = g.dtype == "bf16";
    if let Some(p) = a.peak_tflops {
        cfg.lm_train.peak_tflops = p;
    }
    if a.no_eval {
        cfg.eval_suite = "none".into();
    }
    let topo = Topology::from_env()?;
    let dist = Dist::init(topo, Backend::parse(&a.backend)?, Duration::from_secs(a.timeout))?;
    let name = a.name.clone().unwrap_or_else(|| cfg.preset.clone());
    let run = a.runs.join(&name);
    let show = dist.is_main() && !g.json;
    let report = emu_train::pipeline::run(&run, &cfg, a.init.as_deref(), &dist, show)?;
    if let Some(r) = report {
        if g.json {
            println!("{}", serde_json::to_string_pretty(&r)?);
        } else {
            println!(
                "{}",
                r.markdown()
                    .lines()
                    .take_while(|l| !l.starts_with("## "))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            println!("report: {}", run.join("report.md").display());
        }
    }
    Ok(())
}
