//! Image degradations that mimic what a VQ tokenizer's reconstruction does to a render: Gaussian
//! blur, additive Gaussian noise and a per-channel colour shift. Used to check that the detector
//! still reads scenes back after an encode/decode round trip. H/W are pixels.

use image::RgbImage;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Blur sigmas are given for a 64-pixel image and scale with the image side, so a degradation
/// means the same thing at every resolution.
pub const REFERENCE_SIDE: f32 = 64.0;

/// How hard to degrade an image. All-zero is the identity.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Degradation {
    /// Gaussian blur sigma in pixels at a 64-pixel side.
    pub blur_sigma: f32,
    /// Standard deviation of additive per-channel noise, in 8-bit levels.
    pub noise_std: f32,
    /// Largest per-channel gain error and offset, as a fraction (0.03 = gains in [0.97, 1.03]
    /// and offsets within ±0.03·255); the actual values are drawn from the seed.
    pub color_shift: f32,
}

impl Degradation {
    pub const NONE: Degradation = Degradation { blur_sigma: 0.0, noise_std: 0.0, color_shift: 0.0 };

    /// The default "tokenizer-like" degradation the detector is expected to survive.
    pub fn mild() -> Degradation {
        Degradation { blur_sigma: 0.7, noise_std: 6.0, color_shift: 0.03 }
    }

    /// Named degradations for reports: each kind alone at two strengths, then combinations.
    pub fn presets() -> Vec<(&'static str, Degradation)> {
        let d = Degradation::NONE;
        vec![
            ("clean", d),
            ("blur_0.5", Degradation { blur_sigma: 0.5, ..d }),
            ("blur_1.0", Degradation { blur_sigma: 1.0, ..d }),
            ("noise_5", Degradation { noise_std: 5.0, ..d }),
            ("noise_10", Degradation { noise_std: 10.0, ..d }),
            ("shift_3pct", Degradation { color_shift: 0.03, ..d }),
            ("shift_6pct", Degradation { color_shift: 0.06, ..d }),
            ("mild", Degradation::mild()),
            ("strong", Degradation { blur_sigma: 1.0, noise_std: 10.0, color_shift: 0.05 }),
        ]
    }
}

/// Applies blur, then colour shift, then noise, deterministically from `seed`.
pub fn degrade(img: &RgbImage, d: &Degradation, seed: u64) -> RgbImage {
    let (w, h) = img.dimensions();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut px: Vec<[f32; 3]> = img.pixels().map(|p| p.0.map(f32::from)).collect();
    let sigma = d.blur_sigma * w.min(h) as f32 / REFERENCE_SIDE;
    if sigma > 0.0 {
        gaussian_blur(&mut px, w as usize, h as usize, sigma);
    }
    if d.color_shift > 0.0 {
        let m = d.color_shift;
        let gain: [f32; 3] = std::array::from_fn(|_| 1.0 + rng.random_range(-m..=m));
        let offset: [f32; 3] = std::array::from_fn(|_| 255.0 * rng.random_range(-m..=m));
        for p in &mut px {
            for c in 0..3 {
                p[c] = p[c] * gain[c] + offset[c];
            }
        }
    }
    if d.noise_std > 0.0 {
        for p in &mut px {
            for v in p.iter_mut() {
                *v += d.noise_std * standard_normal(&mut rng);
            }
        }
    }
    let mut out = RgbImage::new(w, h);
    for (o, p) in out.pixels_mut().zip(&px) {
        o.0 = p.map(|v| v.round().clamp(0.0, 255.0) as u8);
    }
    out
}

/// Box–Muller: rand 0.9 has no normal distribution without pulling in rand_distr.
fn standard_normal(rng: &mut impl Rng) -> f32 {
    let u1: f32 = rng.random_range(f32::EPSILON..1.0);
    let u2: f32 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}

/// Normalised 1-D Gaussian kernel truncated at 3 sigma.
pub fn gaussian_kernel(sigma: f32) -> Vec<f32> {
    let radius = (3.0 * sigma).ceil().max(1.0) as i32;
    let k: Vec<f32> =
        (-radius..=radius).map(|i| (-(i * i) as f32 / (2.0 * sigma * sigma)).exp()).collect();
    let sum: f32 = k.iter().sum();
    k.into_iter().map(|v| v / sum).collect()
}

/// Separable Gaussian blur of a row-major W×H buffer with clamp-to-edge borders.
pub fn gaussian_blur<const C: usize>(px: &mut [[f32; C]], w: usize, h: usize, sigma: f32) {
    assert_eq!(px.len(), w * h, "buffer is not {w}x{h}");
    let k = gaussian_kernel(sigma);
    let r = (k.len() / 2) as isize;
    let mut tmp = vec![[0.0f32; C]; px.len()];
    let pass = |src: &[[f32; C]], dst: &mut [[f32; C]], horizontal: bool| {
        for y in 0..h {
            for x in 0..w {
                let mut acc = [0.0f32; C];
                for (i, kv) in k.iter().enumerate() {
                    let o = i as isize - r;
                    let (sx, sy) = if horizontal {
                        ((x as isize + o).clamp(0, w as isize - 1) as usize, y)
                    } else {
                        (x, (y as isize + o).clamp(0, h as isize - 1) as usize)
                    };
                    let s = src[sy * w + sx];
                    for c in 0..C {
                        acc[c] += kv * s[c];
                    }
                }
                dst[y * w + x] = acc;
            }
        }
    };
    pass(px, &mut tmp, true);
    pass(&tmp, px, false);
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    #[test]
    fn none_is_identity_and_seeds_are_deterministic() {
        let img = RgbImage::from_fn(16, 16, |x, y| Rgb([(x * 16) as u8, (y * 16) as u8, 77]));
        assert_eq!(degrade(&img, &Degradation::NONE, 1), img);
        let d = Degradation::mild();
        assert_eq!(degrade(&img, &d, 5), degrade(&img, &d, 5));
        assert_ne!(degrade(&img, &d, 5), degrade(&img, &d, 6));
    }

    #[test]
    fn blur_spreads_an_impulse_like_a_gaussian() {
        let mut px = vec![[0.0f32; 1]; 21 * 21];
        px[10 * 21 + 10] = [1.0];
        gaussian_blur(&mut px, 21, 21, 1.0);
        let total: f32 = px.iter().map(|p| p[0]).sum();
        assert!((total - 1.0).abs() < 1e-5);
        // Centre weight of a 2-D unit Gaussian is 1/(2π) ≈ 0.159 (truncation at 3σ nudges it up).
        assert!((px[10 * 21 + 10][0] - 0.1592).abs() < 0.003);
        let var: f32 =
            px.iter().enumerate().map(|(i, p)| ((i % 21) as f32 - 10.0).powi(2) * p[0]).sum();
        assert!((var - 1.0).abs() < 0.03, "variance {var}");
    }

    #[test]
    fn noise_and_shift_have_the_requested_magnitude() {
        let img = RgbImage::from_pixel(64, 64, Rgb([128, 128, 128]));
        let noisy = degrade(&img, &Degradation { noise_std: 8.0, ..Degradation::NONE }, 3);
        let vals: Vec<f32> =
            noisy.pixels().flat_map(|p| p.0.map(|v| f32::from(v) - 128.0)).collect();
        let mean = vals.iter().sum::<f32>() / vals.len() as f32;
        let std = (vals.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / vals.len() as f32).sqrt();
        assert!(mean.abs() < 0.5 && (std - 8.0).abs() < 0.4, "mean {mean} std {std}");
        for seed in 0..20 {
            let shifted =
                degrade(&img, &Degradation { color_shift: 0.03, ..Degradation::NONE }, seed);
            let p = shifted.get_pixel(5, 5).0;
            // 128 · (1 ± 0.03) ± 7.65 stays within 128 ± 11.5.
            assert!(p.iter().all(|&v| (116..=140).contains(&v)), "{p:?}");
            assert!(shifted.pixels().all(|q| q.0 == p), "shift must be uniform");
        }
    }
}
