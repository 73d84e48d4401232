//! The engine's per-token pointwise mutual information with the prompt, which best-of-N sums:
//! checked against each sample scored alone, teacher-forced without cache or padding.

mod common;

use common::{fixture_lm as lm, fixture_vocab as vocab};
use emu_model::Emu3ForCausalLM;
use emu_model::generate::{Event, GenerateConfig, Request, SamplingConfig, Structure, generate};
use tch::{Kind, Tensor};

/// `log p(t | prefix + earlier generated)` of every generated token, from one unpadded pass.
fn logp_alone(lm: &Emu3ForCausalLM, prefix: &[i64], generated: &[i64]) -> Vec<f64> {
    let ids: Vec<i64> = [prefix, generated].concat();
    let logits = lm.forward(&Tensor::from_slice(&ids).unsqueeze(0), None);
    let logp = logits.get(0).log_softmax(-1, Kind::Double);
    let at = |j: usize, t: i64| logp.double_value(&[(prefix.len() + j - 1) as i64, t]);
    generated.iter().enumerate().map(|(j, &t)| at(j, t)).collect()
}

/// Runs the engine and returns each request's tokens and reported per-token PMI.
fn run(reqs: &[Request], cfg: &GenerateConfig) -> Vec<(Vec<i64>, Vec<f64>)> {
    let mut pmi = vec![Vec::new(); reqs.len()];
    let out = generate(&lm(), &vocab(), reqs, cfg, &mut |e| {
        if let Event::Token { row, pmi: p, .. } = e {
            pmi[row].push(p);
        }
    })
    .unwrap();
    out.into_iter().zip(pmi).collect()
}

fn requests() -> Vec<Request> {
    // Prompts, negatives and grids of different sizes, so rows are padded unevenly and end at
    // different steps.
    let t2i = |caption: &[i64], hw: (i64, i64)| {
        let mut p = vec![1];
        p.extend_from_slice(caption);
        p.extend([330, 50, 42, 51, 329]);
        Request { prompt: p, structure: Some(Structure::image(hw.0, hw.1)), ..Default::default() }
    };
    let mut reqs =
        vec![t2i(&[70, 71, 72], (2, 3)), t2i(&[90], (1, 2)), t2i(&[5, 6, 7, 8, 9], (2, 2))];
    let negatives =
        [vec![1, 330, 50, 42, 51, 329], vec![1, 44, 330, 50, 42, 51, 329], vec![1, 330, 329]];
    for (r, n) in reqs.iter_mut().zip(negatives) {
        r.negative = Some(n);
    }
    reqs
}

#[test]
fn reported_pmi_equals_each_sample_scored_alone() {
    let lm = lm();
    let reqs = requests();
    let sampling = SamplingConfig { top_k_image: Some(16), ..Default::default() };
    // Guided, and unguided with best-of scoring: both run the negative stream.
    for (scale, best_of) in [(3.0, 1), (1.0, 2)] {
        let cfg = GenerateConfig {
            sampling: sampling.clone(),
            cfg_scale: scale,
            seed: 5,
            max_new_tokens: 16,
            best_of,
        };
        let mut biggest = 0.0f64;
        for (i, (tokens, pmi)) in run(&reqs, &cfg).iter().enumerate() {
            assert_eq!(tokens.len(), pmi.len(), "one PMI per token");
            let cond = logp_alone(&lm, &reqs[i].prompt, tokens);
            let uncond = logp_alone(&lm, reqs[i].negative.as_ref().unwrap(), tokens);
            for j in 0..tokens.len() {
                let want = cond[j] - uncond[j];
                assert!(
                    (pmi[j] - want).abs() < 1e-4,
                    "scale {scale}, request {i}, token {j}: {} against {want} scored alone",
                    pmi[j]
                );
                biggest = biggest.max(want.abs());
            }
        }
        // Enough signal that an off-by-one position or a swapped stream would fail above.
        assert!(biggest > 1e-2, "the prompts barely matter to this model: {biggest}");
    }
}

#[test]
fn without_a_negative_stream_every_token_scores_zero() {
    let mut reqs = requests();
    for r in &mut reqs {
        r.negative = None;
    }
    let cfg = GenerateConfig { max_new_tokens: 16, ..Default::default() };
    assert!(run(&reqs, &cfg).iter().all(|(_, pmi)| pmi.iter().all(|&p| p == 0.0)));
    let scored = GenerateConfig { best_of: 2, ..cfg };
    let err = generate(&lm(), &vocab(), &reqs, &scored, &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("negative prompt"), "{err}");
}
