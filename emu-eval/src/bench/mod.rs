//! The benchmark suite: `geneval` (generation), `vqa` (understanding), `video` (text-to-video
//! and continuation), `recon` (the tokenizer) and `ppl` (held-out loss per modality). Every
//! benchmark has a fixed protocol (prompt sets from fixed seeds, N samples per prompt) and
//! writes the same report schema; `quick` and `full` differ only in sizes.

pub mod generation;
pub mod grid;
pub mod ppl;
pub mod recon;
pub mod report;
pub mod understanding;
pub mod video;

use anyhow::{Context, Result, bail};
use emu_model::generate::{GenerateConfig, SamplingConfig};
use emu_model::pipeline::Emu3;
use image::RgbImage;
use indicatif::{ProgressBar, ProgressStyle};
use report::Report;
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BenchOptions {
    pub prompts_per_category: usize,
    pub samples_per_prompt: usize,
    pub vqa_images: usize,
    pub video_prompts: usize,
    pub recon_images: usize,
    /// Requests per generation batch.
    pub batch: usize,
    /// Aspect ratio of generated images, and the model's image_area decides the grid.
    pub ratio: String,
    pub generation: GenerateConfig,
    pub show_progress: bool,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self::quick()
    }
}

impl BenchOptions {
    pub fn quick() -> Self {
        BenchOptions {
            prompts_per_category: 10,
            samples_per_prompt: 1,
            vqa_images: 20,
            video_prompts: 6,
            recon_images: 32,
            batch: 16,
            ratio: "1:1".into(),
            generation: GenerateConfig {
                sampling: SamplingConfig {
                    temperature: 1.0,
                    top_k: Some(1),
                    top_k_image: Some(8),
                    top_p: None,
                },
                cfg_scale: 3.0,
                seed: 0,
                max_new_tokens: 32,
                best_of: 1,
            },
            show_progress: true,
        }
    }

    pub fn full() -> Self {
        BenchOptions {
            prompts_per_category: 40,
            samples_per_prompt: 2,
            vqa_images: 100,
            video_prompts: 24,
            recon_images: 200,
            ..Self::quick()
        }
    }

    /// Just enough of every benchmark to exercise it end to end (tests, CI).
    pub fn smoke() -> Self {
        BenchOptions {
            prompts_per_category: 1,
            vqa_images: 2,
            video_prompts: 1,
            recon_images: 4,
            ..Self::quick()
        }
    }

    pub fn suite(name: &str) -> Result<Self> {
        match name {
            "smoke" => Ok(Self::smoke()),
            "quick" => Ok(Self::quick()),
            "full" => Ok(Self::full()),
            o => bail!("unknown suite `{o}`; expected smoke, quick or full"),
        }
    }

    /// The code grid of generated images: the model's image_area at `ratio`.
    pub fn grid(&self, model: &Emu3) -> Result<(i64, i64)> {
        let f =
            model.vq.as_ref().context("the model has no vision tokenizer")?.config.spatial_factor();
        emu_tokenizer::sequence::generate_size(&self.ratio, model.lm.config.image_area, f)
    }
}

/// Writes a sample grid into `out`; returns its file name.
pub fn save_grid(
    out: &Path,
    name: &str,
    items: &[(String, RgbImage)],
    cols: usize,
) -> Result<String> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    if items.is_empty() {
        return Ok(String::new());
    }
    let path = out.join(name);
    grid::grid(items, cols, 2)
        .save(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(name.to_string())
}

/// Which benchmarks to run.
pub const ALL: [&str; 5] = ["geneval", "vqa", "video", "recon", "ppl"];

/// The model or models a suite judges. Emu3 releases its generator and its chat model apart
/// (Emu3-Gen and Emu3-Chat, fine-tuned from one pretrained model); a run trained that way is judged
/// the same way: generation, video and the tokenizer on `generator`, understanding on `chat`.
#[derive(Clone, Copy)]
pub struct Models<'a> {
    pub generator: &'a Emu3,
    pub chat: &'a Emu3,
}

impl<'a> Models<'a> {
    /// The generator, and the chat model if there is one apart from it.
    pub fn new(generator: &'a Emu3, chat: Option<&'a Emu3>) -> Self {
        Models { generator, chat: chat.unwrap_or(generator) }
    }

    /// The folder(s) judged, as the report names them.
    pub fn describe(&self) -> String {
        if self.generator.dir == self.chat.dir {
            self.generator.dir.display().to_string()
        } else {
            format!(
                "{} (generation), {} (understanding)",
                self.generator.dir.display(),
                self.chat.dir.display()
            )
        }
    }
}

/// Runs `benches` (default: all) on `models`; writes report.json, report.md and the sample grids
/// into `out`.
pub fn run_suite(
    models: Models<'_>,
    suite: &str,
    opts: &BenchOptions,
    benches: &[&str],
    out: &Path,
) -> Result<Report> {
    let start = std::time::Instant::now();
    for b in benches {
        if !ALL.contains(b) {
            bail!("unknown benchmark `{b}`; expected one of {ALL:?}");
        }
    }
    let total = (opts.prompts_per_category * 6 * opts.samples_per_prompt
        + opts.vqa_images * 6
        + opts.video_prompts * 2) as u64;
    let bar = if opts.show_progress { ProgressBar::new(total) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("eval {msg:>8} [{bar:30}] {pos}/{len} eta {eta}")
            .expect("template")
            .progress_chars("=> "),
    );
    let mut tick = |n: usize| bar.inc(n as u64);
    let mut report = Report {
        schema: report::SCHEMA,
        model: models.describe(),
        suite: suite.into(),
        ..Default::default()
    };
    for b in benches {
        bar.set_message(b.to_string());
        let r = match *b {
            "geneval" => generation::run(models.generator, opts, out, &mut tick)?,
            "vqa" => understanding::run(models.chat, opts, out, &mut tick)?,
            "video" => video::run(models.generator, opts, out, &mut tick)?,
            "recon" => {
                let (h, w) = opts.grid(models.generator)?;
                let (ph, _) = models.generator.pixels(h, w)?;
                recon::run(
                    models.generator.vq.as_ref().context("the model has no vision tokenizer")?,
                    ph as u32,
                    opts.recon_images,
                    opts.prompts_per_category,
                    opts.video_prompts,
                    out,
                )?
            }
            "ppl" => ppl::run(models, opts)?,
            _ => unreachable!("checked above"),
        };
        report.benchmarks.push(r);
    }
    bar.finish_and_clear();
    report.seconds = start.elapsed().as_secs_f64();
    report.write(out)?;
    Ok(report)
}
