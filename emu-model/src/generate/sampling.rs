//! Sampling one token from processed logits: temperature, top-k (separately for text and for
//! image tokens), top-p, in that order as transformers applies them, with a seeded ChaCha stream
//! per row so that the same seed always gives the same tokens.
//!
//! Shapes: V vocabulary.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SamplingConfig {
    /// 0 means greedy (argmax).
    pub temperature: f64,
    /// Top-k for text tokens (None: no limit).
    pub top_k: Option<i64>,
    /// Top-k inside images and videos (Emu3-Gen uses 2048); falls back to `top_k`.
    pub top_k_image: Option<i64>,
    /// Nucleus sampling threshold in (0, 1].
    pub top_p: Option<f64>,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        SamplingConfig { temperature: 1.0, top_k: None, top_k_image: None, top_p: None }
    }
}

impl SamplingConfig {
    pub fn greedy() -> Self {
        SamplingConfig { temperature: 0.0, ..Self::default() }
    }

    /// Whether image and video tokens are chosen deterministically (argmax or top-1).
    pub fn image_is_greedy(&self) -> bool {
        self.temperature <= 0.0 || self.top_k_image.or(self.top_k) == Some(1)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.temperature >= 0.0,
            "temperature must be >= 0, got {}",
            self.temperature
        );
        for (name, k) in [("top_k", self.top_k), ("top_k_image", self.top_k_image)] {
            anyhow::ensure!(k.is_none_or(|k| k > 0), "{name} must be positive, got {k:?}");
        }
        anyhow::ensure!(
            self.top_p.is_none_or(|p| p > 0.0 && p <= 1.0),
            "top_p must be in (0, 1], got {:?}",
            self.top_p
        );
        Ok(())
    }
}

/// Per-row random streams.
pub struct Sampler {
    pub config: SamplingConfig,
    rngs: Vec<ChaCha8Rng>,
}

impl Sampler {
    /// Row r draws from stream r of the ChaCha generator seeded with `seed`.
    pub fn new(config: SamplingConfig, seed: u64, rows: usize) -> Self {
        let rngs = (0..rows)
            .map(|r| {
                let mut g = ChaCha8Rng::seed_from_u64(seed);
                g.set_stream(r as u64);
                g
            })
            .collect();
        Sampler { config, rngs }
    }

    /// Picks a token for `row` from `logits` (`[V]`, already guided and constrained; -inf marks
    /// forbidden tokens). `image` selects the image top-k.
    pub fn sample(&mut self, row: usize, logits: &Tensor, image: bool) -> i64 {
        let c = &self.config;
        if c.temperature <= 0.0 {
            return logits.argmax(0, false).int64_value(&[]);
        }
        let scaled = logits.to_kind(Kind::Float) / c.temperature;
        let v = scaled.size()[0];
        let k = if image { c.top_k_image.or(c.top_k) } else { c.top_k };
        let (values, indices) = match k {
            Some(k) => scaled.topk(k.min(v), 0, true, true),
            None => scaled.sort(0, true),
        };
        let probs: Vec<f32> = Vec::try_from(values.softmax(0, Kind::Float)).expect("probabilities");
        let mut keep = probs.len();
        if let Some(p) = c.top_p {
            // Smallest prefix whose mass reaches p (at least one token), as transformers does.
            let mut acc = 0.0;
            for (i, &q) in probs.iter().enumerate() {
                acc += q as f64;
                if acc >= p {
                    keep = i + 1;
                    break;
                }
            }
        }
        let total: f64 = probs[..keep].iter().map(|&q| q as f64).sum();
        let u: f64 = self.rngs[row].random::<f64>() * total;
        let mut acc = 0.0;
        let mut pick = keep - 1;
        for (i, &q) in probs[..keep].iter().enumerate() {
            acc += q as f64;
            if u < acc {
                pick = i;
                break;
            }
        }
        indices.int64_value(&[pick as i64])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logits() -> Tensor {
        Tensor::from_slice(&[0.0f32, 3.0, 1.0, 2.5, f32::NEG_INFINITY, -1.0])
    }

    #[test]
    fn greedy_and_limits() {
        let mut s = Sampler::new(SamplingConfig::greedy(), 0, 1);
        assert_eq!(s.sample(0, &logits(), false), 1);
        // top-k 1 is greedy whatever the temperature.
        let mut s = Sampler::new(
            SamplingConfig { temperature: 5.0, top_k: Some(1), ..Default::default() },
            3,
            1,
        );
        assert!((0..50).all(|_| s.sample(0, &logits(), false) == 1));
        // top-k 2 only ever yields the two best tokens; the image top-k applies inside images.
        let cfg = SamplingConfig {
            temperature: 1.0,
            top_k: Some(2),
            top_k_image: Some(3),
            ..Default::default()
        };
        let mut s = Sampler::new(cfg, 4, 1);
        let text: std::collections::BTreeSet<i64> =
            (0..200).map(|_| s.sample(0, &logits(), false)).collect();
        assert_eq!(text, [1, 3].into());
        let img: std::collections::BTreeSet<i64> =
            (0..400).map(|_| s.sample(0, &logits(), true)).collect();
        assert_eq!(img, [1, 2, 3].into());
        // top-p 0.5: token 1 alone holds more than half the mass.
        let mut s = Sampler::new(SamplingConfig { top_p: Some(0.5), ..Default::default() }, 5, 1);
        assert!((0..50).all(|_| s.sample(0, &logits(), false) == 1));
        // A forbidden token is never drawn.
        let mut s = Sampler::new(SamplingConfig { temperature: 100.0, ..Default::default() }, 6, 1);
        assert!((0..500).all(|_| s.sample(0, &logits(), false) != 4));
    }

    #[test]
    fn same_seed_same_tokens_and_rows_are_independent_streams() {
        let draw = |seed, row| {
            let mut s = Sampler::new(SamplingConfig::default(), seed, 2);
            (0..30).map(|_| s.sample(row, &logits(), false)).collect::<Vec<_>>()
        };
        assert_eq!(draw(9, 0), draw(9, 0));
        assert_ne!(draw(9, 0), draw(10, 0));
        assert_ne!(draw(9, 0), draw(9, 1));
    }

    #[test]
    fn empirical_frequencies_follow_the_softmax() {
        let mut s = Sampler::new(SamplingConfig::default(), 1, 1);
        let l = Tensor::from_slice(&[0.0f32, (3f32).ln()]);
        let n = 4000;
        let ones = (0..n).filter(|_| s.sample(0, &l, false) == 1).count() as f64 / n as f64;
        assert!((ones - 0.75).abs() < 0.03, "{ones}");
    }
}
