//! The nearest-code quantizer and the pieces VQ training needs: the straight-through estimator,
//! codebook and commitment losses, usage statistics, and dead-code restart.
//!
//! Shapes: B batch, T' latent frames, E embed_dim, h/w latent grid, K codebook size,
//! N = B·T'·h·w latent vectors.

use crate::nn::Params;
use tch::nn::Init;
use tch::{Kind, Tensor};

pub struct Embedding {
    pub weight: Tensor,
}

pub struct Quantizer {
    pub embedding: Embedding,
}

/// What one quantization step produced, for training.
pub struct Quantized {
    /// `[B,T',E,h,w]`: the codes' vectors with the encoder's gradient passed straight through.
    pub z_q: Tensor,
    /// `[B,T',h,w]` i64.
    pub codes: Tensor,
    /// ‖sg(z) − e‖²: moves the codebook toward the encoder outputs.
    pub codebook_loss: Tensor,
    /// ‖z − sg(e)‖²: keeps the encoder committed to its codes.
    pub commitment_loss: Tensor,
}

impl Quantizer {
    pub fn new(p: &Params<'_>, codebook_size: i64, embed_dim: i64) -> Self {
        let bound = 1.0 / codebook_size as f64;
        let weight = p.sub("embedding").var(
            "weight",
            &[codebook_size, embed_dim],
            Init::Uniform { lo: -bound, up: bound },
        );
        Quantizer { embedding: Embedding { weight } }
    }

    pub fn codebook_size(&self) -> i64 {
        self.embedding.weight.size()[0]
    }

    /// The latent vectors as rows, in code order: `[B,T',E,h,w] -> [N,E]`.
    pub fn rows(z: &Tensor) -> Tensor {
        let e = z.size5().expect("the quantizer takes [B,T',E,h,w]").2;
        z.permute([0, 1, 3, 4, 2]).reshape([-1, e])
    }

    /// Nearest code by squared L2 distance, lowest index on ties: `[B,T',E,h,w] -> [B,T',h,w]`.
    pub fn codes(&self, z: &Tensor) -> Tensor {
        let (b, t, _, h, w) = z.size5().expect("the quantizer takes [B,T',E,h,w]");
        let flat = Self::rows(z);
        let cb = &self.embedding.weight;
        // The reference's expansion, term for term, so near-ties break the same way.
        let d = flat.pow_tensor_scalar(2).sum_dim_intlist(1, true, None)
            + cb.pow_tensor_scalar(2).sum_dim_intlist(1, false, None)
            - flat.matmul(&cb.tr()) * 2.0;
        d.argmin(1, false).reshape([b, t, h, w])
    }

    /// The code vectors: `[B,T',h,w] -> [B,T',E,h,w]`.
    pub fn lookup(&self, codes: &Tensor) -> Tensor {
        let k = self.codebook_size();
        let (lo, hi) = (codes.min().int64_value(&[]), codes.max().int64_value(&[]));
        assert!(lo >= 0 && hi < k, "codes must lie in [0, {k}), got [{lo}, {hi}]");
        Tensor::embedding(&self.embedding.weight, codes, -1, false, false).permute([0, 1, 4, 2, 3])
    }

    /// Quantizes with a straight-through gradient and the two VQ-VAE losses (means over N·E).
    pub fn quantize(&self, z: &Tensor) -> Quantized {
        let codes = self.codes(&z.detach());
        let e = self.lookup(&codes);
        let codebook_loss = (&e - z.detach()).square().mean(Kind::Float);
        let commitment_loss = (z - e.detach()).square().mean(Kind::Float);
        let z_q = z + (&e - z).detach();
        Quantized { z_q, codes, codebook_loss, commitment_loss }
    }

    /// Replaces every code used fewer than `min_count` times in `counts` by a random encoder
    /// output from `z` (`[N,E]`) plus a little noise; returns how many codes were restarted.
    pub fn restart_dead_codes(&self, counts: &Tensor, z: &Tensor, min_count: f64) -> i64 {
        tch::no_grad(|| {
            let dead = counts.lt(min_count).nonzero().squeeze_dim(1);
            let n = dead.size()[0];
            if n == 0 || z.size()[0] == 0 {
                return 0;
            }
            let pick = Tensor::randint(z.size()[0], [n], (Kind::Int64, z.device()));
            let fresh = z.index_select(0, &pick);
            let fresh = &fresh + fresh.randn_like() * 0.01 * fresh.std(false).double_value(&[]);
            let _ = self.embedding.weight.shallow_clone().index_copy_(
                0,
                &dead,
                &fresh.to_kind(self.embedding.weight.kind()),
            );
            n
        })
    }

    /// Sets the codebook to `iters` rounds of Lloyd's k-means over `z` (`[N,E]`), seeded by
    /// k-means++ (each next seed drawn in proportion to its squared distance from the seeds so
    /// far, so no two land in one cluster by chance). A cluster left empty takes a random row of
    /// `z`. Started from encoder outputs, every code is in use from the first quantized step,
    /// where a uniform random codebook leaves most of them dead and merges what the encoder had
    /// learned to tell apart. Returns the mean squared distance of `z` to its nearest centroid.
    pub fn init_kmeans(&self, z: &Tensor, iters: i64) -> f64 {
        let (n, e) = z.size2().expect("k-means takes [N,E] latent vectors");
        let k = self.codebook_size();
        assert!(n > 0, "k-means needs at least one latent vector");
        assert_eq!(e, self.embedding.weight.size()[1], "latent width must equal embed_dim");
        tch::no_grad(|| {
            let x = z.to_kind(Kind::Float);
            let opts = (Kind::Int64, x.device());
            let sq_dist = |c: &Tensor| (&x - c).square().sum_dim_intlist(1, false, Kind::Float);
            let mut seeds = vec![x.get(Tensor::randint(n, [1], opts).int64_value(&[0]))];
            let mut closest = sq_dist(&seeds[0]);
            for _ in 1..k {
                // Every row already a seed (fewer distinct rows than codes): draw uniformly.
                let pick = if closest.sum(Kind::Float).double_value(&[]) > 0.0 {
                    closest.multinomial(1, false).int64_value(&[0])
                } else {
                    Tensor::randint(n, [1], opts).int64_value(&[0])
                };
                let seed = x.get(pick);
                closest = closest.minimum(&sq_dist(&seed));
                seeds.push(seed);
            }
            let mut c = Tensor::stack(&seeds, 0);
            let x_sq = x.square().sum_dim_intlist(1, true, Kind::Float);
            let ones = Tensor::ones([n], (Kind::Float, x.device()));
            let nearest = |c: &Tensor| {
                let d = &x_sq + c.square().sum_dim_intlist(1, false, Kind::Float).unsqueeze(0)
                    - x.matmul(&c.tr()) * 2.0;
                d.min_dim(1, false)
            };
            for _ in 0..iters {
                let (_, a) = nearest(&c);
                let sums = c.zeros_like().index_add(0, &a, &x);
                let count = Tensor::zeros([k], (Kind::Float, x.device())).index_add(0, &a, &ones);
                let mean = sums / count.clamp_min(1.0).unsqueeze(1);
                let refill = x.index_select(0, &Tensor::randint(n, [k], opts));
                c = mean.where_self(&count.gt(0.0).unsqueeze(1), &refill);
            }
            let (d, _) = nearest(&c);
            self.embedding.weight.shallow_clone().copy_(&c.to_kind(self.embedding.weight.kind()));
            d.clamp_min(0.0).mean(Kind::Float).double_value(&[])
        })
    }
}

/// Codebook usage over a set of codes: the perplexity of the empirical code distribution (K for
/// uniform use, 1 for a single code) and how many codes never occur.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CodeUsage {
    pub perplexity: f64,
    pub dead_codes: i64,
    pub codebook_size: i64,
}

impl CodeUsage {
    /// `counts`: `[K]` occurrences of each code.
    pub fn from_counts(counts: &Tensor) -> Self {
        let counts = counts.to_kind(Kind::Double);
        let total = counts.sum(Kind::Double).double_value(&[]);
        let k = counts.size()[0];
        let dead_codes = counts.eq(0.0).sum(Kind::Int64).int64_value(&[]);
        let perplexity = if total == 0.0 {
            0.0
        } else {
            let p = &counts / total;
            let ent = -(&p * p.clamp_min(1e-30).log()).sum(Kind::Double).double_value(&[]);
            ent.exp()
        };
        CodeUsage { perplexity, dead_codes, codebook_size: k }
    }

    /// Counts of each code in `codes` (any shape), for a codebook of `k`.
    pub fn counts(codes: &Tensor, k: i64) -> Tensor {
        codes.flatten(0, -1).bincount::<Tensor>(None, k).to_kind(Kind::Double)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, nn::VarStore};

    #[test]
    fn nearest_code_breaks_ties_toward_the_lowest_index() {
        let vs = VarStore::new(Device::Cpu);
        let q = Quantizer::new(&Params::new(&vs, Kind::Float), 4, 2);
        tch::no_grad(|| {
            q.embedding
                .weight
                .shallow_clone()
                .copy_(&Tensor::from_slice(&[1f32, 0., -1., 0., 1., 0., 0., 5.]).reshape([4, 2]))
        });
        // [0,0] is equally far from codes 0, 1 and 2.
        let z = Tensor::from_slice(&[0f32, 0., 0.9, 0.1, 0.1, 4.0]).reshape([3, 2]);
        let z = z.tr().reshape([1, 1, 2, 1, 3]);
        let codes = q.codes(&z);
        assert_eq!(Vec::<i64>::try_from(codes.flatten(0, -1)).unwrap(), vec![0, 0, 3]);
    }

    #[test]
    fn usage_statistics_match_hand_computed_values() {
        let u = CodeUsage::from_counts(&Tensor::from_slice(&[5f64, 5., 0., 0.]));
        assert!((u.perplexity - 2.0).abs() < 1e-9);
        assert_eq!(u.dead_codes, 2);
        let u = CodeUsage::from_counts(&Tensor::from_slice(&[1f64, 1., 1., 1.]));
        assert!((u.perplexity - 4.0).abs() < 1e-9);
        let c = CodeUsage::counts(&Tensor::from_slice(&[0i64, 3, 3, 1]), 5);
        assert_eq!(Vec::<f64>::try_from(c).unwrap(), vec![1., 1., 0., 2., 0.]);
    }

    #[test]
    fn kmeans_finds_well_separated_clusters() {
        let vs = VarStore::new(Device::Cpu);
        let centres = Tensor::from_slice(&[5f32, 5., -5., 5., -5., -5., 5., -5.]).reshape([4, 2]);
        // Random seeding puts two of four seeds in one cluster most of the time; k-means++ must
        // find all four under every seed.
        for seed in 0..8 {
            tch::manual_seed(seed);
            let q = Quantizer::new(&Params::new(&vs, Kind::Float), 4, 2);
            // 50 points around each centre, with noise far smaller than the gaps between them: at
            // 0.1 k-means++ still put two seeds in one cluster once in about 1300 draws.
            let z = centres.repeat_interleave_self_int(50, 0, None)
                + Tensor::randn([200, 2], (Kind::Float, Device::Cpu)) * 0.01;
            let distortion = q.init_kmeans(&z, 10);
            // Lloyd's fixed point: each code is the mean of its own cluster's points, and the
            // distortion is their mean squared distance from it. Measured against the sample
            // itself, not the true centres: the seed does not fix the draw, since the other tests
            // of this binary draw from torch's one generator at the same time.
            let cb = q.embedding.weight.detach();
            let mut within = 0.0;
            for i in 0..4 {
                let pts = z.narrow(0, 50 * i, 50);
                let mean = pts.mean_dim(0, false, Kind::Float);
                within += (&pts - &mean).square().sum(Kind::Float).double_value(&[]);
                let d = (&cb - &mean).square().sum_dim_intlist(1, false, Kind::Float);
                let near = d.min().double_value(&[]).sqrt();
                assert!(
                    near < 1e-4,
                    "seed {seed}: cluster {i} mean is {near} from its nearest code"
                );
            }
            let within = within / 200.0;
            assert!(
                (distortion - within).abs() < 2e-5,
                "seed {seed}: distortion {distortion}, within-cluster {within}"
            );
        }
        // Fewer vectors than codes: every code still lands on a data point.
        let q = Quantizer::new(&Params::new(&vs, Kind::Float), 8, 2);
        let few = centres.narrow(0, 0, 3);
        assert_eq!(q.init_kmeans(&few, 3), 0.0);
    }

    #[test]
    fn straight_through_passes_the_gradient_and_restart_revives_dead_codes() {
        let vs = VarStore::new(Device::Cpu);
        let q = Quantizer::new(&Params::new(&vs, Kind::Float), 8, 2);
        let z = Tensor::randn([1, 1, 2, 2, 2], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let out = q.quantize(&z);
        out.z_q.sum(Kind::Float).backward();
        let g = z.grad();
        assert!(g.allclose(&g.ones_like(), 0.0, 0.0, false), "STE gradient must be identity");
        let counts = CodeUsage::counts(&out.codes, 8);
        let used = counts.gt(0.0).sum(Kind::Int64).int64_value(&[]);
        let n = q.restart_dead_codes(&counts, &Quantizer::rows(&z.detach()), 1.0);
        assert_eq!(n, 8 - used);
    }
}
