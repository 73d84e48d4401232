//! A whole Emu3 model folder in use: language model, vision tokenizer, text tokenizer and the
//! vocabulary layout that ties them, with the user-level tasks on top (text-to-image,
//! text-to-video, video continuation, image understanding).
//!
//! A folder holds `config.json` + weights (any LM layout), a text tokenizer (`tokenizer.json`, or
//! BAAI's `emu3.tiktoken` + `emu3_vision_tokens.txt`), and the VQ either in `vision_tokenizer/`, or
//! in the same weights (transformers' Emu3 folders), or given separately.
//!
//! Shapes: B batch, h/w code grid, t latent frames, H/W pixels.

use crate::config::Emu3Config;
use crate::extensions::Extensions;
use crate::generate::{Event, GenerateConfig, Request, Structure, generate};
use crate::model::Emu3ForCausalLM;
use anyhow::{Context, Result, bail, ensure};
use emu_tokenizer::checkpoint::Checkpoint;
use emu_tokenizer::image::{to_image, to_tensor};
use emu_tokenizer::sequence::{PLAN_MARK, SequenceFormat, parse_grid};
use emu_tokenizer::text::TextTokenizer;
use emu_tokenizer::vocab::{SpecialIds, VocabLayout};
use emu_tokenizer::vq::{VqLayout, VqModel};
use image::RgbImage;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

pub struct Emu3 {
    pub lm: Emu3ForCausalLM,
    pub vq: Option<VqModel>,
    pub text: TextTokenizer,
    pub vocab: VocabLayout,
    pub dir: PathBuf,
    /// What the folder's training added to the reference's format (`extensions.json`).
    pub extensions: Extensions,
}

/// The longest plan a planning model may write before its image (four objects' layout takes
/// about 30 tokens of the world's BPE).
const MAX_PLAN_TOKENS: i64 = 64;

/// One generated image or video.
#[derive(Clone, Debug)]
pub struct Generated {
    pub prompt: String,
    pub tokens: Vec<i64>,
    /// Codes per frame (one frame for images).
    pub codes: Vec<Vec<i64>>,
    /// The plan a planning model wrote before drawing ([`Extensions::plan`]).
    pub plan: Option<String>,
    /// Decoded frames (pixels).
    pub frames: Vec<RgbImage>,
}

impl Emu3 {
    /// Loads a model folder; `vq_dir` overrides where the vision tokenizer comes from.
    pub fn load(dir: &Path, vq_dir: Option<&Path>, device: Device, kind: Kind) -> Result<Self> {
        let lm = Emu3ForCausalLM::load(dir, device, kind)
            .with_context(|| format!("loading the language model from {}", dir.display()))?;
        let vq = match vq_dir {
            Some(d) => Some(VqModel::load(d, device, kind)?),
            None if dir.join("vision_tokenizer/config.json").exists() => {
                Some(VqModel::load(&dir.join("vision_tokenizer"), device, kind)?)
            }
            None => {
                let ckpt = Checkpoint::open(dir)?;
                if VqLayout::detect(&ckpt).is_ok() {
                    Some(VqModel::load(dir, device, kind)?)
                } else {
                    None
                }
            }
        };
        let text = TextTokenizer::from_dir(dir).with_context(|| {
            format!(
                "a model folder needs its text tokenizer beside config.json ({})",
                dir.display()
            )
        })?;
        let vocab = layout_for(&lm.config, vq.as_ref().map(|v| v.config.codebook_size), |t| {
            text.token_to_id(t).map(i64::from)
        })?;
        ensure!(
            text.vocab_size() as i64 <= lm.config.vocab_size,
            "the tokenizer has {} tokens but the model's vocabulary holds {}",
            text.vocab_size(),
            lm.config.vocab_size
        );
        let extensions = Extensions::load(dir)?;
        Ok(Emu3 { lm, vq, text, vocab, dir: dir.to_path_buf(), extensions })
    }

    pub fn format(&self) -> SequenceFormat<'_, TextTokenizer> {
        SequenceFormat::new(&self.vocab, &self.text)
    }

    fn vq(&self) -> Result<&VqModel> {
        self.vq.as_ref().with_context(|| {
            format!(
                "{} has no vision tokenizer: this model can only do text\nhint: pass --vq DIR",
                self.dir.display()
            )
        })
    }

    /// Pixel size of a code grid.
    pub fn pixels(&self, h: i64, w: i64) -> Result<(i64, i64)> {
        let f = self.vq()?.config.spatial_factor();
        Ok((h * f, w * f))
    }

    fn decode(&self, codes: &[Vec<i64>], h: i64, w: i64) -> Result<Vec<RgbImage>> {
        let vq = self.vq()?;
        let t = Tensor::from_slice(&codes.concat())
            .view([1, codes.len() as i64, h, w])
            .to_device(vq.device());
        let px = if codes.len() == 1 {
            vq.decode_images(&t.squeeze_dim(1))
        } else {
            vq.decode_video(&t).squeeze_dim(0)
        };
        Ok((0..px.size()[0]).map(|i| to_image(&px.get(i).to_kind(Kind::Float))).collect())
    }

    /// Generates one grid per prompt (frames = 1 for images). `negative` is the unconditional
    /// stream's caption (Emu3 uses a negative prompt; "" is the plain unconditional model).
    /// `on_row(request, frame, row)` fires as each image row completes, for every candidate when
    /// `cfg.best_of` draws several per prompt.
    pub fn text_to_grid(
        &self,
        prompts: &[String],
        negative: &str,
        structure: Structure,
        fps: i64,
        cfg: &GenerateConfig,
        on_row: &mut dyn FnMut(usize, i64, i64),
    ) -> Result<Vec<Generated>> {
        ensure!(!prompts.is_empty(), "no prompts given");
        self.vq()?;
        let fmt = self.format();
        let (h, w, t) = (structure.h, structure.w, structure.frames);
        let build = |c: &str| {
            if t == 1 { fmt.t2i_prompt(c, h, w) } else { fmt.t2v_prompt(c, h, w, t, fps) }
        };
        let k = cfg.best_of;
        ensure!(k >= 1, "best_of is {k}; draw at least one candidate");
        let s = &cfg.sampling;
        ensure!(
            k == 1 || !s.image_is_greedy(),
            "best_of {k} would draw {k} identical candidates: image tokens are chosen greedily \
             (temperature {}, top-k-image {:?}, top-k {:?})\nhint: sample (temperature > 0, \
             top-k-image > 1) or draw once",
            s.temperature,
            s.top_k_image,
            s.top_k
        );
        let neg = build(negative)?;
        // A prompt's candidates sit together (request i·k + j), so `chunks(k)` groups them and
        // `row / k` is the prompt. A planning model writes each candidate's plan first.
        let plans = if self.extensions.plan && t == 1 {
            self.write_plans(prompts, k, cfg)?.into_iter().map(Some).collect()
        } else {
            vec![None; prompts.len() * k]
        };
        let requests = plans
            .iter()
            .enumerate()
            .map(|(i, plan)| {
                let p = &prompts[i / k];
                let prompt = match plan {
                    Some(plan) => fmt.t2i_prompt_planned(p, plan, h, w)?,
                    None => build(p)?,
                };
                Ok(Request {
                    prompt,
                    negative: Some(neg.clone()),
                    structure: Some(structure),
                    structure_offset: 0,
                    stop: None,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        // Structure tokens (EOL, EOF) are forced by the grid, so only codes are evidence.
        let mut pmi = vec![0.0; requests.len()];
        let out = generate(&self.lm, &self.vocab, &requests, cfg, &mut |e| match e {
            Event::ImageRow { row, frame, index, .. } => on_row(row / k, frame, index),
            Event::Token { row, token, pmi: p } if self.vocab.is_visual(token) => pmi[row] += p,
            _ => {}
        })?;
        let mut chosen: Vec<(Vec<i64>, Option<Vec<i64>>)> = out.into_iter().zip(plans).collect();
        if k > 1 {
            chosen = chosen
                .chunks(k)
                .zip(pmi.chunks(k))
                .map(|(cands, scores)| {
                    let best = (0..k).max_by(|&a, &b| scores[a].total_cmp(&scores[b]));
                    cands[best.expect("k >= 1")].clone()
                })
                .collect();
        }
        prompts
            .iter()
            .zip(chosen)
            .map(|(p, (tokens, plan))| {
                let mut g = self.finish(p, tokens, structure)?;
                g.plan = plan.map(|ids| self.plan_text(&ids)).transpose()?;
                Ok(g)
            })
            .collect()
    }

    /// Each prompt's `k` plans, as a planning model writes them after `BOS caption`: tokens up
    /// to the image start that ends a plan (which is left out; EOS too, should the model write
    /// one). Sampled as `cfg` samples text, without guidance.
    fn write_plans(
        &self,
        prompts: &[String],
        k: usize,
        cfg: &GenerateConfig,
    ) -> Result<Vec<Vec<i64>>> {
        let fmt = self.format();
        let (boi, eos) = (self.vocab.special.boi, self.vocab.special.eos);
        let mut requests = Vec::with_capacity(prompts.len() * k);
        for p in prompts {
            let prompt = fmt.plan_prompt(p)?;
            let req = Request { prompt, stop: Some(boi), ..Default::default() };
            requests.extend(std::iter::repeat_n(req, k));
        }
        let plan_cfg = GenerateConfig {
            cfg_scale: 1.0,
            best_of: 1,
            max_new_tokens: MAX_PLAN_TOKENS,
            ..cfg.clone()
        };
        let out = generate(&self.lm, &self.vocab, &requests, &plan_cfg, &mut |_| {})?;
        Ok(out
            .into_iter()
            .map(|t| t.into_iter().take_while(|&x| x != boi && x != eos).collect())
            .collect())
    }

    /// A plan's text, without the mark that opens it.
    fn plan_text(&self, ids: &[i64]) -> Result<String> {
        let ids: Vec<u32> = ids
            .iter()
            .filter(|&&t| t >= 0 && !self.vocab.is_visual(t))
            .map(|&t| t as u32)
            .collect();
        let text = self.text.decode(&ids, true)?;
        Ok(text.trim().trim_start_matches(PLAN_MARK).trim().to_string())
    }

    fn finish(&self, prompt: &str, tokens: Vec<i64>, s: Structure) -> Result<Generated> {
        let codes = parse_grid(&self.vocab, &tokens, s.h, s.w, s.frames)
            .context("the generated grid is malformed")?;
        let frames = self.decode(&codes, s.h, s.w)?;
        Ok(Generated { prompt: prompt.to_string(), tokens, codes, frames, plan: None })
    }

    /// Encodes frames (any size; resized to the grid's pixels) into codes per latent frame.
    pub fn encode_frames(&self, frames: &[RgbImage], h: i64, w: i64) -> Result<Vec<Vec<i64>>> {
        let vq = self.vq()?;
        let (ph, pw) = self.pixels(h, w)?;
        let x: Vec<Tensor> = frames
            .iter()
            .map(|f| to_tensor(&emu_tokenizer::image::resize(f, ph as u32, pw as u32)))
            .collect();
        let k = vq.config.temporal_downsample_factor as usize;
        if frames.len() == 1 {
            let c = vq.encode_images(&Tensor::stack(&x, 0).to_device(vq.device()));
            return Ok(vec![Vec::try_from(c.flatten(0, -1))?]);
        }
        ensure!(
            frames.len().is_multiple_of(k),
            "{} frames given; video frames come in groups of {k}",
            frames.len()
        );
        let c = vq
            .encode_video(&Tensor::stack(&x, 0).unsqueeze(0).to_device(vq.device()))?
            .squeeze_dim(0);
        (0..c.size()[0]).map(|i| Ok(Vec::try_from(c.get(i).flatten(0, -1))?)).collect()
    }

    /// Continues a video: `first` frames given (a multiple of the temporal factor), `total` latent
    /// frames in all.
    pub fn continue_video(
        &self,
        caption: &str,
        first: &[RgbImage],
        structure: Structure,
        fps: i64,
        cfg: &GenerateConfig,
    ) -> Result<Generated> {
        let given = self.encode_frames(first, structure.h, structure.w)?;
        ensure!(
            (given.len() as i64) < structure.frames,
            "{} latent frames given, but the video has only {}",
            given.len(),
            structure.frames
        );
        let fmt = self.format();
        let prompt = fmt.continuation_prompt(
            caption,
            &given,
            structure.h,
            structure.w,
            structure.frames,
            fps,
        )?;
        let offset = given.len() as i64 * structure.per_frame();
        let neg =
            fmt.continuation_prompt("", &given, structure.h, structure.w, structure.frames, fps)?;
        let req = Request {
            prompt,
            negative: Some(neg),
            structure: Some(structure),
            structure_offset: offset,
            stop: None,
        };
        let out = generate(&self.lm, &self.vocab, &[req], cfg, &mut |_| {})?.remove(0);
        let mut tokens = Vec::new();
        // The body so far (given frames) then what the model wrote.
        for f in &given {
            for row in f.chunks(structure.w as usize) {
                tokens.extend(row.iter().map(|&c| self.vocab.code_to_token(c)));
                tokens.push(self.vocab.special.eol);
            }
            tokens.push(self.vocab.special.eof);
        }
        tokens.extend(out);
        self.finish(caption, tokens, structure)
    }

    /// Answers `question` about `image` in Emu3-Chat's template; `on_token` streams the text.
    pub fn answer(
        &self,
        image: &RgbImage,
        grid: (i64, i64),
        question: &str,
        cfg: &GenerateConfig,
        on_token: &mut dyn FnMut(&str),
    ) -> Result<String> {
        let (h, w) = grid;
        let codes = self.encode_frames(std::slice::from_ref(image), h, w)?.remove(0);
        let prompt = self.format().chat_prompt(&codes, h, w, question)?.ids;
        let req = Request { prompt, ..Default::default() };
        let mut ids: Vec<u32> = Vec::new();
        let mut shown = String::new();
        let eos = self.vocab.special.eos;
        let text = &self.text;
        let cfg = GenerateConfig { cfg_scale: 1.0, ..cfg.clone() };
        let out = generate(&self.lm, &self.vocab, &[req], &cfg, &mut |e| {
            if let Event::Token { token, .. } = e
                && token != eos
                && token >= 0
            {
                ids.push(token as u32);
                if let Ok(s) = text.decode(&ids, true) {
                    on_token(&s[shown.len().min(s.len())..]);
                    shown = s;
                }
            }
        })?;
        let ids: Vec<u32> = out[0]
            .iter()
            .filter(|&&t| t != eos && !self.vocab.is_visual(t))
            .map(|&t| t as u32)
            .collect();
        Ok(self.text.decode(&ids, true)?.trim().to_string())
    }
}

impl Emu3 {
    /// Answers many (image, question) pairs in one batch, greedily or as `cfg` samples.
    pub fn answer_batch(
        &self,
        items: &[(RgbImage, String)],
        grid: (i64, i64),
        cfg: &GenerateConfig,
    ) -> Result<Vec<String>> {
        let (h, w) = grid;
        let fmt = self.format();
        let images: Vec<RgbImage> = items.iter().map(|(i, _)| i.clone()).collect();
        let codes = self.encode_many(&images, h, w)?;
        let requests = items
            .iter()
            .zip(&codes)
            .map(|((_, q), c)| {
                Ok(Request { prompt: fmt.chat_prompt(c, h, w, q)?.ids, ..Default::default() })
            })
            .collect::<Result<Vec<_>>>()?;
        // Understanding has no unconditional stream: guidance does not apply.
        let cfg = GenerateConfig { cfg_scale: 1.0, ..cfg.clone() };
        let out = generate(&self.lm, &self.vocab, &requests, &cfg, &mut |_| {})?;
        let eos = self.vocab.special.eos;
        out.iter()
            .map(|toks| {
                let ids: Vec<u32> = toks
                    .iter()
                    .take_while(|&&t| t != eos)
                    .filter(|&&t| !self.vocab.is_visual(t))
                    .map(|&t| t as u32)
                    .collect();
                Ok(self.text.decode(&ids, true)?.trim().to_string())
            })
            .collect()
    }

    /// Codes of many single images at once: `[h·w]` each.
    pub fn encode_many(&self, images: &[RgbImage], h: i64, w: i64) -> Result<Vec<Vec<i64>>> {
        let vq = self.vq()?;
        let (ph, pw) = self.pixels(h, w)?;
        let x: Vec<Tensor> = images
            .iter()
            .map(|f| to_tensor(&emu_tokenizer::image::resize(f, ph as u32, pw as u32)))
            .collect();
        let c =
            vq.encode_images(&Tensor::stack(&x, 0).to_device(vq.device())).to_device(Device::Cpu);
        (0..c.size()[0]).map(|i| Ok(Vec::try_from(c.get(i).flatten(0, -1))?)).collect()
    }
}

/// The vocabulary layout of a model: special ids from its config, visual tokens from `lookup`.
pub fn layout_for(
    cfg: &Emu3Config,
    codebook_size: Option<i64>,
    lookup: impl Fn(&str) -> Option<i64>,
) -> Result<VocabLayout> {
    let special = SpecialIds {
        bos: cfg.bos_token_id,
        eos: cfg.eos_token_id,
        pad: cfg.pad_token_id,
        eol: cfg.eol_token_id,
        eof: cfg.eof_token_id,
        img: cfg.img_token_id,
        boi: cfg.boi_token_id,
        eoi: cfg.eoi_token_id,
    };
    let k = match codebook_size {
        Some(k) => k,
        None => {
            // Without a VQ, count the visual tokens the tokenizer has.
            let mut k = 0;
            while lookup(&emu_tokenizer::vocab::visual_token_name(k)).is_some() {
                k += 1;
            }
            if k == 0 {
                bail!("the tokenizer has no visual tokens");
            }
            k
        }
    };
    VocabLayout::derive(special, k, cfg.vocab_size, lookup)
}
