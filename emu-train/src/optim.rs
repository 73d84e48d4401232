//! AdamW exactly as `torch.optim.AdamW` computes it, the learning-rate schedule (linear warmup,
//! cosine decay), and global gradient-norm clipping.
//!
//! The update works on "slots": a slot is one parameter tensor, or (under ZeRO-1) one rank's
//! shard of all parameters flattened into one vector, so the same arithmetic serves both.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdamWConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    /// Emu3's pretraining betas (0.9, 0.95).
    fn default() -> Self {
        AdamWConfig { lr: 1e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1 }
    }
}

/// Which elements weight decay applies to.
pub enum Decay {
    /// Every element (1) or none (0).
    All(bool),
    /// Per element, 1.0 or 0.0 (a flattened shard spanning several parameters).
    Mask(Tensor),
}

/// The first and second moments of one slot.
pub struct Moments {
    pub exp_avg: Tensor,
    pub exp_avg_sq: Tensor,
}

impl Moments {
    pub fn zeros_like(p: &Tensor) -> Self {
        let z = || Tensor::zeros(p.size(), (Kind::Float, p.device()));
        Moments { exp_avg: z(), exp_avg_sq: z() }
    }
}

/// One AdamW step (1-based `step`) on `param` with `grad`, as torch's single-tensor AdamW:
/// decoupled decay, then the bias-corrected update.
pub fn adamw_update(
    param: &Tensor,
    grad: &Tensor,
    m: &mut Moments,
    decay: &Decay,
    cfg: &AdamWConfig,
    lr: f64,
    step: i64,
) {
    tch::no_grad(|| {
        let mut p = param.shallow_clone();
        let g = grad.to_kind(Kind::Float);
        match decay {
            Decay::All(true) => {
                let _ = p.f_mul_scalar_(1.0 - lr * cfg.weight_decay).expect("decay");
            }
            Decay::All(false) => {}
            Decay::Mask(mask) => {
                let factor = mask * (-lr * cfg.weight_decay) + 1.0;
                let _ = p.f_mul_(&factor).expect("masked decay");
            }
        }
        let _ = m.exp_avg.lerp_(&g, 1.0 - cfg.beta1);
        let _ = m.exp_avg_sq.f_mul_scalar_(cfg.beta2).expect("second moment");
        let _ = m.exp_avg_sq.addcmul_(&g, &(&g * (1.0 - cfg.beta2)));
        let bc1 = 1.0 - cfg.beta1.powi(step as i32);
        let bc2 = 1.0 - cfg.beta2.powi(step as i32);
        let step_size = lr / bc1;
        let denom = m.exp_avg_sq.sqrt() / bc2.sqrt() + cfg.eps;
        let update = (&m.exp_avg / denom) * (-step_size);
        let _ = p.f_add_(&update.to_kind(p.kind())).expect("update");
    });
}

/// AdamW over named parameters, one slot per parameter.
pub struct AdamW {
    pub config: AdamWConfig,
    pub params: Vec<(String, Tensor)>,
    pub decay: Vec<bool>,
    pub state: Vec<Moments>,
    /// Steps taken so far.
    pub step: i64,
}

impl AdamW {
    /// `decays(name)` says whether weight decay applies to a parameter.
    pub fn new(
        params: Vec<(String, Tensor)>,
        decays: impl Fn(&str) -> bool,
        config: AdamWConfig,
    ) -> Self {
        let decay = params.iter().map(|(n, _)| decays(n)).collect();
        let state = params.iter().map(|(_, p)| Moments::zeros_like(p)).collect();
        AdamW { config, params, decay, state, step: 0 }
    }

    /// One step at learning rate `lr` with the parameters' current gradients.
    pub fn step(&mut self, lr: f64) {
        self.step += 1;
        for (i, (_, p)) in self.params.iter().enumerate() {
            let g = p.grad();
            if !g.defined() {
                continue;
            }
            adamw_update(
                p,
                &g,
                &mut self.state[i],
                &Decay::All(self.decay[i]),
                &self.config,
                lr,
                self.step,
            );
        }
    }

    pub fn zero_grad(&mut self) {
        for (_, p) in self.params.iter_mut() {
            p.zero_grad();
        }
    }

    /// Moments as named tensors (`exp_avg.<param>`, `exp_avg_sq.<param>`), for checkpoints.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::with_capacity(2 * self.params.len());
        for ((name, _), m) in self.params.iter().zip(&self.state) {
            out.push((format!("exp_avg.{name}"), m.exp_avg.shallow_clone()));
            out.push((format!("exp_avg_sq.{name}"), m.exp_avg_sq.shallow_clone()));
        }
        out
    }
}

/// Linear warmup to `peak`, then cosine decay to `min` at `total` steps (`step` is 0-based).
pub fn lr_at(step: i64, warmup: i64, total: i64, peak: f64, min: f64) -> f64 {
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let span = (total - warmup).max(1) as f64;
    let progress = ((step - warmup) as f64 / span).clamp(0.0, 1.0);
    min + 0.5 * (peak - min) * (1.0 + (std::f64::consts::PI * progress).cos())
}

/// Scales gradients so that their global L2 norm is at most `max_norm`; returns the norm before.
pub fn clip_grad_norm(params: &[Tensor], max_norm: f64) -> f64 {
    tch::no_grad(|| {
        let grads: Vec<Tensor> = params.iter().map(|p| p.grad()).filter(|g| g.defined()).collect();
        if grads.is_empty() {
            return 0.0;
        }
        let sq: Vec<Tensor> =
            grads.iter().map(|g| g.to_kind(Kind::Float).square().sum(Kind::Float)).collect();
        let norm = Tensor::stack(&sq, 0).sum(Kind::Float).sqrt().double_value(&[]);
        if norm > max_norm && max_norm > 0.0 {
            let scale = max_norm / (norm + 1e-6);
            for mut g in grads {
                let _ = g.f_mul_scalar_(scale).expect("clip");
            }
        }
        norm
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn one_step_matches_a_hand_computation() {
        // After one step with bias correction, the update is lr * g / (|g| + eps') ≈ lr * sign(g).
        let p = Tensor::from_slice(&[1.0f32, -2.0]).set_requires_grad(true);
        (&p * Tensor::from_slice(&[3.0f32, -0.5])).sum(Kind::Float).backward();
        let cfg = AdamWConfig { lr: 0.1, weight_decay: 0.5, ..Default::default() };
        let mut opt = AdamW::new(vec![("w".into(), p.shallow_clone())], |_| true, cfg);
        opt.step(0.1);
        let got: Vec<f32> = Vec::try_from(p.detach()).unwrap();
        // decay: p * (1 - 0.05); then -0.1 * g / (|g| + 1e-8)
        let want = [1.0 * 0.95 - 0.1, -2.0 * 0.95 + 0.1];
        for (g, w) in got.iter().zip(want) {
            assert!((*g as f64 - w).abs() < 1e-6, "{got:?} vs {want:?}");
        }
    }

    #[test]
    fn schedule_and_clipping() {
        assert!((lr_at(0, 10, 100, 1.0, 0.1) - 0.1).abs() < 1e-12);
        assert!((lr_at(9, 10, 100, 1.0, 0.1) - 1.0).abs() < 1e-12);
        assert!((lr_at(55, 10, 100, 1.0, 0.1) - 0.55).abs() < 1e-12);
        assert!((lr_at(100, 10, 100, 1.0, 0.1) - 0.1).abs() < 1e-12);
        let p = Tensor::zeros([2], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        (&p * Tensor::from_slice(&[3.0f32, 4.0])).sum(Kind::Float).backward();
        let norm = clip_grad_norm(std::slice::from_ref(&p), 1.0);
        assert!((norm - 5.0).abs() < 1e-6);
        let g: Vec<f32> = Vec::try_from(p.grad()).unwrap();
        assert!((g[0] - 0.6).abs() < 1e-5 && (g[1] - 0.8).abs() < 1e-5, "{g:?}");
    }

    #[test]
    fn masked_decay_equals_per_parameter_decay() {
        let cfg = AdamWConfig::default();
        let a = Tensor::from_slice(&[1.0f32, 2.0, 3.0]);
        let g = Tensor::from_slice(&[0.1f32, -0.2, 0.3]);
        let b = a.copy();
        let mut mb = Moments::zeros_like(&b);
        adamw_update(
            &a.narrow(0, 0, 2),
            &g.narrow(0, 0, 2),
            &mut Moments::zeros_like(&a.narrow(0, 0, 2)),
            &Decay::All(true),
            &cfg,
            0.01,
            1,
        );
        adamw_update(
            &a.narrow(0, 2, 1),
            &g.narrow(0, 2, 1),
            &mut Moments::zeros_like(&a.narrow(0, 2, 1)),
            &Decay::All(false),
            &cfg,
            0.01,
            1,
        );
        adamw_update(
            &b,
            &g,
            &mut mb,
            &Decay::Mask(Tensor::from_slice(&[1.0f32, 1.0, 0.0])),
            &cfg,
            0.01,
            1,
        );
        assert!(a.allclose(&b, 0.0, 1e-7, false));
    }
}
