//! The whole method end to end into `runs/<name>/`:
//! records -> VQ tokenizer -> BPE -> pre-tokenised shards -> language model (`model/`) -> its
//! chat phase, if any (`chat/`) -> evaluation -> `report.md`. Each stage leaves its result in the
//! run folder and is skipped when that result is already there, so an interrupted run continues
//! where it stopped. Data preparation happens on the main rank; other ranks wait for its files,
//! then all ranks train the LM together.

use crate::checkpoint::Companions;
use crate::data::provenance;
use crate::data::records::{self, Record};
use crate::data::shards::TokenStore;
use crate::data::tokenize::{TokenizeOptions, tokenize};
use crate::dist::Dist;
use crate::lm::{Progress, train_lm};
use crate::presets::{PipelineConfig, Source};
use crate::vq_train::{PixelSource, train_vq};
use anyhow::{Context, Result, bail};
use emu_eval::bench::{self, BenchOptions, report::Report};
use emu_eval::world::{self, Scene, VideoScene};
use emu_model::Emu3Config;
use emu_model::pipeline::Emu3;
use emu_tokenizer::checkpoint::write_atomic;
use emu_tokenizer::image::to_tensor;
use emu_tokenizer::text::TextTokenizer;
use emu_tokenizer::vocab::{names, visual_token_name};
use emu_tokenizer::vq::VqModel;
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tch::{Device, Kind, Tensor};

/// Renders fresh world scenes for VQ training (never the same scene twice).
struct WorldPixels {
    size: u32,
    frames: usize,
    next: u64,
}

impl PixelSource for WorldPixels {
    fn images(&mut self, b: i64) -> Tensor {
        let seeds: Vec<u64> = (0..b as u64).map(|i| self.next + i).collect();
        self.next += b as u64;
        let px: Vec<Tensor> = seeds
            .par_iter()
            .map(|&s| to_tensor(&world::render(&Scene::random(s), self.size)))
            .collect();
        Tensor::stack(&px, 0)
    }

    fn videos(&mut self, b: i64) -> Tensor {
        let seeds: Vec<u64> = (0..b as u64).map(|i| self.next + i).collect();
        self.next += b as u64;
        let clips: Vec<Tensor> = seeds
            .par_iter()
            .map(|&s| {
                let frames = world::render_video(&VideoScene::random(s), self.size);
                Tensor::stack(&frames[..self.frames].iter().map(to_tensor).collect::<Vec<_>>(), 0)
            })
            .collect();
        Tensor::stack(&clips, 0)
    }
}

/// The special tokens of our own models, named as Emu3 names them.
pub fn special_tokens() -> Vec<String> {
    [names::PAD, names::BOS, names::EOS, names::EOL, names::EOF, names::IMG, names::BOI, names::EOI]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

fn load_records(sources: &[Source]) -> Result<Vec<Record>> {
    let mut out = Vec::new();
    for s in sources {
        match s {
            Source::World(w) => {
                w.validate()?;
                out.extend(records::world_records(w));
            }
            Source::ImageFolder { dir, captions, size } => {
                let (r, skipped) = records::image_folder_records(dir, captions, *size)?;
                eprintln!("{}: {} records, {skipped} skipped", captions.display(), r.len());
                out.extend(r);
            }
            Source::VideoFolder { dir, size, frames, fps } => {
                let (r, skipped) = records::video_folder_records(dir, *size, *frames, *fps)?;
                eprintln!("{}: {} videos, {skipped} skipped", dir.display(), r.len());
                out.extend(r);
            }
        }
    }
    anyhow::ensure!(!out.is_empty(), "the data sources gave no records");
    Ok(out)
}

fn image_size(sources: &[Source]) -> u32 {
    match sources.first() {
        Some(Source::World(w)) => w.size,
        Some(Source::ImageFolder { size, .. } | Source::VideoFolder { size, .. }) => *size,
        None => 64,
    }
}

fn bar(len: u64, what: &str, show: bool) -> ProgressBar {
    let b = if show { ProgressBar::new(len) } else { ProgressBar::hidden() };
    b.set_style(
        ProgressStyle::with_template("{prefix:>5} [{bar:28}] {pos}/{len} {msg} eta {eta}")
            .expect("template")
            .progress_chars("=> "),
    );
    b.set_prefix(what.to_string());
    b
}

/// A language-model step on its progress bar.
fn show_step(b: &ProgressBar, step: i64, loss: f64, tokens_per_s: f64) {
    b.set_position(step as u64 + 1);
    b.set_message(format!("loss {loss:.3} {tokens_per_s:.0} tok/s"));
}

/// Waits (on non-main ranks) until the main rank has prepared `path`.
fn wait_for(path: &Path, timeout: Duration) -> Result<()> {
    let start = Instant::now();
    while !path.exists() {
        if start.elapsed() > timeout {
            bail!("waited {:?} for rank 0 to prepare {}", timeout, path.display());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// Wall time of each stage, for the report.
#[derive(Default, serde::Serialize)]
pub struct Timings {
    pub records_s: f64,
    pub vq_s: f64,
    pub bpe_s: f64,
    pub tokenize_s: f64,
    pub lm_s: f64,
    /// The chat phase (0 without one).
    pub chat_s: f64,
    pub eval_s: f64,
}

/// Runs (or continues) the pipeline into `run`; returns the evaluation report (main rank).
pub fn run(
    run: &Path,
    cfg: &PipelineConfig,
    init: Option<&Path>,
    dist: &Dist,
    show: bool,
) -> Result<Option<Report>> {
    // Checked before any training, so a bad config does not cost a tokenizer's training first.
    let tokenize_opts = TokenizeOptions {
        cfg_dropout: cfg.cfg_dropout,
        seed: cfg.lm_train.seed,
        qa_turns: cfg.qa_turns,
        turn_layout: cfg.turn_layout,
        describe_last: cfg.describe_last,
        ..Default::default()
    };
    tokenize_opts.validate().context("the pipeline config")?;
    std::fs::create_dir_all(run).with_context(|| format!("creating {}", run.display()))?;
    let mut t = Timings::default();
    let vq_dir = run.join("vision_tokenizer");
    let tok_path = run.join("tokenizer.json");
    let tokens_dir = run.join("tokens");
    let size = image_size(&cfg.sources);
    let made_from = || tokens_made_from(cfg, &tokenize_opts, &tok_path, &vq_dir);
    if dist.is_main() {
        // Checked before this run's config replaces the old one, which judges older folders.
        if tokens_dir.join("index.json").exists() {
            let legacy = legacy_made_from(&run.join("pipeline.json"));
            provenance::check(&tokens_dir, &made_from()?, legacy.as_ref())?;
        }
        write_atomic(&run.join("pipeline.json"), &serde_json::to_string_pretty(cfg)?)?;
        let start = Instant::now();
        let recs = load_records(&cfg.sources)?;
        t.records_s = start.elapsed().as_secs_f64();
        eprintln!("data: {} records ({:.1} s)", recs.len(), t.records_s);

        let start = Instant::now();
        let vq = if vq_dir.join("model.safetensors").exists() {
            VqModel::load(&vq_dir, Device::Cpu, Kind::Float)?
        } else if let Some(init) = init {
            // Fine-tuning keeps the initial model's tokenizer: its codes are the LM's vocabulary.
            let src = if init.join("vision_tokenizer/config.json").exists() {
                init.join("vision_tokenizer")
            } else {
                init.to_path_buf()
            };
            let vq = VqModel::load(&src, Device::Cpu, Kind::Float).with_context(|| {
                format!(
                    "--init {}: its vision tokenizer (in vision_tokenizer/ or the same weights)",
                    init.display()
                )
            })?;
            vq.save(&vq_dir)?;
            vq
        } else {
            let frames = match cfg.sources.first() {
                Some(Source::World(w)) => w.frames,
                _ => 4,
            };
            let mut px = WorldPixels { size, frames, next: 7 << 40 };
            let b = bar(cfg.vq_train.steps as u64, "vq", show);
            let vq = train_vq(run, &vq_dir, &cfg.vq, &mut px, &cfg.vq_train, &mut |s| {
                b.inc(1);
                b.set_message(format!("loss {:.3} psnr {:.1} dB", s.loss, s.psnr));
            })?;
            b.finish_and_clear();
            let proc = serde_json::json!({"min_pixels": size * size, "max_pixels": size * size, "spatial_factor": vq.config.spatial_factor()});
            write_atomic(
                &vq_dir.join("preprocessor_config.json"),
                &serde_json::to_string_pretty(&proc)?,
            )?;
            vq
        };
        t.vq_s = start.elapsed().as_secs_f64();

        let start = Instant::now();
        let text = if tok_path.exists() {
            TextTokenizer::from_file(&tok_path)?
        } else if let Some(init) = init {
            let tok = TextTokenizer::from_dir(init)?;
            tok.save(&tok_path)?;
            tok
        } else {
            let mut specials = special_tokens();
            specials.extend((0..vq.config.codebook_size).map(visual_token_name));
            let tok = TextTokenizer::train_bpe(&records::corpus(&recs), cfg.bpe_vocab, &specials)?;
            tok.save(&tok_path)?;
            tok
        };
        t.bpe_s = start.elapsed().as_secs_f64();

        let start = Instant::now();
        if !tokens_dir.join("index.json").exists() {
            provenance::record(&tokens_dir, &made_from()?)?;
            let model_cfg = lm_config(cfg, init, &text, size, vq.config.spatial_factor())?;
            let vocab =
                emu_model::pipeline::layout_for(&model_cfg, Some(vq.config.codebook_size), |s| {
                    text.token_to_id(s).map(i64::from)
                })?;
            let idx = tokenize(&recs, &vq, &text, &vocab, &tokens_dir, &tokenize_opts)?;
            eprintln!(
                "tokens: {} samples, {} tokens, {} skipped",
                idx.samples, idx.tokens, idx.skipped
            );
        }
        t.tokenize_s = start.elapsed().as_secs_f64();
    } else {
        wait_for(&tokens_dir.join("index.json"), Duration::from_secs(3600))?;
        // The main rank stops on stale tokens; the others stop here rather than hang.
        provenance::check(&tokens_dir, &made_from()?, None)?;
    }

    let text = TextTokenizer::from_file(&tok_path)?;
    let vq_cfg = emu_tokenizer::vq::VqConfig::from_file(&vq_dir.join("config.json"))?;
    let model_cfg = lm_config(cfg, init, &text, size, vq_cfg.spatial_factor())?;
    let store = TokenStore::open(&tokens_dir)?;
    let companions = Companions {
        tokenizer: tok_path.clone(),
        vision_tokenizer: Some(vq_dir.clone()),
        extensions: emu_model::Extensions {
            plan: store.index.plan,
            reasoning: store.index.reasoning,
            place_first: cfg.sources.iter().any(|s| matches!(s, Source::World(w) if w.place_first)),
            cfg_scale: Some(cfg.eval.generation.cfg_scale),
        },
    };
    let start = Instant::now();
    let steps = cfg.lm_train.steps as u64;
    let b = bar(steps, "lm", show && dist.is_main());
    let mut lm_cfg = cfg.lm_train.clone();
    lm_cfg.eval_every = cfg.eval_every;
    if lm_cfg.eval_every > 0 && lm_cfg.checkpoint_every % lm_cfg.eval_every != 0 {
        lm_cfg.checkpoint_every = lm_cfg.eval_every;
    }
    let mut eval_opts = BenchOptions {
        prompts_per_category: 3,
        samples_per_prompt: 1,
        show_progress: false,
        ..cfg.eval.clone()
    };
    eval_opts.batch = eval_opts.batch.max(18);
    let mut metrics = crate::metrics::Metrics::open(run, dist.is_main())?;
    train_lm(run, &model_cfg, init, &store, &companions, &lm_cfg, dist, &mut |p| {
        match p {
            Progress::Step { step, loss, tokens_per_s, .. } => {
                show_step(&b, step, loss, tokens_per_s)
            }
            Progress::Eval { step, .. } => {
                // The loop checkpoints before it evaluates, so the folder holds this very model.
                let m = Emu3::load(&run.join("model"), None, Device::Cpu, Kind::Float)?;
                let out = run.join("samples").join(format!("step-{step:06}"));
                let r = bench::generation::run(&m, &eval_opts, &out, &mut |_| {})?;
                metrics.log(
                    serde_json::json!({"phase": "eval", "step": step, "geneval": r.metrics}),
                )?;
                b.println(format!(
                    "step {step}: quick geneval {:.3}",
                    r.metrics.get("overall").copied().unwrap_or(0.0)
                ));
            }
        }
        Ok(())
    })?;
    b.finish_and_clear();
    t.lm_s = start.elapsed().as_secs_f64();

    // Emu3-Chat beside Emu3-Gen: the chat phase starts from the model just trained and keeps its
    // own folder (checkpoints, metrics), so `model/` stays the generator.
    let chat_run = run.join("chat");
    if let Some(phase) = &cfg.chat {
        let start = Instant::now();
        let chat_cfg = phase.train_config(&cfg.lm_train);
        let b = bar(chat_cfg.steps as u64, "chat", show && dist.is_main());
        let init = run.join("model");
        train_lm(
            &chat_run,
            &model_cfg,
            Some(&init),
            &store,
            &companions,
            &chat_cfg,
            dist,
            &mut |p| {
                if let Progress::Step { step, loss, tokens_per_s, .. } = p {
                    show_step(&b, step, loss, tokens_per_s);
                }
                Ok(())
            },
        )?;
        b.finish_and_clear();
        t.chat_s = start.elapsed().as_secs_f64();
    }
    if !dist.is_main() {
        return Ok(None);
    }

    let start = Instant::now();
    let report = if cfg.eval_suite == "none" {
        None
    } else {
        let model = Emu3::load(&run.join("model"), None, Device::Cpu, Kind::Float)?;
        let chat = match cfg.chat {
            Some(_) => Some(Emu3::load(&chat_run.join("model"), None, Device::Cpu, Kind::Float)?),
            None => None,
        };
        let models = bench::Models::new(&model, chat.as_ref());
        let opts = BenchOptions { show_progress: show, ..cfg.eval.clone() };
        Some(bench::run_suite(models, &cfg.eval_suite, &opts, &bench::ALL, &run.join("eval"))?)
    };
    t.eval_s = start.elapsed().as_secs_f64();
    crate::summary::write(run, cfg, &t, report.as_ref())?;
    Ok(report)
}

/// What the tokens of this run are made from: the config's data, the version of the world's
/// generator when a source is the world, and the two tokenizers (by digest, "absent" for one not
/// made yet).
fn tokens_made_from(
    cfg: &PipelineConfig,
    opts: &TokenizeOptions,
    tok_path: &Path,
    vq_dir: &Path,
) -> Result<serde_json::Value> {
    let digest = |p: &Path| -> Result<String> {
        if p.exists() { provenance::digest(p) } else { Ok("absent".into()) }
    };
    let world = cfg.sources.iter().any(|s| matches!(s, Source::World(_)));
    let mut made = serde_json::json!({
        "sources": cfg.sources,
        "world_version": world.then_some(emu_eval::world::VERSION),
        "cfg_dropout": opts.cfg_dropout,
        "seed": opts.seed,
        "qa_turns": opts.qa_turns,
        "turn_layout": opts.turn_layout,
        "text_tokenizer": digest(tok_path)?,
        "vision_tokenizer": digest(&vq_dir.join("model.safetensors"))?,
    });
    // Named only when set, so that token folders made before the option stay valid.
    if opts.describe_last {
        made["describe_last"] = true.into();
    }
    Ok(made)
}

/// The data fields of a run folder's previous pipeline.json, which made tokens recorded before
/// `made_from.json` existed (None if there is none or it cannot be read).
fn legacy_made_from(path: &Path) -> Option<serde_json::Value> {
    let old: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    let fields = [
        ("sources", old.get("sources")),
        ("cfg_dropout", old.get("cfg_dropout")),
        ("seed", old.get("lm_train").and_then(|l| l.get("seed"))),
        ("qa_turns", old.get("qa_turns")),
    ];
    let map: serde_json::Map<String, serde_json::Value> =
        fields.into_iter().filter_map(|(k, v)| Some((k.to_string(), v?.clone()))).collect();
    Some(serde_json::Value::Object(map))
}

/// The LM config of this run: the initial model's own when fine-tuning, else [`model_config`].
fn lm_config(
    cfg: &PipelineConfig,
    init: Option<&Path>,
    text: &TextTokenizer,
    size: u32,
    f: i64,
) -> Result<Emu3Config> {
    match init {
        Some(dir) => Emu3Config::from_file(&dir.join("config.json")),
        None => model_config(cfg, text, size, f),
    }
}

/// The transformer's config: the preset's shape with our tokenizer's vocabulary and token ids.
pub fn model_config(
    cfg: &PipelineConfig,
    text: &TextTokenizer,
    size: u32,
    spatial_factor: i64,
) -> Result<Emu3Config> {
    let id = |n: &str| {
        text.token_to_id(n).map(i64::from).with_context(|| format!("the tokenizer has no `{n}`"))
    };
    let c = Emu3Config {
        vocab_size: text.vocab_size() as i64,
        pad_token_id: id(names::PAD)?,
        bos_token_id: id(names::BOS)?,
        eos_token_id: id(names::EOS)?,
        eol_token_id: id(names::EOL)?,
        eof_token_id: id(names::EOF)?,
        img_token_id: id(names::IMG)?,
        boi_token_id: id(names::BOI)?,
        eoi_token_id: id(names::EOI)?,
        image_area: (size as i64) * (size as i64),
        ..cfg.model.clone()
    };
    let grid = size as i64 / spatial_factor;
    anyhow::ensure!(
        grid > 0,
        "images of {size} pixels are smaller than the tokenizer's {spatial_factor}× downsampling"
    );
    c.validate()?;
    Ok(c)
}

/// The run folder for a name under `runs_root`.
pub fn run_dir(runs_root: &Path, name: &str) -> PathBuf {
    runs_root.join(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn token_records_carry_the_world_version_so_an_older_world_is_not_reused() {
        let dir = tempfile::tempdir().unwrap();
        let opts = TokenizeOptions::default();
        let made = |cfg: &PipelineConfig| {
            tokens_made_from(cfg, &opts, &dir.path().join("tokenizer.json"), dir.path()).unwrap()
        };
        let cfg = PipelineConfig::preset("smoke").unwrap();
        assert_eq!(made(&cfg)["world_version"], json!(world::VERSION));
        let folder = PipelineConfig {
            sources: vec![Source::ImageFolder {
                dir: "images".into(),
                captions: "captions.jsonl".into(),
                size: 32,
            }],
            ..cfg.clone()
        };
        assert!(made(&folder)["world_version"].is_null(), "a folder source owes nothing to it");

        let mut older = made(&cfg);
        older["world_version"] = json!(world::VERSION - 1);
        provenance::record(dir.path(), &older).unwrap();
        let err = format!("{:#}", provenance::check(dir.path(), &made(&cfg), None).unwrap_err());
        let was = format!("`world_version` was {}", world::VERSION - 1);
        assert!(err.contains(&was) && err.contains("delete"), "{err}");
    }
}
