//! VQ tokenizer training: reconstruction (L1 and/or L2), codebook and commitment losses with a
//! straight-through estimator, an optional unquantized warmup that ends in a k-means codebook,
//! dead-code restart, and an optional PatchGAN hinge loss after a warmup. Logs PSNR and codebook
//! usage; saves a tokenizer folder in BAAI's layout.
//!
//! Shapes: B clips, T frames, 3×H×W pixels in [-1,1]; E embed_dim; K codebook size.

use crate::metrics::Metrics;
use anyhow::{Result, ensure};
use emu_tokenizer::nn::{Conv2d, Params};
use emu_tokenizer::vq::quantize::{CodeUsage, Quantizer};
use emu_tokenizer::vq::{VqConfig, VqModel};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Instant;
use tch::nn::{Adam, OptimizerConfig, VarStore};
use tch::{Device, Kind, Tensor};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VqTrainConfig {
    pub steps: i64,
    pub batch_size: i64,
    pub lr: f64,
    pub l1_weight: f64,
    pub l2_weight: f64,
    /// β: weight of the commitment loss.
    pub commitment: f64,
    /// Every this many steps, codes unused since the last restart are re-seeded.
    pub restart_every: i64,
    /// Re-seed dead codes from encoder outputs where the reconstruction is worst (instead of
    /// uniformly): in images where most patches are easy background, this is what finds the
    /// objects.
    pub restart_from_errors: bool,
    /// Weights each pixel's reconstruction loss by its own (detached) error, relative to the
    /// batch mean, raised to this power (0: plain mean). Rare, badly reconstructed content
    /// (small objects on large backgrounds) then gets the gradient it needs early on.
    pub hard_pixel_power: f64,
    /// Steps trained as a continuous autoencoder (no quantizer) before the codebook is set by
    /// k-means on the encoder's latents of the last warmup image batches (0: quantize from the
    /// start, with a random codebook). On the 32-pixel world of the time (a 3×3 grid of small
    /// shapes) with 1024 codes of 8, 200 of 600 steps lifted the share of shapes a detector reads
    /// back from reconstructions from 0.41 to 0.48 (0.56 with codes of 16).
    pub autoencoder_warmup: i64,
    /// Share of steps that train on video clips instead of images.
    pub video_every: i64,
    /// Start the temporal layers as the identity (see `VqModel::init_temporal_identity`)
    /// instead of at random.
    pub temporal_identity_init: bool,
    /// PatchGAN hinge loss from this step on (0: never).
    pub adversarial_start: i64,
    pub adversarial_weight: f64,
    pub seed: u64,
    pub log_every: i64,
    pub device: String,
}

impl Default for VqTrainConfig {
    fn default() -> Self {
        VqTrainConfig {
            steps: 500,
            batch_size: 16,
            lr: 2e-3,
            l1_weight: 1.0,
            l2_weight: 1.0,
            commitment: 0.25,
            restart_every: 50,
            restart_from_errors: true,
            hard_pixel_power: 0.0,
            autoencoder_warmup: 0,
            video_every: 0,
            temporal_identity_init: true,
            adversarial_start: 0,
            adversarial_weight: 0.1,
            seed: 0,
            log_every: 10,
            device: "cpu".into(),
        }
    }
}

/// Where training pixels come from (rendered on the fly or read from disk).
pub trait PixelSource {
    /// `[B,3,H,W]` in [-1,1].
    fn images(&mut self, b: i64) -> Tensor;
    /// `[B,T,3,H,W]` in [-1,1], T a multiple of the temporal factor.
    fn videos(&mut self, b: i64) -> Tensor;
}

/// Image batches whose latents seed the k-means codebook (with batch 16 at an 8×8 code grid:
/// 16 384 vectors, 64 per code of the default 256, 16 per code of 1024).
const KMEANS_BATCHES: i64 = 16;
/// Lloyd iterations for that k-means.
const KMEANS_ITERS: i64 = 10;

/// A PatchGAN discriminator: three strided convolutions, one logit per patch.
struct PatchGan {
    vs: VarStore,
    c1: Conv2d,
    c2: Conv2d,
    c3: Conv2d,
}

impl PatchGan {
    fn new(device: Device) -> Self {
        let vs = VarStore::new(device);
        let p = Params::new(&vs, Kind::Float);
        let (c1, c2, c3) = (
            Conv2d::new(&p.sub("c1"), 3, 32, 4, 2, 1),
            Conv2d::new(&p.sub("c2"), 32, 64, 4, 2, 1),
            Conv2d::new(&p.sub("c3"), 64, 1, 3, 1, 1),
        );
        PatchGan { vs, c1, c2, c3 }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let h = self.c1.forward(x).leaky_relu();
        let h = self.c2.forward(&h).leaky_relu();
        self.c3.forward(&h)
    }
}

/// What the loop reports each step.
pub struct VqStep {
    pub step: i64,
    pub loss: f64,
    pub psnr: f64,
    pub usage: Option<CodeUsage>,
}

/// Latent vectors (`[N,E]`, N = B·h·w) resampled in proportion to their patch's squared
/// reconstruction error (`diff`: `[B,1,3,H,W]`), so restarts land where the codebook is lacking.
fn worst_patches(z: &Tensor, diff: &Tensor, f: i64) -> Tensor {
    let err = diff.squeeze_dim(1).square().mean_dim(1, true, Kind::Float).avg_pool2d(
        [f, f],
        [f, f],
        [0, 0],
        false,
        true,
        None::<i64>,
    );
    let w = err.flatten(0, -1);
    if w.size()[0] != z.size()[0] || w.sum(Kind::Float).double_value(&[]) <= 0.0 {
        return z.shallow_clone();
    }
    let pick = w.multinomial(z.size()[0], true);
    z.index_select(0, &pick)
}

/// The weighted L1 + L2 reconstruction loss of `diff` (`[..,3,H,W]`, reconstruction minus target).
/// With `hard_pixel_power` p > 0, each pixel's loss is weighted by (e / mean e)^p, e being its
/// detached mean absolute error over channels, and the weighted mean is normalised by the mean
/// weight, so the loss keeps the scale of a plain mean.
pub fn reconstruction_loss(diff: &Tensor, cfg: &VqTrainConfig) -> Tensor {
    let per_pixel = diff.abs() * cfg.l1_weight + diff.square() * cfg.l2_weight;
    if cfg.hard_pixel_power > 0.0 {
        let e = diff.detach().abs().mean_dim(-3, true, Kind::Float);
        let w = (&e / e.mean(Kind::Float).clamp_min(1e-6)).pow_tensor_scalar(cfg.hard_pixel_power);
        (per_pixel * &w).mean(Kind::Float) / w.mean(Kind::Float).clamp_min(1e-6)
    } else {
        per_pixel.mean(Kind::Float)
    }
}

/// PSNR in dB of pixels in [-1,1].
pub fn psnr(x: &Tensor, y: &Tensor) -> f64 {
    let mse = ((x - y) / 2.0).square().mean(Kind::Float).double_value(&[]);
    if mse <= 0.0 { 100.0 } else { -10.0 * mse.log10() }
}

/// Trains a tokenizer of `config` on `data`, logging into `run`; saves it to `out`.
pub fn train_vq(
    run: &Path,
    out: &Path,
    config: &VqConfig,
    data: &mut dyn PixelSource,
    cfg: &VqTrainConfig,
    on_step: &mut dyn FnMut(&VqStep),
) -> Result<VqModel> {
    let device = crate::lm::parse_device(&cfg.device)?;
    tch::manual_seed(cfg.seed as i64);
    ensure!(
        cfg.autoencoder_warmup >= 0 && cfg.autoencoder_warmup < cfg.steps.max(1),
        "vq_train.autoencoder_warmup is {} but must lie in [0, vq_train.steps = {}): the \
         codebook is only trained after the warmup",
        cfg.autoencoder_warmup,
        cfg.steps
    );
    let vq = VqModel::new(config.clone(), device, Kind::Float)?;
    if cfg.temporal_identity_init {
        vq.init_temporal_identity();
    }
    let mut opt = Adam { beta1: 0.5, beta2: 0.9, wd: 0.0, eps: 1e-8, amsgrad: false }
        .build(&vq.vs, cfg.lr)?;
    let gan = (cfg.adversarial_start > 0).then(|| PatchGan::new(device));
    let mut dopt = match &gan {
        Some(g) => Some(
            Adam { beta1: 0.5, beta2: 0.9, wd: 0.0, eps: 1e-8, amsgrad: false }
                .build(&g.vs, cfg.lr)?,
        ),
        None => None,
    };
    // Image batches are static clips: they say nothing about time, and their gradients only
    // pull the temporal layers off what videos teach them (on the 32-pixel 3×3-grid world of the
    // time, with the shifted init, holding those layers on image steps lifted shapes read back
    // after 600 steps from 38% to 52%). So only video steps train them; Adam skips a parameter
    // whose gradient was never computed.
    let temporal: Vec<Tensor> = vq
        .temporal_parameters()
        .into_iter()
        .map(|(_, t)| t)
        .filter(|t| t.requires_grad())
        .collect();
    let k = config.codebook_size;
    let mut counts = Tensor::zeros([k], (Kind::Double, Device::Cpu));
    // Encoder latents of the last image batches before the codebook is set, for k-means.
    let mut bank: Vec<Tensor> = vec![];
    let mut metrics = Metrics::open(run, true)?;
    let started = Instant::now();
    for step in 0..cfg.steps {
        let lr = cfg.lr * crate::optim::lr_at(step, (cfg.steps / 20).max(1), cfg.steps, 1.0, 0.1);
        opt.set_lr(lr);
        let video = cfg.video_every > 0 && step % cfg.video_every == cfg.video_every - 1;
        let x = if video {
            data.videos((cfg.batch_size / 4).max(1))
        } else {
            data.images(cfg.batch_size)
        }
        .to_device(device);
        for t in &temporal {
            let _ = t.shallow_clone().set_requires_grad(video);
        }
        ensure!(
            x.min().double_value(&[]) >= -1.001 && x.max().double_value(&[]) <= 1.001,
            "training pixels must lie in [-1,1]"
        );
        let quantized = step >= cfg.autoencoder_warmup;
        if step == cfg.autoencoder_warmup && !bank.is_empty() {
            let distortion = vq.quantize.init_kmeans(&Tensor::cat(&bank, 0), KMEANS_ITERS);
            metrics.log(
                serde_json::json!({"phase": "vq", "step": step, "kmeans_distortion": distortion}),
            )?;
            bank.clear();
        }
        let f = if quantized { vq.forward_train(&x) } else { vq.forward_continuous(&x) };
        if !quantized && !video && step + KMEANS_BATCHES >= cfg.autoencoder_warmup {
            bank.push(Quantizer::rows(&f.z.detach()));
        }
        let target = if video { x.shallow_clone() } else { x.unsqueeze(1) };
        let diff = &f.recon - &target;
        let rec = reconstruction_loss(&diff, cfg);
        let mut loss =
            &rec + &f.quantized.codebook_loss + &f.quantized.commitment_loss * cfg.commitment;
        let adversarial = gan.as_ref().filter(|_| step >= cfg.adversarial_start);
        if let Some(g) = adversarial {
            let fake = f.recon.flatten(0, 1);
            loss = &loss - g.forward(&fake).mean(Kind::Float) * cfg.adversarial_weight;
        }
        opt.zero_grad();
        loss.backward();
        opt.step();
        if let (Some(g), Some(d)) = (adversarial, dopt.as_mut()) {
            // Hinge loss for the discriminator on real frames vs detached reconstructions.
            let real = target.flatten(0, 1);
            let fake = f.recon.detach().flatten(0, 1);
            let dl = (g.forward(&real).neg() + 1.0).relu().mean(Kind::Float)
                + (g.forward(&fake) + 1.0).relu().mean(Kind::Float);
            d.zero_grad();
            dl.backward();
            d.step();
        }
        if quantized {
            counts += CodeUsage::counts(&f.quantized.codes.to_device(Device::Cpu), k);
        }
        let mut usage = None;
        if quantized && cfg.restart_every > 0 && (step + 1) % cfg.restart_every == 0 {
            usage = Some(CodeUsage::from_counts(&counts));
            if step + 1 < cfg.steps * 9 / 10 {
                let z = Quantizer::rows(&f.z.detach());
                let z = if cfg.restart_from_errors && !video {
                    worst_patches(&z, &diff.detach(), config.spatial_factor())
                } else {
                    z
                };
                vq.quantize.restart_dead_codes(&counts.to_device(device), &z, 1.0);
            }
            counts = counts.zeros_like();
        }
        let p = psnr(&f.recon.detach().clamp(-1.0, 1.0), &target);
        let s = VqStep { step, loss: loss.double_value(&[]), psnr: p, usage };
        on_step(&s);
        if step % cfg.log_every.max(1) == 0 || s.usage.is_some() || step + 1 == cfg.steps {
            let mut rec = serde_json::json!({"phase": "vq", "step": step, "loss": s.loss, "psnr": p, "lr": lr, "video": video, "quantized": quantized, "elapsed_s": started.elapsed().as_secs_f64()});
            if let Some(u) = s.usage {
                rec["perplexity"] = u.perplexity.into();
                rec["dead_codes"] = u.dead_codes.into();
            }
            metrics.log(rec)?;
        }
    }
    vq.save(out)?;
    Ok(vq)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hard_pixel_power_weights_pixels_by_their_error() {
        // Two pixels of one channel: errors 0.1 and 0.4 (L1 + L2: 0.11 and 0.56 per pixel).
        let diff = Tensor::from_slice(&[0.1f32, 0.4]).view([1, 1, 2]);
        let loss = |p: f64| {
            let cfg = VqTrainConfig { hard_pixel_power: p, ..Default::default() };
            reconstruction_loss(&diff, &cfg).double_value(&[])
        };
        // p = 0: the plain mean.
        assert!((loss(0.0) - 0.335).abs() < 1e-6, "{}", loss(0.0));
        // p = 1: weights 0.4 and 1.6 (errors over their mean 0.25), normalised by their mean 1:
        // (0.4 * 0.11 + 1.6 * 0.56) / 2 = 0.47.
        assert!((loss(1.0) - 0.47).abs() < 1e-6, "{}", loss(1.0));
        // p = 2: weights 0.16 and 2.56, mean 1.36: (0.16 * 0.11 + 2.56 * 0.56) / 2 / 1.36.
        let want = (0.16 * 0.11 + 2.56 * 0.56) / 2.0 / 1.36;
        assert!((loss(2.0) - want).abs() < 1e-6, "{} vs {want}", loss(2.0));
        // The weights carry no gradient: only the per-pixel losses do.
        let x = diff.copy().set_requires_grad(true);
        let cfg = VqTrainConfig { hard_pixel_power: 1.0, ..Default::default() };
        reconstruction_loss(&x, &cfg).backward();
        // d/dx of w * (|x| + x^2) / (2 * mean w) = w * (1 + 2x) / 2.
        let g = Vec::<f32>::try_from(x.grad().flatten(0, -1)).unwrap();
        assert!((g[0] - 0.4 * 1.2 / 2.0).abs() < 1e-6 && (g[1] - 1.6 * 1.8 / 2.0).abs() < 1e-6);
    }
}
