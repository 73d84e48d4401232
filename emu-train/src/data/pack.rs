//! Packing samples into fixed-length training sequences, and the deterministic, resumable,
//! rank-aware loader over them.
//!
//! Samples are packed whole, never split, so an image block always stays in one sequence (as the
//! paper packs); a sample longer than the context is skipped and counted. Each epoch shuffles the
//! samples with a seed derived from (seed, epoch) and packs them again; the cursor (epoch,
//! position) says where training stands, so a resumed run sees exactly the same batches.
//!
//! Shapes: B sequences, L = max_len tokens.

use super::shards::Task;
use emu_model::objective::IGNORE_INDEX;
use emu_tokenizer::sequence::{Sample, Weighting};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::Tensor;

/// One packed training sequence.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PackedSeq {
    pub ids: Vec<i64>,
    pub weights: Vec<f32>,
}

/// Packs `samples` in `order` greedily into sequences of exactly `max_len` tokens (the tail padded
/// with `pad`, weight 0). Returns the sequences and how many samples did not fit at all.
pub fn pack(
    samples: &[(Sample, Weighting)],
    order: &[usize],
    max_len: usize,
    pad: i64,
) -> (Vec<PackedSeq>, usize) {
    let mut out = Vec::new();
    let mut cur =
        PackedSeq { ids: Vec::with_capacity(max_len), weights: Vec::with_capacity(max_len) };
    let mut too_long = 0;
    for &i in order {
        let (s, w) = &samples[i];
        if s.len() > max_len {
            too_long += 1;
            continue;
        }
        if cur.ids.len() + s.len() > max_len {
            out.push(finish(std::mem::take(&mut cur), max_len, pad));
        }
        cur.ids.extend_from_slice(&s.ids);
        cur.weights.extend(s.weights(*w));
    }
    if !cur.ids.is_empty() {
        out.push(finish(cur, max_len, pad));
    }
    (out, too_long)
}

fn finish(mut s: PackedSeq, max_len: usize, pad: i64) -> PackedSeq {
    s.weights.resize(max_len, 0.0);
    s.ids.resize(max_len, pad);
    s
}

/// `[B,L]` ids, labels (-100 where the weight is 0) and weights.
pub fn to_batch(seqs: &[&PackedSeq]) -> (Tensor, Tensor, Tensor) {
    let l = seqs.first().map_or(0, |s| s.ids.len()) as i64;
    let b = seqs.len() as i64;
    let ids: Vec<i64> = seqs.iter().flat_map(|s| s.ids.iter().copied()).collect();
    let labels: Vec<i64> = seqs
        .iter()
        .flat_map(|s| {
            s.ids.iter().zip(&s.weights).map(|(&t, &w)| if w > 0.0 { t } else { IGNORE_INDEX })
        })
        .collect();
    let weights: Vec<f32> = seqs.iter().flat_map(|s| s.weights.iter().copied()).collect();
    (
        Tensor::from_slice(&ids).view([b, l]),
        Tensor::from_slice(&labels).view([b, l]),
        Tensor::from_slice(&weights).view([b, l]),
    )
}

/// Where the loader stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub epoch: u64,
    /// Sequences of this epoch already handed out.
    pub position: usize,
}

/// Hands out global batches of packed sequences, epoch after epoch.
pub struct Loader {
    samples: Vec<(Sample, Weighting)>,
    max_len: usize,
    pad: i64,
    seed: u64,
    pub cursor: Cursor,
    epoch_seqs: Vec<PackedSeq>,
    /// Samples too long for the context, per epoch.
    pub too_long: usize,
}

impl Loader {
    /// `weighting(task)` chooses the loss weighting of each sample for the training stage, or
    /// None to leave the sample out.
    pub fn new(
        samples: &[(Sample, Task)],
        weighting: impl Fn(Task) -> Option<Weighting>,
        max_len: usize,
        pad: i64,
        seed: u64,
        cursor: Cursor,
    ) -> Self {
        let samples: Vec<(Sample, Weighting)> =
            samples.iter().filter_map(|(s, t)| weighting(*t).map(|w| (s.clone(), w))).collect();
        let mut l =
            Loader { samples, max_len, pad, seed, cursor, epoch_seqs: Vec::new(), too_long: 0 };
        l.repack();
        l
    }

    pub fn num_samples(&self) -> usize {
        self.samples.len()
    }

    /// Packed sequences per epoch.
    pub fn epoch_len(&self) -> usize {
        self.epoch_seqs.len()
    }

    fn repack(&mut self) {
        let mut order: Vec<usize> = (0..self.samples.len()).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(
            self.seed ^ self.cursor.epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        order.shuffle(&mut rng);
        let (seqs, too_long) = pack(&self.samples, &order, self.max_len, self.pad);
        self.epoch_seqs = seqs;
        self.too_long = too_long;
    }

    /// The next `n` sequences of the global batch (crossing into the next epoch when needed).
    pub fn next_batch(&mut self, n: usize) -> Vec<PackedSeq> {
        assert!(
            !self.epoch_seqs.is_empty(),
            "no training sequences: every sample was filtered out or too long"
        );
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            if self.cursor.position >= self.epoch_seqs.len() {
                self.cursor = Cursor { epoch: self.cursor.epoch + 1, position: 0 };
                self.repack();
            }
            out.push(self.epoch_seqs[self.cursor.position].clone());
            self.cursor.position += 1;
        }
        out
    }
}

/// Rank `rank`'s rows of a global batch of `n` rows split over `world` ranks.
pub fn rank_rows(n: usize, rank: usize, world: usize) -> std::ops::Range<usize> {
    assert!(
        n.is_multiple_of(world),
        "global batch {n} must be divisible by the world size {world}"
    );
    let per = n / world;
    rank * per..(rank + 1) * per
}

#[cfg(test)]
mod tests {
    use super::*;
    use emu_tokenizer::sequence::Role;

    fn sample(n: usize, tag: i64) -> (Sample, Task) {
        (Sample { ids: vec![tag; n], roles: vec![Role::Code; n] }, Task::TextToImage)
    }

    #[test]
    fn packing_keeps_samples_whole_and_pads_the_tail() {
        let s: Vec<(Sample, Weighting)> = [3, 4, 2, 9, 5]
            .iter()
            .enumerate()
            .map(|(i, &n)| (sample(n, i as i64 + 1).0, Weighting::Full { vision: 0.5 }))
            .collect();
        let (seqs, too_long) = pack(&s, &[0, 1, 2, 3, 4], 8, 0);
        assert_eq!(too_long, 1);
        assert_eq!(seqs.len(), 2);
        assert_eq!(seqs[0].ids, vec![1, 1, 1, 2, 2, 2, 2, 0]);
        assert_eq!(seqs[0].weights, vec![0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.0]);
        assert_eq!(seqs[1].ids, vec![3, 3, 5, 5, 5, 5, 5, 0]);
        let (_, labels, _) = to_batch(&[&seqs[0]]);
        assert_eq!(labels.int64_value(&[0, 7]), IGNORE_INDEX);
    }

    #[test]
    fn the_loader_is_deterministic_and_resumes_from_its_cursor() {
        let samples: Vec<(Sample, Task)> = (0..40).map(|i| sample(1 + i % 5, i as i64)).collect();
        let w = |_| Some(Weighting::Full { vision: 1.0 });
        let mut a = Loader::new(&samples, w, 8, 0, 42, Cursor::default());
        let first: Vec<Vec<PackedSeq>> = (0..20).map(|_| a.next_batch(3)).collect();
        let mut b = Loader::new(&samples, w, 8, 0, 42, Cursor::default());
        for batch in &first[..7] {
            assert_eq!(&b.next_batch(3), batch);
        }
        let mut c = Loader::new(&samples, w, 8, 0, 42, b.cursor);
        for batch in &first[7..] {
            assert_eq!(&c.next_batch(3), batch);
        }
        assert!(a.cursor.epoch >= 1, "20 batches of 3 cross an epoch");
        let mut d = Loader::new(&samples, w, 8, 0, 43, Cursor::default());
        assert_ne!(d.next_batch(3), first[0]);
        assert_eq!(rank_rows(8, 1, 4), 2..4);
    }
}
