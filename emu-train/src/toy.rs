//! A complete but untrained model folder in seconds: a tiny VQ tokenizer, a BPE tokenizer with
//! our specials and visual tokens, and a tiny transformer wired to them. For tests and examples
//! of everything that needs "a model folder" (generation, understanding, the CLI).

use crate::pipeline::{model_config, special_tokens};
use crate::presets::PipelineConfig;
use anyhow::Result;
use emu_model::{Emu3Config, Emu3ForCausalLM};
use emu_tokenizer::text::TextTokenizer;
use emu_tokenizer::vocab::visual_token_name;
use emu_tokenizer::vq::{VqConfig, VqModel};
use std::path::Path;
use tch::{Device, Kind};

/// Pixel size of the toy model's images (its grid is 4×4 codes).
pub const TOY_SIZE: u32 = 32;

/// The toy model's vision tokenizer: 16 codes, 8× spatial downsampling, no attention.
pub fn toy_vq_config() -> VqConfig {
    VqConfig {
        codebook_size: 16,
        embed_dim: 4,
        z_channels: 4,
        ch: 32,
        ch_mult: vec![1, 1, 1, 1],
        num_res_blocks: 1,
        attn_resolutions: vec![],
        ..VqConfig::emu3()
    }
}

/// Writes a random tiny model folder into `dir` (config.json, model.safetensors,
/// tokenizer.json, vision_tokenizer/).
pub fn write_toy_model(dir: &Path, seed: i64) -> Result<()> {
    tch::manual_seed(seed);
    let vq_cfg = toy_vq_config();
    let vq = VqModel::new(vq_cfg.clone(), Device::Cpu, Kind::Float)?;
    vq.save(&dir.join("vision_tokenizer"))?;
    let mut specials = special_tokens();
    specials.extend((0..vq_cfg.codebook_size).map(visual_token_name));
    let corpus: Vec<String> = [
        "a red circle",
        "two blue squares",
        "what color is the star?",
        " yes",
        " no",
        "describe the image",
        "a green triangle moves right",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let text = TextTokenizer::train_bpe(&corpus, 300, &specials)?;
    text.save(&dir.join("tokenizer.json"))?;
    let cfg = PipelineConfig {
        model: Emu3Config {
            hidden_size: 32,
            intermediate_size: 64,
            num_hidden_layers: 1,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            max_position_embeddings: 256,
            ..Emu3Config::tiny()
        },
        ..PipelineConfig::preset("smoke")?
    };
    let model_cfg = model_config(&cfg, &text, TOY_SIZE, vq_cfg.spatial_factor())?;
    Emu3ForCausalLM::new(&model_cfg, Device::Cpu, Kind::Float)?.save(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use emu_model::generate::{GenerateConfig, Structure};
    use emu_model::pipeline::Emu3;
    use std::sync::{Mutex, MutexGuard};

    /// torch's generator is one per process and these tests run on parallel threads: without
    /// this lock the other test's draws land between `manual_seed` and the weights, so a seed
    /// would not fix the toy model.
    static RNG: Mutex<()> = Mutex::new(());

    fn rng_lock() -> MutexGuard<'static, ()> {
        RNG.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    #[test]
    fn the_toy_model_loads_and_generates_and_answers() {
        let _rng = rng_lock();
        let dir = tempfile::tempdir().unwrap();
        write_toy_model(dir.path(), 1).unwrap();
        let m = Emu3::load(dir.path(), None, Device::Cpu, Kind::Float).unwrap();
        let cfg = GenerateConfig { cfg_scale: 2.0, ..Default::default() };
        let out = m
            .text_to_grid(
                &["a red circle".into()],
                "",
                Structure::image(4, 4),
                1,
                &cfg,
                &mut |_, _, _| {},
            )
            .unwrap();
        assert_eq!(out[0].frames[0].dimensions(), (TOY_SIZE, TOY_SIZE));
        assert_eq!(out[0].codes[0].len(), 16);
        let v = m
            .text_to_grid(
                &["a circle".into()],
                "",
                Structure { h: 4, w: 4, frames: 2 },
                8,
                &cfg,
                &mut |_, _, _| {},
            )
            .unwrap();
        assert_eq!(v[0].frames.len(), 8);
        let a = m.answer(
            &out[0].frames[0],
            (4, 4),
            "what color is the star?",
            &GenerateConfig { max_new_tokens: 5, ..Default::default() },
            &mut |_| {},
        );
        assert!(a.is_ok());
    }

    #[test]
    fn best_of_keeps_the_candidate_its_prompt_explains_best() {
        use emu_model::generate::{Event, Request, SamplingConfig, generate};
        let _rng = rng_lock();
        let dir = tempfile::tempdir().unwrap();
        write_toy_model(dir.path(), 2).unwrap();
        let m = Emu3::load(dir.path(), None, Device::Cpu, Kind::Float).unwrap();
        let st = Structure::image(4, 4);
        let sampling = SamplingConfig { top_k_image: Some(8), ..Default::default() };
        let cfg = GenerateConfig { cfg_scale: 2.0, sampling, ..Default::default() };
        // More prompts than candidates, so that mapping rows by `% k` instead of `/ k` shows.
        let prompts: Vec<String> =
            ["a red circle", "two blue squares", "a green triangle", "a star"]
                .map(String::from)
                .to_vec();
        let k = 3;
        // Every candidate best_of chooses from: the same batch, one draw per request, with the
        // PMI of its codes as the engine reports it (checked against teacher forcing elsewhere).
        let fmt = m.format();
        let neg = fmt.t2i_prompt("", 4, 4).unwrap();
        let reqs: Vec<Request> = prompts
            .iter()
            .flat_map(|p| std::iter::repeat_n(p, k))
            .map(|p| Request {
                prompt: fmt.t2i_prompt(p, 4, 4).unwrap(),
                negative: Some(neg.clone()),
                structure: Some(st),
                structure_offset: 0,
                stop: None,
            })
            .collect();
        let mut pmi = vec![0.0; reqs.len()];
        let cands = generate(&m.lm, &m.vocab, &reqs, &cfg, &mut |e| {
            if let Event::Token { row, token, pmi: p } = e
                && m.vocab.is_visual(token)
            {
                pmi[row] += p;
            }
        })
        .unwrap();

        let mut rows_seen = std::collections::BTreeMap::new();
        let best_cfg = GenerateConfig { best_of: k, ..cfg.clone() };
        let best = m
            .text_to_grid(&prompts, "", st, 1, &best_cfg, &mut |r, f, i| {
                *rows_seen.entry((r, f, i)).or_insert(0) += 1
            })
            .unwrap();
        let mut chosen = Vec::new();
        for (i, g) in best.iter().enumerate() {
            let scores = &pmi[i * k..(i + 1) * k];
            let j = (0..k).max_by(|&a, &b| scores[a].total_cmp(&scores[b])).unwrap();
            assert_eq!(g.prompt, prompts[i]);
            assert_eq!(g.tokens, cands[i * k + j], "prompt {i}: PMI {scores:?}");
            chosen.push(j);
        }
        assert!(
            chosen.iter().any(|&j| j != 0) && chosen.iter().any(|&j| j != k - 1),
            "the winners {chosen:?} should not all sit at one end, or the choice is not tested"
        );
        // Progress reports each prompt's rows once per candidate, under the prompt's index.
        assert_eq!(rows_seen.len(), prompts.len() * 4);
        assert!(rows_seen.iter().all(|(&(r, f, _), &n)| r < prompts.len() && f == 0 && n == k));

        let zero = GenerateConfig { best_of: 0, ..cfg.clone() };
        let err = m.text_to_grid(&prompts, "", st, 1, &zero, &mut |_, _, _| {}).unwrap_err();
        assert!(err.to_string().contains("best_of is 0"), "{err}");
        let greedy = GenerateConfig { sampling: SamplingConfig::greedy(), ..best_cfg };
        let err = m.text_to_grid(&prompts, "", st, 1, &greedy, &mut |_, _, _| {}).unwrap_err();
        assert!(err.to_string().contains("identical candidates"), "{err}");
    }

    #[test]
    fn a_planning_model_draws_from_the_plan_it_wrote() {
        use emu_model::generate::{Request, SamplingConfig, generate};
        let _rng = rng_lock();
        let dir = tempfile::tempdir().unwrap();
        write_toy_model(dir.path(), 3).unwrap();
        let mut m = Emu3::load(dir.path(), None, Device::Cpu, Kind::Float).unwrap();
        let st = Structure::image(4, 4);
        let sampling = SamplingConfig { top_k_image: Some(8), ..Default::default() };
        let cfg = GenerateConfig { cfg_scale: 2.0, sampling, seed: 11, ..Default::default() };
        let prompts = vec!["two blue squares".to_string()];
        let plain = m.text_to_grid(&prompts, "", st, 1, &cfg, &mut |_, _, _| {}).unwrap();
        assert_eq!(plain[0].plan, None, "a folder without extensions.json does not plan");

        m.extensions.plan = true;
        let planned = m.text_to_grid(&prompts, "", st, 1, &cfg, &mut |_, _, _| {}).unwrap();
        // By hand: the plan is written after `BOS caption` up to the image start, without
        // guidance; the image is then drawn after caption and plan, guided against "".
        let fmt = m.format();
        let boi = m.vocab.special.boi;
        let plan_req = Request {
            prompt: fmt.plan_prompt(&prompts[0]).unwrap(),
            stop: Some(boi),
            ..Default::default()
        };
        let plan_cfg = GenerateConfig { cfg_scale: 1.0, max_new_tokens: 64, ..cfg.clone() };
        let written = generate(&m.lm, &m.vocab, &[plan_req], &plan_cfg, &mut |_| {}).unwrap();
        let plan: Vec<i64> = written[0]
            .iter()
            .copied()
            .take_while(|&t| t != boi && t != m.vocab.special.eos)
            .collect();
        let draw = Request {
            prompt: fmt.t2i_prompt_planned(&prompts[0], &plan, 4, 4).unwrap(),
            negative: Some(fmt.t2i_prompt("", 4, 4).unwrap()),
            structure: Some(st),
            ..Default::default()
        };
        let drawn = generate(&m.lm, &m.vocab, &[draw], &cfg, &mut |_| {}).unwrap();
        assert_eq!(planned[0].tokens, drawn[0]);
        assert!(planned[0].plan.is_some());
        assert_ne!(planned[0].tokens, plain[0].tokens, "the plan should change what is drawn");
    }
}
