//! `emu generate` (text to image or video) and `emu continue` (video continuation).

use crate::common::{Global, emit};
use anyhow::{Context, Result, bail, ensure};
use clap::Args;
use emu_model::generate::{GenerateConfig, SamplingConfig, Structure};
use emu_model::pipeline::{Emu3, Generated};
use emu_tokenizer::files::{load_video, save_gif};
use emu_tokenizer::sequence::generate_size;
use serde::Serialize;
use std::path::{Path, PathBuf};

#[derive(Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Classifier-free guidance scale (1 disables it); by default the model's own (its folder's
    /// extensions.json), else Emu3's 3.
    #[arg(long)]
    pub cfg: Option<f64>,
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    /// Top-k for text tokens.
    #[arg(long)]
    pub top_k: Option<i64>,
    /// Top-k for image tokens (Emu3-Gen uses 2048).
    #[arg(long)]
    pub top_k_image: Option<i64>,
    /// Nucleus sampling threshold.
    #[arg(long)]
    pub top_p: Option<f64>,
    /// Random seed; the same seed gives the same output.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Emu3's guidance scale, for models that do not name their own.
pub const DEFAULT_CFG: f64 = 3.0;

impl SamplingArgs {
    pub fn config(&self, max_new_tokens: i64, model: &Emu3) -> GenerateConfig {
        GenerateConfig {
            sampling: SamplingConfig {
                temperature: self.temperature,
                top_k: self.top_k,
                top_k_image: self.top_k_image,
                top_p: self.top_p,
            },
            cfg_scale: self.cfg.or(model.extensions.cfg_scale).unwrap_or(DEFAULT_CFG),
            seed: self.seed,
            max_new_tokens,
            best_of: 1,
        }
    }
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// The model folder.
    #[arg(long)]
    pub model: PathBuf,
    /// What to draw (repeat for several prompts).
    #[arg(long, required = true)]
    pub prompt: Vec<String>,
    /// The unconditional stream's prompt for guidance ("" = the unconditional model).
    #[arg(long, default_value = "")]
    pub negative_prompt: String,
    /// Aspect ratio W:H; the grid follows from the model's image_area.
    #[arg(long, default_value = "1:1", conflicts_with = "grid")]
    pub ratio: String,
    /// Code grid HxW (rows x columns) instead of --ratio.
    #[arg(long, value_parser = crate::tokenize::parse_size)]
    pub grid: Option<(u32, u32)>,
    /// Generate a video of this many latent frames (4 frames each) instead of an image.
    #[arg(long)]
    pub frames: Option<i64>,
    /// Frames per second of a video.
    #[arg(long, default_value_t = 8)]
    pub fps: i64,
    /// Samples per prompt.
    #[arg(long, default_value_t = 1)]
    pub num: usize,
    /// Samples generated together (each with its --best-of candidates).
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Candidates drawn per sample; the one the prompt explains best (the highest pointwise
    /// mutual information of its codes with the prompt, the quantity guidance amplifies) is kept.
    /// Costs N times the generation, and N times the batch's memory.
    #[arg(long, default_value_t = 1)]
    pub best_of: usize,
    /// Output folder.
    #[arg(long, short, default_value = "out")]
    pub out: PathBuf,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// A separate vision-tokenizer folder.
    #[arg(long)]
    pub vq: Option<PathBuf>,
}

#[derive(Serialize)]
struct Written {
    prompt: String,
    /// What a planning model wrote before drawing.
    #[serde(skip_serializing_if = "Option::is_none")]
    plan: Option<String>,
    files: Vec<String>,
    settings: String,
}

/// The grid of a request, checked against the model's context.
fn structure(
    model: &Emu3,
    ratio: &str,
    grid: Option<(u32, u32)>,
    frames: i64,
) -> Result<Structure> {
    let f = model
        .vq
        .as_ref()
        .context("this model has no vision tokenizer; pass --vq DIR")?
        .config
        .spatial_factor();
    let (h, w) = match grid {
        Some((h, w)) => (h as i64, w as i64),
        None => generate_size(ratio, model.lm.config.image_area, f)?,
    };
    ensure!(h > 0 && w > 0 && frames > 0, "the grid and frame count must be positive");
    let s = Structure { h, w, frames };
    let max = model.lm.config.max_position_embeddings;
    ensure!(
        s.total_tokens() + 32 <= max,
        "a {frames}-frame {h}x{w} grid needs {} tokens, but the model has {max} positions\nhint: use a smaller --grid or fewer --frames",
        s.total_tokens()
    );
    Ok(s)
}

fn save(
    out: &Path,
    stem: &str,
    g: &Generated,
    fps: i64,
    settings: &serde_json::Value,
) -> Result<Vec<String>> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut files = Vec::new();
    if g.frames.len() == 1 {
        let p = out.join(format!("{stem}.png"));
        g.frames[0].save(&p).with_context(|| format!("writing {}", p.display()))?;
        files.push(p.display().to_string());
    } else {
        for (i, f) in g.frames.iter().enumerate() {
            let p = out.join(format!("{stem}_{i:03}.png"));
            f.save(&p).with_context(|| format!("writing {}", p.display()))?;
        }
        let p = out.join(format!("{stem}.gif"));
        save_gif(&g.frames, &p, fps as u32)?;
        files.push(p.display().to_string());
    }
    let side = out.join(format!("{stem}.json"));
    std::fs::write(&side, serde_json::to_string_pretty(settings)?)
        .with_context(|| format!("writing {}", side.display()))?;
    files.push(side.display().to_string());
    Ok(files)
}

pub fn generate(g: &Global, a: &GenerateArgs) -> Result<()> {
    ensure!(a.best_of >= 1, "--best-of is {}; draw at least one candidate", a.best_of);
    let model = Emu3::load(&a.model, a.vq.as_deref(), g.device()?, g.kind()?)?;
    let st = structure(&model, &a.ratio, a.grid, a.frames.unwrap_or(1))?;
    let cfg = GenerateConfig { best_of: a.best_of, ..a.sampling.config(st.total_tokens(), &model) };
    let jobs: Vec<(usize, usize, String)> = a
        .prompt
        .iter()
        .enumerate()
        .flat_map(|(i, p)| (0..a.num).map(move |k| (i, k, p.clone())))
        .collect();
    let rows = jobs.len() as i64 * st.h * st.frames * a.best_of as i64;
    let bar = crate::progress::bar(rows as u64, "rows");
    let mut written = Vec::new();
    for (b, chunk) in jobs.chunks(a.batch.max(1)).enumerate() {
        let prompts: Vec<String> = chunk.iter().map(|(_, _, p)| p.clone()).collect();
        let mut c = cfg.clone();
        c.seed = cfg.seed.wrapping_add(b as u64);
        let outs =
            model.text_to_grid(&prompts, &a.negative_prompt, st, a.fps, &c, &mut |_, _, _| {
                bar.inc(1)
            })?;
        for ((i, k, p), out) in chunk.iter().zip(outs) {
            let settings = serde_json::json!({"prompt": p, "plan": out.plan, "negative_prompt": a.negative_prompt, "grid": [st.h, st.w], "frames": st.frames,
                "fps": a.fps, "cfg": c.cfg_scale, "sampling": c.sampling, "best_of": c.best_of, "seed": c.seed, "batch_index": b, "model": a.model});
            let files = save(&a.out, &format!("{i:03}_{k:02}"), &out, a.fps, &settings)?;
            let plan = out.plan.clone();
            written.push(Written {
                prompt: p.clone(),
                plan,
                files,
                settings: settings.to_string(),
            });
        }
    }
    bar.finish_and_clear();
    emit(g, &written, || {
        written
            .iter()
            .map(|w| match &w.plan {
                Some(plan) => format!("{} (plan: {plan}): {}\n", w.prompt, w.files.join(", ")),
                None => format!("{}: {}\n", w.prompt, w.files.join(", ")),
            })
            .collect()
    })
}

#[derive(Args, Debug)]
pub struct ContinueArgs {
    /// The model folder.
    #[arg(long)]
    pub model: PathBuf,
    /// The given frames: a GIF or a folder of images (a multiple of 4 frames).
    #[arg(long)]
    pub frames: PathBuf,
    /// Latent frames of the whole video (each is 4 frames), given ones included.
    #[arg(long, default_value_t = 2)]
    pub total: i64,
    /// What happens in the video.
    #[arg(long, default_value = "")]
    pub prompt: String,
    /// Aspect ratio W:H of each frame; the grid follows from the model's image_area.
    #[arg(long, default_value = "1:1", conflicts_with = "grid")]
    pub ratio: String,
    /// Code grid HxW (rows x columns) of each frame instead of --ratio.
    #[arg(long, value_parser = crate::tokenize::parse_size)]
    pub grid: Option<(u32, u32)>,
    /// Frames per second of the video.
    #[arg(long, default_value_t = 8)]
    pub fps: i64,
    /// Output folder.
    #[arg(long, short, default_value = "out")]
    pub out: PathBuf,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// A separate vision-tokenizer folder.
    #[arg(long)]
    pub vq: Option<PathBuf>,
}

pub fn continue_video(g: &Global, a: &ContinueArgs) -> Result<()> {
    let model = Emu3::load(&a.model, a.vq.as_deref(), g.device()?, g.kind()?)?;
    let st = structure(&model, &a.ratio, a.grid, a.total)?;
    let frames = load_video(&a.frames)?;
    let t = model.vq.as_ref().map_or(4, |v| v.config.temporal_downsample_factor) as usize;
    if frames.len() % t != 0 || frames.len() / t >= a.total as usize {
        bail!(
            "{} has {} frames: give a multiple of {t}, fewer than --total {} latent frames ({} frames)",
            a.frames.display(),
            frames.len(),
            a.total,
            a.total as usize * t
        );
    }
    let cfg = a.sampling.config(st.total_tokens(), &model);
    let out = model.continue_video(&a.prompt, &frames, st, a.fps, &cfg)?;
    let settings = serde_json::json!({"prompt": a.prompt, "given_frames": frames.len(), "total_latent_frames": a.total, "cfg": cfg.cfg_scale, "seed": cfg.seed, "sampling": cfg.sampling});
    let files = save(&a.out, "continued", &out, a.fps, &settings)?;
    emit(g, &files, || files.iter().map(|f| format!("wrote {f}\n")).collect())
}
