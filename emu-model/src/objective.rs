//! The training objective: next-token cross-entropy with per-token weights and ignored labels.
//!
//! Emu3 weights vision tokens 0.5 in pretraining, and its SFT stages train on one modality only
//! (weight 0 elsewhere); labels of -100 are ignored as in PyTorch. The loss is
//! `Σ w·ce / Σ w` over the positions that have a label.
//!
//! Shapes: B batch, L tokens, V vocabulary.

use crate::model::Emu3ForCausalLM;
use crate::packing::Packing;
use tch::{Kind, Reduction, Tensor};

/// Labels with this value are ignored (PyTorch's convention).
pub const IGNORE_INDEX: i64 = -100;

pub struct TrainOutput {
    /// Scalar f32 loss.
    pub loss: Tensor,
    /// `[B,L,V]` f32 logits, when asked for.
    pub logits: Option<Tensor>,
    /// Σ w over the scored positions.
    pub weight_sum: f64,
}

impl Emu3ForCausalLM {
    /// `labels[b, t]` is the token expected at position t (usually `ids` itself, or -100); the
    /// shift by one happens here. `weights` (`[B,L]`, default 1) weigh each label. With
    /// `packing`, `ids` are packed documents that each see only themselves (see
    /// [`Emu3ForCausalLM::hidden_packed`]). `train` switches dropout on.
    pub fn forward_train(
        &self,
        ids: &Tensor,
        labels: &Tensor,
        weights: Option<&Tensor>,
        packing: Option<Packing>,
        train: bool,
        want_logits: bool,
    ) -> TrainOutput {
        assert_eq!(ids.size(), labels.size(), "ids and labels must have the same shape");
        if let Some(w) = weights {
            assert_eq!(w.size(), ids.size(), "weights must have the shape of ids");
        }
        let hidden = match packing {
            Some(p) => self.hidden_packed(ids, p, train),
            None => self.hidden(ids, train),
        };
        let logits = self.lm_head.forward(&hidden).to_kind(Kind::Float);
        let (loss, weight_sum) = weighted_next_token_loss(&logits, labels, weights);
        TrainOutput { loss, logits: want_logits.then_some(logits), weight_sum }
    }
}

/// `Σ w·ce / Σ w` over positions whose shifted label is not ignored; logits `[B,L,V]`.
pub fn weighted_next_token_loss(
    logits: &Tensor,
    labels: &Tensor,
    weights: Option<&Tensor>,
) -> (Tensor, f64) {
    let (_, l, v) = logits.size3().expect("logits must be [B,L,V]");
    let pred = logits.narrow(1, 0, l - 1).reshape([-1, v]);
    let target = labels.narrow(1, 1, l - 1).reshape([-1]);
    let ce = pred.cross_entropy_loss::<Tensor>(&target, None, Reduction::None, IGNORE_INDEX, 0.0);
    let scored = target.ne(IGNORE_INDEX).to_kind(Kind::Float);
    let w = match weights {
        Some(w) => w.narrow(1, 1, l - 1).reshape([-1]).to_kind(Kind::Float) * &scored,
        None => scored,
    };
    let total = w.sum(Kind::Float);
    let weight_sum = total.double_value(&[]);
    ((ce * &w).sum(Kind::Float) / total.clamp_min(1e-12), weight_sum)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn weights_and_ignored_labels_match_a_hand_computation() {
        // Two positions scored; uniform logits give ce = ln V each.
        let v = 4;
        let mut logits = Tensor::zeros([1, 3, v], (Kind::Float, Device::Cpu));
        // Make position 1 confident in token 2: ce = -log softmax.
        let _ = logits.get(0).get(1).get(2).fill_(2.0);
        logits = logits.detach();
        let labels = Tensor::from_slice(&[5i64, 1, 2]).view([1, 3]);
        let weights = Tensor::from_slice(&[1f32, 0.5, 2.0]).view([1, 3]);
        let (loss, wsum) = weighted_next_token_loss(&logits, &labels, Some(&weights));
        let ce0 = (v as f64).ln();
        let ce1 = -(2f64.exp() / (2f64.exp() + 3.0)).ln();
        let want = (0.5 * ce0 + 2.0 * ce1) / 2.5;
        assert!(
            (loss.double_value(&[]) - want).abs() < 1e-6,
            "{} vs {want}",
            loss.double_value(&[])
        );
        assert_eq!(wsum, 2.5);
        let ignored = Tensor::from_slice(&[5i64, IGNORE_INDEX, 2]).view([1, 3]);
        let (loss, wsum) = weighted_next_token_loss(&logits, &ignored, Some(&weights));
        assert!((loss.double_value(&[]) - ce1).abs() < 1e-6);
        assert_eq!(wsum, 2.0);
    }
}
