//! The whole pipeline's configuration, as nested serde configs with named presets: `smoke` (CI,
//! about a minute), `default` (the README's main job, minutes on a laptop CPU) and `large`.

use crate::data::records::WorldData;
use crate::data::shards::Task;
use crate::lm::{LmTrainConfig, Stage};
use crate::optim::AdamWConfig;
use crate::vq_train::VqTrainConfig;
use anyhow::{Result, bail};
use emu_eval::bench::BenchOptions;
use emu_model::Emu3Config;
use emu_model::generate::GenerateConfig;
use emu_tokenizer::sequence::TurnLayout;
use emu_tokenizer::vq::VqConfig;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Where the training records come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Source {
    /// The built-in synthetic world.
    World(WorldData),
    /// An image folder with a captions JSONL (`{"file": ..., "caption": ...}` per line).
    ImageFolder { dir: PathBuf, captions: PathBuf, size: u32 },
    /// A folder of videos: one sub-folder of frames each, with a `caption.txt`.
    VideoFolder { dir: PathBuf, size: u32, frames: usize, fps: i64 },
}

/// A second language-model phase that starts from the first phase's final weights and writes its
/// own model, as Emu3-Chat is fine-tuned apart from Emu3-Gen. Everything it does not name (context,
/// schedule shape, device; the batch when it names none) follows the first phase's `lm_train`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChatPhase {
    pub stage: Stage,
    pub steps: i64,
    pub warmup: i64,
    pub lr: f64,
    /// The tasks it trains on (empty: every task the stage weights).
    pub tasks: Vec<Task>,
    /// Rows per optimizer step (None: the first phase's `batch_size`).
    pub batch_size: Option<usize>,
    /// Rows per forward pass (None: the first phase's `micro_batch`).
    pub micro_batch: Option<usize>,
}

impl Default for ChatPhase {
    /// Understanding samples with the full loss (codes at `vision_weight`, text at 1).
    fn default() -> Self {
        ChatPhase {
            stage: Stage::Pretrain,
            steps: 700,
            warmup: 70,
            lr: 2e-3,
            tasks: vec![Task::Understanding],
            batch_size: None,
            micro_batch: None,
        }
    }
}

impl ChatPhase {
    /// The phase's training config: `base` with this phase's stage, length and learning rate.
    pub fn train_config(&self, base: &LmTrainConfig) -> LmTrainConfig {
        LmTrainConfig {
            stage: self.stage,
            steps: self.steps,
            warmup: self.warmup,
            optim: AdamWConfig { lr: self.lr, ..base.optim.clone() },
            checkpoint_every: base.checkpoint_every.min(self.steps),
            eval_every: 0,
            tasks: self.tasks.clone(),
            batch_size: self.batch_size.unwrap_or(base.batch_size),
            micro_batch: self.micro_batch.unwrap_or(base.micro_batch),
            ..base.clone()
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineConfig {
    pub preset: String,
    pub sources: Vec<Source>,
    pub vq: VqConfig,
    pub vq_train: VqTrainConfig,
    /// Learned text vocabulary (bytes included); specials and visual tokens come on top.
    pub bpe_vocab: usize,
    /// Share of captions replaced by the empty prompt (CFG's unconditional stream).
    pub cfg_dropout: f64,
    /// Most question/answer turns per understanding sample (the image appears once per sample).
    pub qa_turns: usize,
    /// How a sample's later turns are laid out: `continued` (Emu3-Chat's conversation) or
    /// `alone` (each trained as if asked right after the image, as evaluation asks it).
    pub turn_layout: TurnLayout,
    /// Ask for an image's description as the last turn of its chat sample rather than in a
    /// sample of its own (one copy of the image fewer per image).
    #[serde(default)]
    pub describe_last: bool,
    /// The transformer's shape; its vocabulary and token ids are filled in from the tokenizer.
    pub model: Emu3Config,
    pub lm_train: LmTrainConfig,
    /// A chat model trained on from `model/` into `chat/`: understanding is then judged on it
    /// and generation on `model/` (None: one model does both).
    pub chat: Option<ChatPhase>,
    /// Evaluation after training: `quick`, `full` or `none`.
    pub eval_suite: String,
    pub eval: BenchOptions,
    /// Quick GenEval during training, every this many steps (0: never).
    pub eval_every: i64,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self::preset("default").expect("the default preset exists")
    }
}

impl PipelineConfig {
    pub fn preset(name: &str) -> Result<Self> {
        // 32-pixel scenes through a 4× tokenizer: the 8×8 code grid of the 64-pixel 8× design,
        // with a decoder that learns colours, places and counts in two CPU minutes (the 64-pixel
        // one needs 7.5 minutes for less). Shapes are what it learns last: 300 steps as a
        // continuous autoencoder, then a k-means codebook, with the temporal layers held at
        // their identity init. On the world's 2×2 grid, with small objects at radius 0.17, its
        // reconstructions keep 99.8% of shapes (`recon`'s geneval_ceiling 1.00; 95% and 0.89
        // with small objects at 0.14). The tokenizer trains on images only: video steps
        // train the temporal layers that images pass through too, and on the earlier 3×3 world
        // they cost the ceiling more than half, while the video scores stayed at 0 either way.
        // A 2× tokenizer costs the LM 3.5× the tokens per image; an 8× one keeps a quarter of
        // the shapes.
        //
        // The transformer, not the tokenizer, limits the scores, and it is short of steps: 256
        // codes instead of 1024 (ceiling 0.96) and a 128-wide model at 2.5× the throughput of a
        // 256-wide one, for 1400 steps instead of 600 in the same time, lifted GenEval from 0.07
        // to 0.12 and VQA from 0.52 to 0.59 (shape answers from chance to 0.32). A higher
        // learning rate, twice the images, and 128 codes did no better.
        //
        // Steps matter more than depth. Generators of 6, 4, 3 and 2 layers trained for the same
        // time (900, 1300, 1690 and 2400 steps) scored GenEval 0.23, 0.34, 0.37 and 0.44 (six
        // samples a prompt), at held-out code losses of 0.84 to 0.78. One layer for 4400 steps
        // (24% longer) scored 0.51, and for 3600 steps, the same time, 0.46 against 0.47 on 24000
        // images; its chat model answered worse than two layers' (VQA 0.68 against 0.73, answer
        // loss 0.46 against 0.28), and copying a video's first latent frame into its second is,
        // in the usual induction circuit, the work of two attention layers. Two layers
        // 192 wide for 1300 steps scored 0.39, and 96 wide runs only 1.1× as fast (0.37 against
        // 0.47 on 24000 images). Half the batch for twice the steps changed nothing (0.32 against
        // 0.34, code loss 0.79 against 0.80).
        //
        // Nor do steps bind colours to shapes: four times the steps (9600, on 48000 images)
        // scored GenEval 0.58 with colour attribution still at 0.24. The world's captions in
        // reading order raised it at this size: 0.56 against 0.47, colour attribution 0.45
        // against 0.20 (README, "Captions in reading order"). So did scenes drawn from prompts
        // that hold only what their prompt names (`prompt_distractors` 0): 0.64 against 0.56 with
        // up to two distractors, position 0.64 against 0.33 (three sampling seeds each). Half
        // the random scenes captioned by an inventory of all their objects
        // (`complete_caption_share` 0.5) lifted GenEval on each of three training seeds, by 0.02,
        // 0.01 and 0.02, and counting on two of them; the seeds alone span 0.51 to 0.64.
        //
        // Two models, as Emu3 releases Emu3-Gen and Emu3-Chat. Trained on every task at once, the
        // model ignored its captions (GenEval 0.13 where random scenes score 0.12); trained on
        // generation alone it follows them (0.24 after 700 steps). Understanding then trains on
        // from that generator with every task: 700 + 700 steps gave VQA 0.61, as 1400 steps of
        // the mixture from scratch did, and 0.54 from scratch in 700.
        //
        // The generator needs both steps and images: on 4000 images it memorised them past 1400
        // steps (GenEval 0.29 at best), while 12000 images for 1400 steps gave 0.33, 0.36 with
        // best-fit packing, and its held-out code loss still fell with the training loss. Two
        // layers for 2400 steps see each of 12000 images 9 times; 24000 images lowered the
        // held-out code loss from 0.78 to 0.76 (GenEval 0.47 against 0.44) for 12 s more
        // tokenizing (30 s against 17.5 s from fresh clones).
        //
        // The chat phase trains on the understanding samples alone, codes and text both: from one
        // generator, 800 steps of them gave VQA 0.63 and caption F1 0.66, against 0.59 and 0.49
        // for 800 steps of every task. It is shorter of steps than the generator: 600 / 800 /
        // 1000 steps gave VQA 0.57 / 0.63 / 0.67 (four layers), while a generator of 1200 steps
        // scored 0.30 against 0.34 at 1400 (GenEval with 6 samples a prompt, where reruns differ
        // by 0.03). The two phases split the time about evenly.
        //
        // Every question a scene supports is asked in one sample per image: understanding then
        // costs one copy of the image per image, not one per question. Each question on its own
        // (one image per question) scored VQA 0.65 against 0.74 in the same steps, and later
        // turns laid out alone (`TurnLayout::Alone`, so no answer gives another away) 0.73.
        // The description then joins its image's sample as the last turn (`describe_last`),
        // laid out alone as well, since evaluation asks it first: from two planning generators
        // that scored VQA 0.768 and 0.773 (answer loss 0.221 and 0.196) against 0.675 and 0.779
        // (0.387 and 0.209) with a sample of its own; joined but continued, it was never asked
        // first and came back as another question (caption F1 0.36).
        //
        // Relation questions stayed near chance (0.55 to 0.72) however the turns were laid out, and
        // counts of one shape or colour were right about 0.6 of the time, while the same model
        // placed a named object in its cell 89% of the time. So the answers that search the image
        // place what they search for first (`place_first`): "red circle top left, blue star bottom
        // right: no", "red circle top left, blue circle bottom right: two", "star top right: red".
        // Each image is asked seven questions instead of four (further subjects and relations; one
        // image's sample had filled 58% of its row). From one generator, relations alone placed
        // first scored relation questions 0.99 on three chat seeds, against 0.69 for four plain
        // questions; what was left was whether colour questions click (0.99 against 0.56 and 0.58),
        // which 2500 chat steps instead of 1750 made likelier (0.81 and 0.98 on the two seeds that
        // missed). With counts placed first too, 2500 steps scored VQA 0.955, 0.969 and 0.966
        // (counts 0.87 to 0.92) on three seeds. Colour questions placed their object first as well,
        // at first with its colour ("red star top right: red"), and still missed on some seeds
        // (0.65 in a fresh clone's run): the answer named the colour before it had found the
        // object, often another object's. Placed by shape and cell alone ("star top right: red"),
        // they scored 0.99 to 1.00 on four seeds from that clone's generator, the one that had
        // missed among them (VQA 0.969, 0.961, 0.964 and 0.944). A colour answer after the whole
        // layout (every object of the scene) read back the wrong object (0.58). Ten plain questions
        // an image scored relations 0.55, and places asked as questions of their own ("where is the
        // red circle?") did not help. The generator gives up 400 steps for the chat phase's 750:
        // GenEval 0.852 at 1750 steps against 0.865 at 2150 (one training seed each).
        //
        // The two phases were measured at 2400 and 2000 steps. A fresh clone on a slow day took
        // 19m55s with those (the unchanged VQ stage 144 s against 116 s the day before), so the
        // default gives up 150 steps of each (about 40 s at that run's step rates) to stay
        // inside 20 minutes. With them, a fresh clone took 19m40s on that day and 18m24s on a
        // later day (with complete captions for half the random scenes).
        //
        // Each phase gives up another 100 steps (2150 and 1750), since the same compute took
        // 19m59s from a fresh clone on a slow day (build 5m49s, VQ 146 s).
        //
        // With 1750 and 2500 steps, a fresh clone took 19m23s in a slow hour (build 4m09s, VQ
        // 166 s) and 16m46s an hour later (build 3m23s, VQ 141 s). A generator of 1500 steps would
        // save about 35 s of that, but scored GenEval 0.860 against 0.879 on the same data, and
        // its chat phases VQA 0.905 and 0.952 (colour 0.89 and 1.00) on two seeds, against 0.969
        // and 0.961 from the 1750-step generator of an earlier fresh clone (GenEval 0.875).
        //
        // Both phases take 16 rows a step. At equal tokens, the generator at 8 rows (twice the
        // steps) scored GenEval 0.67, 0.64 and 0.55 against 0.66, 0.56 and 0.54 on three training
        // seeds, but 0.64 against 0.70 on the default's own data (means over three sampling
        // seeds): no gain beyond the seeds' spread. The chat phase at 8 rows (3700 steps) scored
        // VQA 0.68 and at 32 (925 steps) 0.64, against 0.73 at 16.
        let world = WorldData {
            images: 24_000,
            size: 32,
            qa_per_image: 7,
            prompt_distractors: 0,
            complete_caption_share: 0.5,
            plan: true,
            place_first: true,
            ..WorldData::default()
        };
        let vq = VqConfig {
            codebook_size: 256,
            embed_dim: 16,
            z_channels: 16,
            ch: 32,
            ch_mult: vec![1, 2, 2],
            num_res_blocks: 1,
            attn_resolutions: vec![],
            ..VqConfig::emu3()
        };
        let model = Emu3Config {
            hidden_size: 128,
            intermediate_size: 344,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            max_position_embeddings: 512,
            rope_theta: 10_000.0,
            attention_dropout: 0.0,
            ..Emu3Config::tiny()
        };
        let lm_train = LmTrainConfig {
            stage: Stage::SftGen,
            steps: 1750,
            batch_size: 16,
            micro_batch: 16,
            max_len: 256,
            optim: AdamWConfig { lr: 2e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1 },
            warmup: 180,
            min_lr: 1e-4,
            grad_clip: 1.0,
            vision_weight: 0.5,
            tasks: Vec::new(),
            doc_mask: true,
            seed: 0,
            log_every: 10,
            eval_every: 0,
            checkpoint_every: 600,
            zero1: false,
            device: "cpu".into(),
            bf16: false,
            peak_tflops: 0.0,
        };
        let base = PipelineConfig {
            preset: name.into(),
            sources: vec![Source::World(world.clone())],
            vq,
            vq_train: VqTrainConfig {
                steps: 600,
                batch_size: 16,
                lr: 2e-3,
                hard_pixel_power: 1.0,
                autoencoder_warmup: 300,
                video_every: 0,
                restart_every: 25,
                ..Default::default()
            },
            bpe_vocab: 512,
            cfg_dropout: 0.1,
            qa_turns: 7,
            turn_layout: TurnLayout::Alone,
            describe_last: true,
            model,
            lm_train,
            chat: Some(ChatPhase { steps: 2500, warmup: 100, lr: 2e-3, ..ChatPhase::default() }),
            eval_suite: "full".into(),
            eval: BenchOptions {
                generation: GenerateConfig { cfg_scale: 1.5, ..BenchOptions::full().generation },
                ..BenchOptions::full()
            },
            eval_every: 600,
        };
        Ok(match name {
            "default" => base,
            "smoke" => PipelineConfig {
                sources: vec![Source::World(WorldData { images: 160, videos: 16, ..world })],
                vq: VqConfig { codebook_size: 64, ..base.vq.clone() },
                vq_train: VqTrainConfig {
                    steps: 12,
                    batch_size: 8,
                    autoencoder_warmup: 4,
                    video_every: 4,
                    restart_every: 6,
                    ..base.vq_train.clone()
                },
                bpe_vocab: 300,
                model: Emu3Config {
                    hidden_size: 64,
                    intermediate_size: 160,
                    num_hidden_layers: 2,
                    num_attention_heads: 4,
                    num_key_value_heads: 2,
                    ..base.model.clone()
                },
                lm_train: LmTrainConfig {
                    steps: 12,
                    batch_size: 8,
                    micro_batch: 8,
                    warmup: 2,
                    checkpoint_every: 6,
                    log_every: 2,
                    ..base.lm_train.clone()
                },
                chat: Some(ChatPhase { steps: 8, warmup: 2, ..ChatPhase::default() }),
                eval_suite: "quick".into(),
                eval: BenchOptions {
                    prompts_per_category: 2,
                    vqa_images: 3,
                    video_prompts: 1,
                    recon_images: 8,
                    ..BenchOptions::quick()
                },
                eval_every: 6,
                ..base
            },
            "large" => PipelineConfig {
                sources: vec![Source::World(WorldData { images: 48_000, videos: 2000, ..world })],
                vq: VqConfig { codebook_size: 512, ..base.vq.clone() },
                // Long enough, perhaps, for the temporal layers to learn motion without
                // undoing images (not measured: no accelerator was at hand).
                vq_train: VqTrainConfig { steps: 1500, video_every: 6, ..base.vq_train.clone() },
                model: Emu3Config {
                    hidden_size: 384,
                    intermediate_size: 1024,
                    num_hidden_layers: 6,
                    num_attention_heads: 12,
                    num_key_value_heads: 4,
                    ..base.model.clone()
                },
                lm_train: LmTrainConfig {
                    steps: 3000,
                    batch_size: 32,
                    micro_batch: 16,
                    checkpoint_every: 500,
                    ..base.lm_train.clone()
                },
                // Split as the default is, in proportion (not measured at this size).
                chat: Some(ChatPhase { steps: 4000, warmup: 200, ..ChatPhase::default() }),
                eval_every: 1000,
                ..base
            },
            other => bail!("unknown preset `{other}`; expected smoke, default or large"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_phase_keeps_the_first_phase_setup_and_changes_only_what_it_names() {
        for name in ["smoke", "default", "large"] {
            let cfg = PipelineConfig::preset(name).unwrap();
            let phase = cfg.chat.clone().expect("every preset trains a chat model");
            let base = LmTrainConfig { device: "cuda:1".into(), eval_every: 50, ..cfg.lm_train };
            let chat = phase.train_config(&base);
            assert_eq!(
                (chat.stage, chat.steps, chat.warmup),
                (phase.stage, phase.steps, phase.warmup)
            );
            assert_eq!(chat.optim.lr, phase.lr);
            assert_eq!((&chat.tasks, base.tasks.as_slice()), (&phase.tasks, &[][..]));
            assert_eq!(chat.optim.beta2, base.optim.beta2);
            assert_eq!((chat.max_len, chat.device.as_str()), (base.max_len, "cuda:1"));
            // No preset names a chat batch, so each takes its first phase's.
            assert_eq!((chat.batch_size, chat.micro_batch), (base.batch_size, base.micro_batch));
            assert_eq!(chat.eval_every, 0, "quick GenEval judges the generator only");
            assert!(chat.checkpoint_every <= chat.steps);
        }
    }

    #[test]
    fn a_chat_phase_without_a_batch_takes_the_first_phase_batch() {
        let base = LmTrainConfig { batch_size: 8, micro_batch: 4, ..LmTrainConfig::default() };
        let plain = ChatPhase::default().train_config(&base);
        assert_eq!((plain.batch_size, plain.micro_batch), (8, 4));
        let own = ChatPhase { batch_size: Some(16), micro_batch: Some(16), ..ChatPhase::default() };
        let chat = own.train_config(&base);
        assert_eq!((chat.batch_size, chat.micro_batch), (16, 16));
    }

    #[test]
    fn configs_without_a_chat_phase_round_trip() {
        let cfg = PipelineConfig { chat: None, ..PipelineConfig::preset("smoke").unwrap() };
        let back: PipelineConfig =
            serde_json::from_str(&serde_json::to_string(&cfg).unwrap()).unwrap();
        assert_eq!(back, cfg);
    }
}
