//! The model's own judgement of how well generated tokens fit their prompt: the pointwise mutual
//! information `Σ log p(x | prompt) − log p(x | negative)` over the generated visual tokens,
//! teacher-forced in one batched forward pass. It is the quantity classifier-free guidance
//! amplifies step by step, summed over a whole sample, so ranking candidates by it keeps those
//! the prompt explains best (best-of-N sampling) with no model besides the generator.
//!
//! Shapes: R rows (conditional rows, then their unconditional twins), L tokens, V vocabulary.

use super::left_pad;
use crate::model::Emu3ForCausalLM;
use emu_tokenizer::vocab::VocabLayout;
use tch::{Kind, Tensor};

/// PMI of each `generated[i]` under `prompts[i]` against `negatives[i]`, summed over its visual
/// tokens (structure tokens such as EOL are forced, so they carry no evidence). Panics if the
/// three lists differ in length or a sequence is empty.
pub fn prompt_pmi(
    lm: &Emu3ForCausalLM,
    vocab: &VocabLayout,
    prompts: &[Vec<i64>],
    negatives: &[Vec<i64>],
    generated: &[Vec<i64>],
) -> Vec<f64> {
    let n = generated.len();
    assert!(
        prompts.len() == n && negatives.len() == n,
        "prompt_pmi needs one prompt and one negative per sample ({} and {} for {n})",
        prompts.len(),
        negatives.len()
    );
    if n == 0 {
        return Vec::new();
    }
    assert!(generated.iter().all(|g| !g.is_empty()), "prompt_pmi: an empty sample");
    let join = |p: &Vec<i64>, g: &Vec<i64>| [p.as_slice(), g.as_slice()].concat();
    let rows: Vec<Vec<i64>> = prompts
        .iter()
        .zip(generated)
        .map(|(p, g)| join(p, g))
        .chain(negatives.iter().zip(generated).map(|(p, g)| join(p, g)))
        .collect();
    let refs: Vec<&[i64]> = rows.iter().map(Vec::as_slice).collect();
    let device = lm.vs.device();
    let (ids, valid) = left_pad(&refs, vocab.special.pad, device);
    let l = ids.size()[1];
    let logp = tch::no_grad(|| {
        lm.forward(&ids, Some(&valid)).to_kind(Kind::Float).log_softmax(-1, Kind::Float)
    });
    // Left padding right-aligns every row, so sample i's tokens are the last g.len() of rows i
    // and n + i, predicted by the positions just before them.
    let score = |r: usize, g: &[i64]| -> Tensor {
        let k = g.len() as i64;
        let tokens = Tensor::from_slice(g).to_device(device);
        logp.get(r as i64)
            .narrow(0, l - 1 - k, k)
            .gather(1, &tokens.unsqueeze(1), false)
            .squeeze_dim(1)
    };
    generated
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let visual: Vec<bool> = g.iter().map(|&t| vocab.is_visual(t)).collect();
            let mask = Tensor::from_slice(&visual).to_device(device);
            let diff = (score(i, g) - score(n + i, g)) * mask.to_kind(Kind::Float);
            diff.sum(Kind::Double).double_value(&[])
        })
        .collect()
}
