//! Language-model training: one explicit loop, top to bottom.
//!
//! Each step takes a global batch of packed sequences, gives this rank its rows, accumulates
//! gradients over micro-batches of the weighted next-token loss (normalised by the global batch's
//! total weight, so that summing gradients over ranks gives the single-process gradient), then
//! synchronises (DDP or ZeRO-1), clips, and steps AdamW under a warmup + cosine schedule.
//! Dropout is seeded by the step, the data order by (seed, epoch): a resumed run continues
//! bit-exactly on CPU.
//!
//! Shapes: B sequences per micro-batch, L = max_len tokens.

use crate::checkpoint::{self, Companions, TrainState};
use crate::data::pack::{Cursor, Loader, rank_rows, to_batch};
use crate::data::shards::{Task, TokenStore};
use crate::ddp::Updater;
use crate::dist::Dist;
use crate::metrics::Metrics;
use crate::optim::{AdamWConfig, lr_at};
use anyhow::{Context, Result, ensure};
use emu_model::{Emu3Config, Emu3ForCausalLM, Packing};
use emu_tokenizer::checkpoint::Checkpoint;
use emu_tokenizer::sequence::{TurnLayout, Weighting};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// Which of Emu3's training stages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// Every task, vision tokens weighted `vision_weight` (0.5 in the paper).
    Pretrain,
    /// Generation SFT: text-to-image and text-to-video, loss on visual codes only.
    SftGen,
    /// Chat SFT: understanding, loss on the answer only.
    SftChat,
}

impl Stage {
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "pretrain" => Stage::Pretrain,
            "sft-gen" => Stage::SftGen,
            "sft-chat" => Stage::SftChat,
            o => anyhow::bail!("unknown stage `{o}`; expected pretrain, sft-gen or sft-chat"),
        })
    }

    pub fn weighting(self, task: Task, vision_weight: f32) -> Option<Weighting> {
        match (self, task) {
            (Stage::Pretrain, _) => Some(Weighting::Full { vision: vision_weight }),
            (Stage::SftGen, Task::TextToImage | Task::TextToVideo) => Some(Weighting::VisionOnly),
            (Stage::SftChat, Task::Understanding) => Some(Weighting::TextOnly),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LmTrainConfig {
    pub stage: Stage,
    pub steps: i64,
    /// Sequences per optimizer step, over all ranks.
    pub batch_size: usize,
    /// Sequences per forward pass on one rank (gradient accumulation covers the rest).
    pub micro_batch: usize,
    pub max_len: usize,
    pub optim: AdamWConfig,
    pub warmup: i64,
    pub min_lr: f64,
    pub grad_clip: f64,
    pub vision_weight: f32,
    /// Train only on samples of these tasks (empty: every task the stage weights).
    pub tasks: Vec<Task>,
    /// Packed samples attend only within themselves and count positions from 0, as each runs
    /// alone at inference (false: a packed row is one causal stream).
    pub doc_mask: bool,
    pub seed: u64,
    pub log_every: i64,
    pub eval_every: i64,
    pub checkpoint_every: i64,
    /// Shard the optimizer state over ranks.
    pub zero1: bool,
    /// "cpu" or "cuda[:N]".
    pub device: String,
    /// bf16 autocast (matrix products in bf16, weights and optimizer in f32), on CUDA or CPU.
    pub bf16: bool,
    /// Peak dense TFLOP/s of one device, to report model FLOPs utilisation (0: do not report;
    /// an H100/H200 does 989 in bf16).
    pub peak_tflops: f64,
}

impl Default for LmTrainConfig {
    fn default() -> Self {
        LmTrainConfig {
            stage: Stage::Pretrain,
            steps: 100,
            batch_size: 16,
            micro_batch: 16,
            max_len: 256,
            optim: AdamWConfig { lr: 1e-3, ..Default::default() },
            warmup: 20,
            min_lr: 1e-4,
            grad_clip: 1.0,
            vision_weight: 0.5,
            tasks: Vec::new(),
            doc_mask: true,
            seed: 0,
            log_every: 10,
            eval_every: 0,
            checkpoint_every: 0,
            zero1: false,
            device: "cpu".into(),
            bf16: false,
            peak_tflops: 0.0,
        }
    }
}

impl LmTrainConfig {
    /// How this run weights samples of `task` (None: it skips them).
    pub fn weighting(&self, task: Task) -> Option<Weighting> {
        if !self.tasks.is_empty() && !self.tasks.contains(&task) {
            return None;
        }
        self.stage.weighting(task, self.vision_weight)
    }
}

/// Training FLOPs per token: 6 per parameter (forward and backward) plus attention's score and
/// value products, 12·layers·hidden·context (PaLM's accounting).
pub fn flops_per_token(cfg: &Emu3Config, context: usize) -> f64 {
    6.0 * cfg.num_parameters() as f64
        + 12.0 * (cfg.num_hidden_layers * cfg.hidden_size) as f64 * context as f64
}

/// No weight decay on norms and embeddings.
pub fn decays(name: &str) -> bool {
    !(name.contains("norm") || name.contains("embed_tokens"))
}

/// What the loop reports to its caller.
pub enum Progress<'a> {
    Step {
        step: i64,
        loss: f64,
        lr: f64,
        grad_norm: f64,
        tokens_per_s: f64,
    },
    /// Time for a quick evaluation (main rank only).
    Eval {
        step: i64,
        lm: &'a Emu3ForCausalLM,
    },
}

pub fn parse_device(s: &str) -> Result<Device> {
    Ok(match s {
        "cpu" => Device::Cpu,
        "cuda" => Device::Cuda(0),
        s => Device::Cuda(
            s.strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .with_context(|| format!("device `{s}` is not cpu, cuda or cuda:N"))?,
        ),
    })
}

/// Trains (or resumes) the language model of run folder `run`.
pub fn train_lm(
    run: &Path,
    model_cfg: &Emu3Config,
    init_from: Option<&Path>,
    tokens: &TokenStore,
    companions: &Companions,
    cfg: &LmTrainConfig,
    dist: &Dist,
    on_progress: &mut dyn FnMut(Progress<'_>) -> Result<()>,
) -> Result<Emu3ForCausalLM> {
    ensure!(
        cfg.batch_size.is_multiple_of(dist.world()),
        "batch_size {} must be divisible by the {} ranks",
        cfg.batch_size,
        dist.world()
    );
    let device = parse_device(&cfg.device)?;

    // 1. The model: resumed, initialised from another model, or fresh (seeded, so every rank
    //    agrees before the broadcast anyway).
    let resume = checkpoint::latest(run);
    let (lm, state) = match &resume {
        Some(dir) => {
            let state = checkpoint::read_state(dir)?;
            let saved = Emu3Config::from_file(&dir.join("config.json"))?;
            checkpoint::check_same_architecture(&saved, model_cfg, dir)?;
            (Emu3ForCausalLM::load(dir, device, Kind::Float)?, state)
        }
        None => {
            tch::manual_seed(cfg.seed as i64);
            let lm = match init_from {
                Some(d) => Emu3ForCausalLM::load(d, device, Kind::Float)?,
                None => Emu3ForCausalLM::new(model_cfg, device, Kind::Float)?,
            };
            (
                lm,
                TrainState {
                    step: 0,
                    seed: cfg.seed,
                    cursor: Cursor::default(),
                    world: dist.world(),
                },
            )
        }
    };
    let mut params: Vec<(String, Tensor)> = lm.vs.variables().into_iter().collect();
    params.sort_by(|a, b| a.0.cmp(&b.0));
    for (_, p) in &params {
        dist.broadcast(p, 0)?;
    }

    // 2. Optimizer (state restored on resume) and data (from the saved cursor).
    let mut updater = Updater::new(params, decays, cfg.optim.clone(), cfg.zero1, dist);
    if let Some(dir) = &resume {
        let opt = Checkpoint::open(&dir.join("optimizer.safetensors"))?;
        updater.load_state(&|n| opt.tensor(n, device), state.step)?;
    }
    let pad = model_cfg.pad_token_id;
    // Turns laid out alone need their mask, which works within documents.
    let alone = tokens.index.turn_layout == TurnLayout::Alone;
    ensure!(
        cfg.doc_mask || !alone,
        "the token store lays out chat turns to train alone, which needs `doc_mask`: set \
         `doc_mask` to true in the training config, or tokenize with turns continued"
    );
    let packing = cfg.doc_mask.then_some(Packing {
        doc_start: model_cfg.bos_token_id,
        turns: alone.then_some((model_cfg.eoi_token_id, model_cfg.eos_token_id)),
    });
    let mut loader = Loader::new(
        &tokens.samples,
        |t| cfg.weighting(t),
        cfg.max_len,
        pad,
        state.seed,
        state.cursor,
    );
    ensure!(
        loader.num_samples() > 0,
        "no samples for stage {:?} in the token store{}",
        cfg.stage,
        if cfg.tasks.is_empty() {
            String::new()
        } else {
            format!(" among tasks {:?} (`tasks` in the training config)", cfg.tasks)
        }
    );
    let mut metrics = Metrics::open(run, dist.is_main())?;
    metrics.log(serde_json::json!({"phase": "pack", "samples": loader.num_samples(),
        "sequences": loader.epoch_len(), "fill": loader.fill, "too_long": loader.too_long}))?;
    let rows = rank_rows(cfg.batch_size, dist.rank(), dist.world());
    let train_config = serde_json::to_value(cfg)?;

    // 3. The loop.
    let started = Instant::now();
    let mut tokens_seen = 0usize;
    for step in state.step..cfg.steps {
        let lr = lr_at(step, cfg.warmup, cfg.steps, cfg.optim.lr, cfg.min_lr);
        tch::manual_seed(state.seed.wrapping_add((step as u64) * 1000 + dist.rank() as u64) as i64);
        let global = loader.next_batch(cfg.batch_size);
        let total_weight: f64 =
            global.iter().map(|s| s.weights[1..].iter().map(|&w| w as f64).sum::<f64>()).sum();
        let mine: Vec<_> = global[rows.clone()].iter().collect();
        let mut loss_sum = Tensor::zeros([1], (Kind::Float, Device::Cpu));
        for micro in mine.chunks(cfg.micro_batch.max(1)) {
            let (ids, labels, weights) = to_batch(micro);
            let (ids, labels, weights) =
                (ids.to_device(device), labels.to_device(device), weights.to_device(device));
            let out = crate::dist::c10d::bf16_autocast(device, cfg.bf16, || {
                lm.forward_train(&ids, &labels, Some(&weights), packing, true, false)
            });
            let share = out.loss * (out.weight_sum / total_weight.max(1e-12));
            share.backward();
            loss_sum += share.detach().to_device(Device::Cpu).reshape([1]);
            tokens_seen += micro.len() * cfg.max_len;
        }
        dist.all_reduce_sum(&loss_sum)?;
        let grad_norm = updater.step(dist, lr, cfg.grad_clip)?;
        updater.zero_grad();

        let loss = loss_sum.double_value(&[0]);
        let tokens_per_s =
            (tokens_seen * dist.world()) as f64 / started.elapsed().as_secs_f64().max(1e-9);
        on_progress(Progress::Step { step, loss, lr, grad_norm, tokens_per_s })?;
        if step % cfg.log_every.max(1) == 0 || step + 1 == cfg.steps {
            let mut rec = serde_json::json!({"phase": "lm", "step": step, "loss": loss, "lr": lr, "grad_norm": grad_norm,
                "tokens_per_s": tokens_per_s, "epoch": loader.cursor.epoch, "elapsed_s": started.elapsed().as_secs_f64()});
            if cfg.peak_tflops > 0.0 {
                let per_device = tokens_per_s / dist.world() as f64;
                rec["mfu"] = (per_device * flops_per_token(&lm.config, cfg.max_len)
                    / (cfg.peak_tflops * 1e12))
                    .into();
            }
            metrics.log(rec)?;
        }
        let last = step + 1 == cfg.steps;
        // Checkpoint first, so that an evaluation of this step can read the saved model.
        if (cfg.checkpoint_every > 0 && (step + 1) % cfg.checkpoint_every == 0) || last {
            let opt_state = updater.state_tensors(dist)?;
            if dist.is_main() {
                let state = TrainState {
                    step: step + 1,
                    seed: state.seed,
                    cursor: loader.cursor,
                    world: dist.world(),
                };
                checkpoint::save(run, &lm, &opt_state, &state, &train_config, companions)?;
            }
            dist.barrier()?;
        }
        if cfg.eval_every > 0 && ((step + 1) % cfg.eval_every == 0 || last) {
            if dist.is_main() {
                on_progress(Progress::Eval { step: step + 1, lm: &lm })?;
            }
            dist.barrier()?;
        }
    }
    Ok(lm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flops_per_token_follows_the_palm_accounting() {
        let c = Emu3Config::emu3_8b();
        let want = 6.0 * 8_492_011_520.0 + 12.0 * 32.0 * 4096.0 * 4096.0;
        assert_eq!(flops_per_token(&c, 4096), want);
    }

    #[test]
    fn stages_weight_their_tasks() {
        assert_eq!(Stage::SftGen.weighting(Task::Understanding, 0.5), None);
        assert_eq!(Stage::SftChat.weighting(Task::Understanding, 0.5), Some(Weighting::TextOnly));
        assert_eq!(
            Stage::Pretrain.weighting(Task::TextToVideo, 0.5),
            Some(Weighting::Full { vision: 0.5 })
        );
        assert!(Stage::parse("sft-dpo").is_err());
    }

    #[test]
    fn a_task_list_keeps_only_its_tasks_with_the_stage_weighting() {
        let cfg = LmTrainConfig { tasks: vec![Task::Understanding], ..Default::default() };
        assert_eq!(cfg.weighting(Task::Understanding), Some(Weighting::Full { vision: 0.5 }));
        assert_eq!(cfg.weighting(Task::TextToImage), None);
        assert_eq!(cfg.weighting(Task::TextToVideo), None);
        // A task the stage skips stays skipped.
        let generation = LmTrainConfig { stage: Stage::SftGen, ..cfg };
        assert_eq!(generation.weighting(Task::Understanding), None);
        let parsed: LmTrainConfig =
            serde_json::from_str(r#"{"tasks": ["text_to_image", "understanding"]}"#).unwrap();
        assert_eq!(parsed.tasks, [Task::TextToImage, Task::Understanding]);
        let bad = serde_json::from_str::<LmTrainConfig>(r#"{"tasks": ["captioning"]}"#);
        let msg = bad.unwrap_err().to_string();
        assert!(msg.contains("unknown variant") && msg.contains("understanding"), "{msg}");
    }
}
