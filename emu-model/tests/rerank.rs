//! Best-of-N reranking: the prompt's pointwise mutual information with generated tokens.

use emu_model::Emu3ForCausalLM;
use emu_model::generate::prompt_pmi;
use emu_tokenizer::vocab::{SpecialIds, VocabLayout};
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

fn lm() -> Emu3ForCausalLM {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/fixtures/emu3-tiny");
    Emu3ForCausalLM::load(&dir, Device::Cpu, Kind::Float).unwrap()
}

/// The tiny fixture's layout: visual tokens 336..400 (64 codes).
fn vocab() -> VocabLayout {
    let s = SpecialIds { bos: 1, eos: 2, pad: 0, eol: 328, eof: 332, img: 329, boi: 330, eoi: 331 };
    VocabLayout { special: s, visual_base: 336, codebook_size: 64, vocab_size: 400 }
}

/// `Σ log p(t | prefix)` over the visual tokens of `generated`, from one unpadded forward pass.
fn visual_logp_alone(
    lm: &Emu3ForCausalLM,
    v: &VocabLayout,
    prefix: &[i64],
    generated: &[i64],
) -> f64 {
    let ids: Vec<i64> = [prefix, generated].concat();
    let logits = lm.forward(&Tensor::from_slice(&ids).unsqueeze(0), None);
    let logp = logits.get(0).log_softmax(-1, Kind::Double);
    generated
        .iter()
        .enumerate()
        .filter(|(_, t)| v.is_visual(**t))
        .map(|(j, &t)| logp.double_value(&[(prefix.len() + j - 1) as i64, t]))
        .sum()
}

#[test]
fn pmi_equals_each_sample_scored_alone() {
    let (lm, v) = (lm(), vocab());
    // Prompts and negatives of different lengths, so the batch is left-padded unevenly.
    let prompts = vec![
        vec![1, 70, 71, 72, 330, 329],
        vec![1, 90, 330, 329],
        vec![1, 5, 6, 7, 8, 9, 330, 329],
    ];
    let negatives = vec![vec![1, 330, 329], vec![1, 330, 329], vec![1, 44, 330, 329]];
    let generated = vec![
        vec![340, 351, 328, 399, 336, 328, 331],
        vec![360, 360, 328, 337, 338, 328, 331],
        vec![390, 341, 328, 350, 352, 328, 331],
    ];
    let got = prompt_pmi(&lm, &v, &prompts, &negatives, &generated);
    for i in 0..3 {
        let want = visual_logp_alone(&lm, &v, &prompts[i], &generated[i])
            - visual_logp_alone(&lm, &v, &negatives[i], &generated[i]);
        assert!((got[i] - want).abs() < 1e-3, "sample {i}: {} against {want} scored alone", got[i]);
    }
    assert!(
        got.iter().any(|p| p.abs() > 1e-2),
        "a random model's prompts change the codes' odds: {got:?}"
    );
}

#[test]
fn only_visual_tokens_count_and_the_prompt_itself_carries_no_information() {
    let (lm, v) = (lm(), vocab());
    let p = vec![1, 70, 71, 330, 329];
    let structure_only = vec![328, 328, 331];
    let codes = vec![340, 341, 328, 342, 343, 328, 331];
    let got = prompt_pmi(
        &lm,
        &v,
        &[p.clone(), p.clone()],
        &[vec![1, 330, 329], p.clone()],
        &[structure_only, codes],
    );
    assert_eq!(got[0], 0.0, "EOL and EOI are forced by the grid, so they are not evidence");
    assert!(got[1].abs() < 1e-5, "a prompt against itself has PMI {}", got[1]);
}

#[test]
#[should_panic(expected = "one prompt and one negative per sample")]
fn mismatched_lists_are_misuse() {
    prompt_pmi(&lm(), &vocab(), &[vec![1]], &[], &[vec![340]]);
}
