//! The language model's small layers: bias-free linear, RMSNorm, token embedding, RoPE.
//!
//! Shapes: B batch, L tokens, D hidden, H heads, Dh head dim, V vocabulary.

use emu_tokenizer::nn::Params;
use tch::nn::Init;
use tch::{Kind, Tensor};

/// `nn.Linear(bias=False)`: `[..., In] -> [..., Out]`.
pub struct Linear {
    pub weight: Tensor,
}

impl Linear {
    pub fn new(p: &Params<'_>, d_in: i64, d_out: i64, std: f64) -> Self {
        Linear { weight: p.var("weight", &[d_out, d_in], Init::Randn { mean: 0.0, stdev: std }) }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.matmul(&self.weight.tr())
    }
}

/// RMSNorm computed in f32 whatever the activations' dtype, then cast back before the scale.
pub struct RmsNorm {
    pub weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    pub fn new(p: &Params<'_>, d: i64, eps: f64) -> Self {
        RmsNorm { weight: p.var("weight", &[d], Init::Const(1.0)), eps }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let kind = x.kind();
        let x32 = x.to_kind(Kind::Float);
        let var = x32.square().mean_dim(-1, true, Kind::Float);
        &self.weight * (x32 * (var + self.eps).rsqrt()).to_kind(kind)
    }
}

/// Token embedding; the padding row gets no gradient, as in the reference.
pub struct Embedding {
    pub weight: Tensor,
    padding_idx: i64,
}

impl Embedding {
    pub fn new(p: &Params<'_>, vocab: i64, d: i64, padding_idx: i64, std: f64) -> Self {
        Embedding {
            weight: p.var("weight", &[vocab, d], Init::Randn { mean: 0.0, stdev: std }),
            padding_idx,
        }
    }

    /// `[B,L] -> [B,L,D]`.
    pub fn forward(&self, ids: &Tensor) -> Tensor {
        Tensor::embedding(&self.weight, ids, self.padding_idx, false, false)
    }
}

/// Rotary position embedding (rotate-half form), cos/sin computed in f32.
pub struct Rope {
    inv_freq: Tensor,
}

impl Rope {
    pub fn new(head_dim: i64, theta: f64, device: tch::Device) -> Self {
        let exponents = Tensor::arange_start_step(0, head_dim, 2, (Kind::Int64, device))
            .to_kind(Kind::Float)
            / head_dim as f64;
        let inv_freq =
            Tensor::from(theta).to_kind(Kind::Float).to_device(device).pow(&exponents).reciprocal();
        Rope { inv_freq }
    }

    /// `positions: [B,L]` -> (cos, sin) `[B,1,L,Dh]` in `kind`.
    pub fn cos_sin(&self, positions: &Tensor, kind: Kind) -> (Tensor, Tensor) {
        let freqs = positions.to_kind(Kind::Float).unsqueeze(-1) * self.inv_freq.view([1, 1, -1]);
        let emb = Tensor::cat(&[&freqs, &freqs], -1).unsqueeze(1);
        (emb.cos().to_kind(kind), emb.sin().to_kind(kind))
    }

    /// `x: [B,H,L,Dh]`.
    pub fn apply(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Tensor {
        let half = x.size()[3] / 2;
        let (x1, x2) = (x.narrow(3, 0, half), x.narrow(3, half, half));
        let rotated = Tensor::cat(&[&x2.neg(), &x1], 3);
        x * cos + rotated * sin
    }
}
