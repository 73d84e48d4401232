//! `emu eval`: the benchmark suite on a model folder, or GenEval's own prompt file.

use crate::common::{Global, emit};
use anyhow::{Result, bail, ensure};
use clap::Args;
use emu_eval::bench::{self, BenchOptions};
use emu_model::pipeline::Emu3;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Benchmarks to run (default: all): geneval, vqa, video, recon, ppl.
    pub benches: Vec<String>,
    /// The model folder.
    #[arg(long)]
    pub model: PathBuf,
    /// Judge understanding (vqa, ppl's loss_text) with this model folder instead, as Emu3 pairs
    /// Emu3-Gen with Emu3-Chat (a run's `chat/` beside its `model/`).
    #[arg(long)]
    pub chat: Option<PathBuf>,
    /// smoke, quick or full.
    #[arg(long, default_value = "quick")]
    pub suite: String,
    /// Output folder for report.json, report.md and sample grids.
    #[arg(long, short)]
    pub out: PathBuf,
    /// With `geneval`: GenEval's metadata JSONL; writes <index>/samples/<k>.png + metadata.jsonl.
    #[arg(long)]
    pub prompts: Option<PathBuf>,
    /// Samples per prompt (default: the suite's).
    #[arg(long)]
    pub samples: Option<usize>,
    /// Classifier-free guidance scale for generation (default: the model's own, from its
    /// folder's extensions.json, else the suite's: Emu3's 3).
    #[arg(long)]
    pub cfg: Option<f64>,
    /// Sampling temperature for generation (0: greedy).
    #[arg(long)]
    pub temperature: Option<f64>,
    /// Top-k for image and video tokens.
    #[arg(long)]
    pub top_k_image: Option<i64>,
    /// Nucleus threshold in (0, 1] for generation; with greedy text answers it acts on images.
    #[arg(long)]
    pub top_p: Option<f64>,
    /// Candidates drawn per text-to-image or text-to-video sample; the one its prompt explains
    /// best (by the model's own guidance signal) is judged. 1 judges every sample as drawn;
    /// video continuation always draws once.
    #[arg(long)]
    pub best_of: Option<usize>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub fn run(g: &Global, a: &EvalArgs) -> Result<()> {
    let mut opts = BenchOptions::suite(&a.suite)?;
    opts.show_progress = !g.json;
    opts.generation.seed = a.seed;
    if let Some(s) = a.samples {
        opts.samples_per_prompt = s;
    }
    if let Some(t) = a.temperature {
        opts.generation.sampling.temperature = t;
    }
    if let Some(k) = a.top_k_image {
        opts.generation.sampling.top_k_image = Some(k);
    }
    if let Some(p) = a.top_p {
        opts.generation.sampling.top_p = Some(p);
    }
    if let Some(k) = a.best_of {
        ensure!(k >= 1, "--best-of is {k}; draw at least one candidate");
        opts.generation.best_of = k;
    }
    opts.generation.sampling.validate()?;
    let model = Emu3::load(&a.model, None, g.device()?, g.kind()?)?;
    // The scale given, else the model's own, else the suite's (Emu3's).
    if let Some(c) = a.cfg.or(model.extensions.cfg_scale) {
        opts.generation.cfg_scale = c;
    }
    if let Some(prompts) = &a.prompts {
        if a.benches != ["geneval"] {
            bail!("--prompts goes with `emu eval geneval` (GenEval's metadata format)");
        }
        if a.chat.is_some() {
            bail!("--chat judges understanding; `emu eval geneval --prompts` only generates");
        }
        let bar = crate::progress::bar(0, "geneval");
        let n = bench::generation::from_file(&model, prompts, &opts, &a.out, &mut |k| {
            bar.inc(k as u64)
        })?;
        bar.finish_and_clear();
        return emit(g, &serde_json::json!({"prompts": n, "out": a.out}), || {
            format!("wrote {n} prompts' samples under {}\n", a.out.display())
        });
    }
    let benches: Vec<&str> = if a.benches.is_empty() {
        bench::ALL.to_vec()
    } else {
        a.benches.iter().map(String::as_str).collect()
    };
    let chat = a.chat.as_ref().map(|c| Emu3::load(c, None, g.device()?, g.kind()?)).transpose()?;
    let models = bench::Models::new(&model, chat.as_ref());
    let report = bench::run_suite(models, &a.suite, &opts, &benches, &a.out)?;
    emit(g, &report, || {
        format!("{}\nwrote {}\n", report.markdown(), a.out.join("report.md").display())
    })
}
