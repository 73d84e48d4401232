//! Gradient synchronisation and the optimizer step across ranks: plain DDP (gradients summed in
//! buckets, every rank runs the full AdamW) or ZeRO-1 (gradients reduce-scattered, each rank keeps
//! and updates only its shard of the optimizer state, parameters all-gathered). With one process
//! both reduce to ordinary AdamW.
//!
//! Every rank divides its loss by the *global* weight sum before backward, so gradients are summed
//! (not averaged) and equal the single-process gradient of the same global batch.
//!
//! Shapes: N parameters flattened, padded to Np = world·S; S elements per rank's shard.

use crate::dist::Dist;
use crate::optim::{AdamW, AdamWConfig, Decay, Moments, adamw_update};
use anyhow::Result;
use tch::{Kind, Tensor};

/// Bucket size for DDP's all-reduce, in elements (25 M floats = 100 MB, as torch's default).
const BUCKET: i64 = 25 * 1024 * 1024;

/// How parameters are updated.
pub enum Updater {
    Ddp(AdamW),
    Zero1(Zero1),
}

impl Updater {
    pub fn new(
        params: Vec<(String, Tensor)>,
        decays: impl Fn(&str) -> bool,
        cfg: AdamWConfig,
        zero1: bool,
        dist: &Dist,
    ) -> Self {
        if zero1 {
            Updater::Zero1(Zero1::new(params, decays, cfg, dist))
        } else {
            Updater::Ddp(AdamW::new(params, decays, cfg))
        }
    }

    pub fn params(&self) -> &[(String, Tensor)] {
        match self {
            Updater::Ddp(o) => &o.params,
            Updater::Zero1(z) => &z.params,
        }
    }

    pub fn step_count(&self) -> i64 {
        match self {
            Updater::Ddp(o) => o.step,
            Updater::Zero1(z) => z.step,
        }
    }

    /// Synchronises gradients, clips them to `clip` (global L2 norm), and steps. Returns the norm
    /// before clipping.
    pub fn step(&mut self, dist: &Dist, lr: f64, clip: f64) -> Result<f64> {
        match self {
            Updater::Ddp(opt) => {
                let grads: Vec<Tensor> = opt.params.iter().map(|(_, p)| p.grad()).collect();
                all_reduce_buckets(dist, &grads)?;
                let ps: Vec<Tensor> = opt.params.iter().map(|(_, p)| p.shallow_clone()).collect();
                let norm = crate::optim::clip_grad_norm(&ps, clip);
                opt.step(lr);
                Ok(norm)
            }
            Updater::Zero1(z) => z.step(dist, lr, clip),
        }
    }

    pub fn zero_grad(&mut self) {
        for (_, p) in self.params() {
            let mut g = p.grad();
            if g.defined() {
                let _ = g.zero_();
            }
        }
    }

    /// The full optimizer state as named tensors (gathered from every rank under ZeRO-1), so a
    /// checkpoint resumes at any world size. Collective under ZeRO-1: every rank must call it.
    pub fn state_tensors(&self, dist: &Dist) -> Result<Vec<(String, Tensor)>> {
        match self {
            Updater::Ddp(o) => Ok(o.state_tensors()),
            Updater::Zero1(z) => z.gathered_state(dist),
        }
    }

    /// Loads moments written by [`state_tensors`](Self::state_tensors); `step` is the step count.
    pub fn load_state(&mut self, lookup: &dyn Fn(&str) -> Result<Tensor>, step: i64) -> Result<()> {
        match self {
            Updater::Ddp(o) => {
                for (i, (name, _)) in o.params.iter().enumerate() {
                    tch::no_grad(|| -> Result<()> {
                        o.state[i].exp_avg.copy_(&lookup(&format!("exp_avg.{name}"))?);
                        o.state[i].exp_avg_sq.copy_(&lookup(&format!("exp_avg_sq.{name}"))?);
                        Ok(())
                    })?;
                }
                o.step = step;
            }
            Updater::Zero1(z) => z.load_state(lookup, step)?,
        }
        Ok(())
    }
}

/// Sums gradients over ranks in buckets of about [`BUCKET`] elements.
fn all_reduce_buckets(dist: &Dist, grads: &[Tensor]) -> Result<()> {
    if dist.world() == 1 {
        return Ok(());
    }
    let mut i = 0;
    while i < grads.len() {
        let mut j = i;
        let mut n = 0;
        while j < grads.len() && (j == i || n + grads[j].numel() as i64 <= BUCKET) {
            n += grads[j].numel() as i64;
            j += 1;
        }
        let flat =
            Tensor::cat(&grads[i..j].iter().map(|g| g.flatten(0, -1)).collect::<Vec<_>>(), 0);
        dist.all_reduce_sum(&flat)?;
        let mut off = 0;
        for g in &grads[i..j] {
            let n = g.numel() as i64;
            tch::no_grad(|| g.shallow_clone().copy_(&flat.narrow(0, off, n).view_as(g)));
            off += n;
        }
        i = j;
    }
    Ok(())
}

/// ZeRO-1: this rank's shard of the flattened parameters' optimizer state.
pub struct Zero1 {
    pub params: Vec<(String, Tensor)>,
    cfg: AdamWConfig,
    /// Offsets of each parameter in the flat vector.
    offsets: Vec<i64>,
    shard: i64,
    rank: i64,
    state: Moments,
    decay_mask: Tensor,
    pub step: i64,
}

impl Zero1 {
    fn new(
        params: Vec<(String, Tensor)>,
        decays: impl Fn(&str) -> bool,
        cfg: AdamWConfig,
        dist: &Dist,
    ) -> Self {
        let world = dist.world() as i64;
        let mut offsets = Vec::with_capacity(params.len() + 1);
        let mut n = 0;
        let mut mask = Vec::new();
        for (name, p) in &params {
            offsets.push(n);
            let k = p.numel() as i64;
            mask.push(Tensor::full(
                [k],
                if decays(name) { 1.0 } else { 0.0 },
                (Kind::Float, p.device()),
            ));
            n += k;
        }
        offsets.push(n);
        let shard = (n + world - 1) / world;
        let device = params.first().map_or(tch::Device::Cpu, |(_, p)| p.device());
        let mask = Tensor::cat(&mask, 0);
        let mask =
            Tensor::cat(&[mask, Tensor::zeros([shard * world - n], (Kind::Float, device))], 0);
        let rank = dist.rank() as i64;
        let decay_mask = mask.narrow(0, rank * shard, shard).contiguous();
        let z = Tensor::zeros([shard], (Kind::Float, device));
        Zero1 {
            params,
            cfg,
            offsets,
            shard,
            rank,
            state: Moments { exp_avg: z.zeros_like(), exp_avg_sq: z },
            decay_mask,
            step: 0,
        }
    }

    fn total(&self) -> i64 {
        *self.offsets.last().expect("offsets end with the total")
    }

    /// Flattens `f(param)` for every parameter, padded to world·shard.
    fn flat(&self, world: i64, f: impl Fn(&Tensor) -> Tensor) -> Tensor {
        let parts: Vec<Tensor> =
            self.params.iter().map(|(_, p)| f(p).to_kind(Kind::Float).flatten(0, -1)).collect();
        let device = self.decay_mask.device();
        let pad = Tensor::zeros([self.shard * world - self.total()], (Kind::Float, device));
        Tensor::cat(&[Tensor::cat(&parts, 0), pad], 0)
    }

    fn step(&mut self, dist: &Dist, lr: f64, clip: f64) -> Result<f64> {
        let world = dist.world() as i64;
        let grads = self.flat(world, |p| {
            let g = p.grad();
            if g.defined() { g } else { p.zeros_like() }
        });
        let g = Tensor::zeros([self.shard], (Kind::Float, grads.device()));
        dist.reduce_scatter_sum(&g, &grads)?;
        let sq = g.square().sum(Kind::Float).reshape([1]);
        dist.all_reduce_sum(&sq)?;
        let norm = sq.double_value(&[0]).sqrt();
        if norm > clip && clip > 0.0 {
            let _ = tch::no_grad(|| g.shallow_clone().f_mul_scalar_(clip / (norm + 1e-6)));
        }
        self.step += 1;
        let p = self
            .flat(world, |p| p.detach())
            .narrow(0, self.rank * self.shard, self.shard)
            .contiguous();
        adamw_update(
            &p,
            &g,
            &mut self.state,
            &Decay::Mask(self.decay_mask.shallow_clone()),
            &self.cfg,
            lr,
            self.step,
        );
        let all = Tensor::zeros([self.shard * world], (Kind::Float, p.device()));
        dist.all_gather(&all, &p)?;
        tch::no_grad(|| {
            for (i, (_, param)) in self.params.iter().enumerate() {
                let (a, b) = (self.offsets[i], self.offsets[i + 1]);
                param.shallow_clone().copy_(&all.narrow(0, a, b - a).view_as(param));
            }
        });
        Ok(norm)
    }

    fn gathered_state(&self, dist: &Dist) -> Result<Vec<(String, Tensor)>> {
        let world = dist.world() as i64;
        let mut out = Vec::new();
        for (which, t) in [("exp_avg", &self.state.exp_avg), ("exp_avg_sq", &self.state.exp_avg_sq)]
        {
            let all = Tensor::zeros([self.shard * world], (Kind::Float, t.device()));
            dist.all_gather(&all, t)?;
            for (i, (name, p)) in self.params.iter().enumerate() {
                let (a, b) = (self.offsets[i], self.offsets[i + 1]);
                out.push((format!("{which}.{name}"), all.narrow(0, a, b - a).view_as(p).copy()));
            }
        }
        Ok(out)
    }

    fn load_state(&mut self, lookup: &dyn Fn(&str) -> Result<Tensor>, step: i64) -> Result<()> {
        for (which, dst) in
            [("exp_avg", &self.state.exp_avg), ("exp_avg_sq", &self.state.exp_avg_sq)]
        {
            let parts = self
                .params
                .iter()
                .map(|(name, _)| Ok(lookup(&format!("{which}.{name}"))?.flatten(0, -1)))
                .collect::<Result<Vec<_>>>()?;
            let flat = Tensor::cat(&parts, 0);
            let n = flat.numel() as i64;
            let start = self.rank * self.shard;
            let len = (n - start).clamp(0, self.shard);
            tch::no_grad(|| {
                let _ = dst.shallow_clone().zero_();
                if len > 0 {
                    dst.narrow(0, 0, len).copy_(&flat.narrow(0, start, len));
                }
            });
        }
        self.step = step;
        Ok(())
    }
}
