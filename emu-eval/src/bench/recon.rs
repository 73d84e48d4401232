//! `recon`: the vision tokenizer alone. PSNR and SSIM of encode->decode on world images and on
//! the repository's sample photographs, and codebook usage (perplexity, dead codes) over the world
//! images.
//!
//! Shapes: B images, H/W pixels, h/w code grid, K codebook size.

use super::report::BenchResult;
use super::save_grid;
use crate::world::{Scene, render};
use anyhow::Result;
use emu_tokenizer::image::{psnr, to_image, to_tensor};
use emu_tokenizer::vq::VqModel;
use emu_tokenizer::vq::quantize::CodeUsage;
use image::RgbImage;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::{Device, Tensor};

/// Mean SSIM over RGB channels (image-compare's MSSIM on each channel).
pub fn ssim(a: &RgbImage, b: &RgbImage) -> f64 {
    let mut total = 0.0;
    for c in 0..3 {
        let ch = |img: &RgbImage| {
            image::GrayImage::from_fn(img.width(), img.height(), |x, y| {
                image::Luma([img.get_pixel(x, y).0[c]])
            })
        };
        total += image_compare::gray_similarity_structure(
            &image_compare::Algorithm::MSSIMSimple,
            &ch(a),
            &ch(b),
        )
        .map(|s| s.score)
        .unwrap_or(0.0);
    }
    total / 3.0
}

/// Reconstructs `images` (all one size, multiples of the spatial factor) in batches.
pub fn reconstruct(vq: &VqModel, images: &[RgbImage]) -> (Vec<RgbImage>, Tensor) {
    let mut out = Vec::with_capacity(images.len());
    let mut codes = Vec::new();
    for chunk in images.chunks(16) {
        let x = Tensor::stack(&chunk.iter().map(to_tensor).collect::<Vec<_>>(), 0)
            .to_device(vq.device());
        let c = vq.encode_images(&x);
        let px = vq.decode_images(&c).to_device(Device::Cpu);
        out.extend((0..px.size()[0]).map(|i| to_image(&px.get(i))));
        codes.push(c.to_device(Device::Cpu));
    }
    (out, Tensor::cat(&codes, 0))
}

/// The repository's sample photographs (testdata/samples), if present.
pub fn sample_photos() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/samples");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|r| r.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.sort();
    v
}

pub fn run(vq: &VqModel, size: u32, n_images: usize, out: &Path) -> Result<BenchResult> {
    let start = std::time::Instant::now();
    let world: Vec<RgbImage> =
        (0..n_images as u64).map(|s| render(&Scene::random(100_000 + s), size)).collect();
    let (recon, codes) = reconstruct(vq, &world);
    let k = vq.config.codebook_size;
    let usage = CodeUsage::from_counts(&CodeUsage::counts(&codes, k));
    let mean = |v: Vec<f64>| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let mut metrics = BTreeMap::new();
    metrics.insert(
        "world_psnr_db".into(),
        mean(world.iter().zip(&recon).map(|(a, b)| psnr(a, b).min(100.0)).collect()),
    );
    metrics.insert(
        "world_ssim".into(),
        mean(world.iter().zip(&recon).map(|(a, b)| ssim(a, b)).collect()),
    );
    metrics.insert("codebook_perplexity".into(), usage.perplexity);
    metrics.insert("codebook_used".into(), (k - usage.dead_codes) as f64 / k as f64);
    let mut gallery: Vec<(String, RgbImage)> = Vec::new();
    for (a, b) in world.iter().zip(&recon).take(6) {
        gallery.push(("world".into(), a.clone()));
        gallery.push(("recon".into(), b.clone()));
    }
    let f = vq.config.spatial_factor() as u32;
    let photo_size = (128 / f).max(1) * f;
    let mut photo_psnr = Vec::new();
    for p in sample_photos() {
        if let Ok(img) = emu_tokenizer::image::load_image(&p) {
            let img = emu_tokenizer::image::resize(&img, photo_size, photo_size);
            let (r, _) = reconstruct(vq, std::slice::from_ref(&img));
            photo_psnr.push(psnr(&img, &r[0]).min(100.0));
            gallery.push((
                p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(),
                emu_tokenizer::image::resize(&img, size, size),
            ));
            gallery.push(("recon".into(), emu_tokenizer::image::resize(&r[0], size, size)));
        }
    }
    if !photo_psnr.is_empty() {
        metrics.insert("photo_psnr_db".into(), mean(photo_psnr.clone()));
    }
    Ok(BenchResult {
        name: "recon".into(),
        protocol: format!(
            "{n_images} world images at {size}×{size} (seeds 100000..) and {} sample photographs at {photo_size}×{photo_size}, \
             encoded and decoded by the vision tokenizer; PSNR in dB, SSIM mean over channels; codebook usage over the \
             world images' codes (perplexity of the code distribution, share of the {k} codes used).",
            photo_psnr.len()
        ),
        metrics,
        details: serde_json::json!({"usage": usage, "photo_psnr_db": photo_psnr}),
        samples: vec![save_grid(out, "recon.png", &gallery, 6)?],
        seconds: start.elapsed().as_secs_f64(),
    })
}
