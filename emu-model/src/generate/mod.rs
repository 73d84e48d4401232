//! The generation engine: batched prompts with left padding, classifier-free guidance with both
//! streams in one forward pass, structural constraints, seeded sampling, and a streaming callback.
//!
//! With guidance g ≠ 1 the batch holds the conditional rows, then one unconditional
//! (negative-prompt) row per request; each step combines them as the reference does, in
//! log-softmax space: `g·(cond − uncond) + uncond`, and the sampled token is appended to both.
//! The same two streams give each chosen token's pointwise mutual information with the prompt,
//! `cond − uncond` at that token, which best-of-N sums to rank candidates.
//!
//! Shapes: R rows (requests, or twice that with guidance or best-of), L tokens, V vocabulary.

pub mod constraint;
pub mod sampling;

use crate::model::Emu3ForCausalLM;
use anyhow::{Result, ensure};
pub use constraint::{GridConstraint, Structure};
use emu_tokenizer::vocab::VocabLayout;
pub use sampling::{Sampler, SamplingConfig};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GenerateConfig {
    pub sampling: SamplingConfig,
    /// Classifier-free guidance scale; 1 disables guidance.
    pub cfg_scale: f64,
    pub seed: u64,
    /// Upper bound on new tokens per request (a constrained grid needs its own count).
    pub max_new_tokens: i64,
    /// Candidates per text-to-image or text-to-video sample: `Emu3::text_to_grid` keeps the one
    /// whose codes its prompt explains best (the highest sum of [`Event::Token`]'s `pmi`). 1 draws
    /// once, as the reference does; continuation and answers always draw once. Above 1 the
    /// engine runs the negative stream even without guidance, to score tokens.
    pub best_of: usize,
}

impl Default for GenerateConfig {
    fn default() -> Self {
        GenerateConfig {
            sampling: SamplingConfig::default(),
            cfg_scale: 1.0,
            seed: 0,
            max_new_tokens: 256,
            best_of: 1,
        }
    }
}

/// One thing to generate.
#[derive(Clone, Debug, Default)]
pub struct Request {
    pub prompt: Vec<i64>,
    /// The unconditional stream's prompt (needed with guidance or best-of scoring).
    pub negative: Option<Vec<i64>>,
    /// Generate this grid (image or video) under the structural constraint.
    pub structure: Option<Structure>,
    /// Grid tokens already in the prompt (video continuation).
    pub structure_offset: i64,
    /// A token that ends the request besides EOS (the image start that ends a plan).
    pub stop: Option<i64>,
}

/// What the engine reports while it runs.
#[derive(Debug)]
pub enum Event<'a> {
    /// A token was chosen for request `row`. `pmi` is `log p(token | prompt) − log p(token |
    /// negative)`, how much the prompt raised its odds; 0 without a negative stream.
    Token { row: usize, token: i64, pmi: f64 },
    /// An image row was completed (`codes` are its w code tokens).
    ImageRow { row: usize, frame: i64, index: i64, tokens: &'a [i64] },
    /// Request `row` ended (EOS, its stop token, end of grid, or the token limit).
    Finished { row: usize },
}

/// Generates for every request; returns each request's new tokens (EOS included when reached).
pub fn generate(
    lm: &Emu3ForCausalLM,
    vocab: &VocabLayout,
    requests: &[Request],
    cfg: &GenerateConfig,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<Vec<Vec<i64>>> {
    cfg.sampling.validate()?;
    ensure!(!requests.is_empty(), "nothing to generate: no requests");
    let b = requests.len();
    // Guidance mixes the two streams; best-of ranks candidates by their difference.
    let two_streams = cfg.cfg_scale != 1.0 || cfg.best_of > 1;
    ensure!(
        !two_streams || requests.iter().all(|r| r.negative.is_some()),
        "classifier-free guidance (scale {}) and best-of scoring (best_of {}) need a negative \
         prompt for every request",
        cfg.cfg_scale,
        cfg.best_of
    );
    let steps: Vec<i64> = requests
        .iter()
        .map(|r| match r.structure {
            Some(s) => s.total_tokens() - r.structure_offset,
            None => cfg.max_new_tokens,
        })
        .collect();
    let max_steps = *steps.iter().max().expect("non-empty");
    let mut rows: Vec<&[i64]> = requests.iter().map(|r| r.prompt.as_slice()).collect();
    if two_streams {
        rows.extend(requests.iter().map(|r| r.negative.as_deref().expect("checked above")));
    }
    ensure!(rows.iter().all(|r| !r.is_empty()), "every prompt needs at least one token (BOS)");
    let l0 = rows.iter().map(|r| r.len()).max().expect("non-empty") as i64;
    let limit = lm.config.max_position_embeddings;
    ensure!(
        l0 + max_steps <= limit,
        "prompt ({l0} tokens) plus generation ({max_steps} tokens) exceeds the model's {limit} positions\n\
         hint: use a shorter prompt or a smaller grid"
    );
    let device = lm.vs.device();
    let (ids, valid) = left_pad(&rows, vocab.special.pad, device);
    let mut cache = lm.new_cache(rows.len() as i64, l0 + max_steps);
    let mut logits = tch::no_grad(|| lm.forward_cached(&ids, &valid, &mut cache));

    let mut sampler = Sampler::new(cfg.sampling.clone(), cfg.seed, b);
    let mut grids: Vec<Option<GridConstraint>> = requests
        .iter()
        .map(|r| r.structure.map(|s| GridConstraint::new(s, vocab, r.structure_offset)))
        .collect();
    let mut out: Vec<Vec<i64>> = vec![Vec::new(); b];
    let mut active: Vec<bool> = vec![true; b];
    for _ in 0..max_steps {
        let (scores, pmi) = guide_with_pmi(&logits, b, cfg.cfg_scale, two_streams);
        let mut next = vec![vocab.special.pad; b];
        for r in 0..b {
            if !active[r] {
                continue;
            }
            let mut row = scores.get(r as i64).to_device(Device::Cpu);
            if let Some(g) = &grids[r] {
                g.apply(&mut row, vocab);
            }
            let in_grid = grids[r].as_ref().is_some_and(GridConstraint::in_grid);
            let token = sampler.sample(r, &row, in_grid);
            next[r] = token;
            out[r].push(token);
            let pmi = pmi.as_ref().map_or(0.0, |t| t.double_value(&[r as i64, token]));
            on_event(Event::Token { row: r, token, pmi });
            if let Some(g) = grids[r].as_mut() {
                g.advance();
                if let Some((frame, index)) = g.closed_row() {
                    let w = g.structure.w as usize;
                    let n = out[r].len();
                    if n > w {
                        on_event(Event::ImageRow {
                            row: r,
                            frame,
                            index,
                            tokens: &out[r][n - 1 - w..n - 1],
                        });
                    }
                }
            }
            let done = token == vocab.special.eos
                || requests[r].stop == Some(token)
                || out[r].len() as i64 >= steps[r];
            if done {
                active[r] = false;
                on_event(Event::Finished { row: r });
            }
        }
        if !active.iter().any(|&a| a) {
            break;
        }
        let mut feed = next.clone();
        let mut ok: Vec<bool> = active.clone();
        if two_streams {
            feed.extend(next.iter().copied());
            ok.extend(active.iter().copied());
        }
        let ids = Tensor::from_slice(&feed).view([-1, 1]).to_device(device);
        let valid = Tensor::from_slice(&ok).view([-1, 1]).to_device(device);
        logits = tch::no_grad(|| lm.forward_cached(&ids, &valid, &mut cache));
    }
    Ok(out)
}

/// Conditional rows' scores: the logits themselves, or with guidance the reference's
/// `g·(log_softmax(cond) − log_softmax(uncond)) + log_softmax(uncond)`. `[R,V] -> [B,V]`.
pub fn guide(logits: &Tensor, b: usize, scale: f64) -> Tensor {
    guide_with_pmi(logits, b, scale, false).0
}

/// [`guide`]'s scores and, with `pmi` (the unconditional rows must exist), every token's
/// `log_softmax(cond) − log_softmax(uncond)`, the difference guidance scales. `[R,V] -> [B,V]`.
fn guide_with_pmi(logits: &Tensor, b: usize, scale: f64, pmi: bool) -> (Tensor, Option<Tensor>) {
    let b = b as i64;
    let logits = logits.to_kind(Kind::Float);
    if scale == 1.0 && !pmi {
        return (logits.narrow(0, 0, b), None);
    }
    let uncond = logits.narrow(0, b, b).log_softmax(-1, Kind::Float);
    let diff = logits.narrow(0, 0, b).log_softmax(-1, Kind::Float) - &uncond;
    let scores = if scale == 1.0 { logits.narrow(0, 0, b) } else { &diff * scale + uncond };
    (scores, pmi.then_some(diff))
}

/// Left-pads token rows: ids `[R,L]` (pad id in the gaps) and validity `[R,L]`.
pub fn left_pad(rows: &[&[i64]], pad: i64, device: Device) -> (Tensor, Tensor) {
    let l = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(rows.len() * l);
    let mut valid = Vec::with_capacity(rows.len() * l);
    for r in rows {
        let gap = l - r.len();
        ids.extend(std::iter::repeat_n(pad, gap).chain(r.iter().copied()));
        valid.extend(std::iter::repeat_n(false, gap).chain(std::iter::repeat_n(true, r.len())));
    }
    let shape = [rows.len() as i64, l as i64];
    (
        Tensor::from_slice(&ids).view(shape).to_device(device),
        Tensor::from_slice(&valid).view(shape).to_device(device),
    )
}
