//! `recon`: the vision tokenizer alone. PSNR and SSIM of encode->decode on world images and on
//! the repository's sample photographs, codebook usage (perplexity, dead codes) over the world
//! images, and the generation benchmarks' checks on reconstructions (their ceilings).
//!
//! Shapes: B images, T frames, H/W pixels, h/w code grid, K codebook size.

use super::report::BenchResult;
use super::save_grid;
use crate::world::{
    Cell, GenEvalPrompt, GenEvalReport, Scene, VideoScene, benchmark_prompts, detect, detect_video,
    render, render_video, score_images,
};
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

/// How well the detector reads `scenes` back from `images` (their reconstructions): the share
/// of images where it finds exactly the scene's objects (shape, colour, cell), where it finds
/// them ignoring shape, and the share of objects found at the right colour and cell whose shape
/// is also right. The first is the ceiling of any generation score through this tokenizer; the
/// others say which attribute it loses.
pub fn detector_agreement(scenes: &[Scene], images: &[RgbImage]) -> (f64, f64, f64) {
    assert_eq!(scenes.len(), images.len(), "detector_agreement: one image per scene");
    let (mut exact, mut placed, mut shapes_ok, mut shapes_n) = (0usize, 0usize, 0usize, 0usize);
    for (scene, img) in scenes.iter().zip(images) {
        let mut truth: Vec<_> =
            scene.objects.iter().map(|o| (o.color as u8, o.cell, o.shape as u8)).collect();
        let mut found: Vec<_> =
            detect(img).iter().map(|o| (o.color as u8, o.cell, o.shape as u8)).collect();
        truth.sort();
        found.sort();
        exact += usize::from(truth == found);
        let strip = |v: &[(u8, Cell, u8)]| v.iter().map(|x| (x.0, x.1)).collect::<Vec<_>>();
        placed += usize::from(strip(&truth) == strip(&found));
        for t in &truth {
            if let Some(f) = found.iter().find(|f| (f.0, f.1) == (t.0, t.1)) {
                shapes_n += 1;
                shapes_ok += usize::from(f.2 == t.2);
            }
        }
    }
    let n = scenes.len().max(1) as f64;
    (exact as f64 / n, placed as f64 / n, shapes_ok as f64 / shapes_n.max(1) as f64)
}

/// The repository's sample photographs (testdata/samples; none where the binary runs outside
/// a checkout).
pub fn sample_photos() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/samples");
    let is_image = |p: &Path| {
        p.extension().is_some_and(|e| ["png", "jpg", "jpeg"].contains(&&*e.to_string_lossy()))
    };
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|r| r.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| is_image(p)).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// GenEval scored on the tokenizer's reconstructions of each prompt's example scene (a scene
/// that satisfies it): no model generating through this tokenizer can be expected to score
/// higher, so `geneval` against this separates the transformer's share of the gap from the
/// tokenizer's. Per-category scores and their mean, as `geneval` reports them.
pub fn geneval_ceiling(vq: &VqModel, size: u32, prompts: &[GenEvalPrompt]) -> GenEvalReport {
    geneval_through(prompts, size, |scenes| reconstruct(vq, scenes).0)
}

/// GenEval on `pass(example scenes)`, rendered at `size`.
fn geneval_through(
    prompts: &[GenEvalPrompt],
    size: u32,
    pass: impl FnOnce(&[RgbImage]) -> Vec<RgbImage>,
) -> GenEvalReport {
    let scenes: Vec<RgbImage> =
        prompts.iter().enumerate().map(|(i, p)| render(&p.example_scene(i as u64), size)).collect();
    score_images(prompts, &pass(&scenes))
}

/// The `video` benchmark's judgements on the tokenizer's reconstructions of its own motion
/// videos (`n` of them, the latent frames `video` generates): the share whose moving object the
/// tracker still sees moving its way, the share whose last frame keeps every object in place,
/// and the mean PSNR over all frames. The first two bound what video generation and
/// continuation can score through this tokenizer.
pub fn video_ceiling(vq: &VqModel, size: u32, n: usize) -> Result<(f64, f64, f64)> {
    let t = vq.config.temporal_downsample_factor;
    video_through(size, n, (super::video::LATENT_FRAMES * t) as u32, |truth| {
        let x = Tensor::stack(&truth.iter().map(to_tensor).collect::<Vec<_>>(), 0)
            .unsqueeze(0)
            .to_device(vq.device());
        let px = vq.decode_video(&vq.encode_video(&x)?).to_device(Device::Cpu).get(0);
        Ok((0..px.size()[0]).map(|i| to_image(&px.get(i))).collect())
    })
}

/// `video`'s checks and the PSNR on `pass(clip)` for `n` of its motion clips of `frames` frames.
fn video_through(
    size: u32,
    n: usize,
    frames: u32,
    mut pass: impl FnMut(&[RgbImage]) -> Result<Vec<RgbImage>>,
) -> Result<(f64, f64, f64)> {
    let clips: Vec<VideoScene> =
        super::video::motion_clips(frames, n).into_iter().map(|(_, v)| v).collect();
    let (mut motion, mut last, mut psnrs) = (0usize, 0usize, Vec::new());
    for v in &clips {
        let truth = render_video(v, size);
        let recon = pass(&truth)?;
        motion += usize::from(super::video::motion_holds(v, &detect_video(&recon)));
        last += usize::from(super::video::last_frame_holds(v, recon.last().expect("frames")));
        psnrs.extend(truth.iter().zip(&recon).map(|(a, b)| psnr(a, b).min(100.0)));
    }
    let n = clips.len().max(1) as f64;
    let mean_psnr = psnrs.iter().sum::<f64>() / psnrs.len().max(1) as f64;
    Ok((motion as f64 / n, last as f64 / n, mean_psnr))
}

/// `prompts_per_category` sets the GenEval prompts of `geneval_ceiling` (0: skip it), and
/// `n_videos` the clips of [`video_ceiling`] (0: skip it).
pub fn run(
    vq: &VqModel,
    size: u32,
    n_images: usize,
    prompts_per_category: usize,
    n_videos: usize,
    out: &Path,
) -> Result<BenchResult> {
    let start = std::time::Instant::now();
    let scenes: Vec<Scene> = (0..n_images as u64).map(|s| Scene::random(100_000 + s)).collect();
    let world: Vec<RgbImage> = scenes.iter().map(|s| render(s, size)).collect();
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
    let (exact, placed, shape) = detector_agreement(&scenes, &recon);
    metrics.insert("detect_exact".into(), exact);
    metrics.insert("detect_colour_cell".into(), placed);
    metrics.insert("detect_shape".into(), shape);
    let ceiling = (prompts_per_category > 0)
        .then(|| geneval_ceiling(vq, size, &benchmark_prompts(prompts_per_category, 0)));
    if let Some(c) = &ceiling {
        metrics.insert("geneval_ceiling".into(), f64::from(c.overall));
    }
    if n_videos > 0 {
        let (motion, last, video_psnr) = video_ceiling(vq, size, n_videos)?;
        metrics.insert("video_motion_ceiling".into(), motion);
        metrics.insert("video_last_frame_ceiling".into(), last);
        metrics.insert("video_psnr_db".into(), video_psnr);
    }
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
             world images' codes (perplexity of the code distribution, share of the {k} codes used); the detector on the \
             reconstructions: share of images read back exactly (`detect_exact`, the ceiling of generation scores), \
             ignoring shape (`detect_colour_cell`), and the share of right shapes among objects found in place; \
             `geneval_ceiling`: GenEval's overall score on the reconstructions of one scene that satisfies each of \
             geneval's prompts ({prompts_per_category} per category), the most generation through this tokenizer can \
             reach; on {n_videos} of `video`'s motion clips, encoded and decoded whole: `video_psnr_db` over every \
             frame, and the share that `video`'s checks still pass, the most it can reach (`video_motion_ceiling` for \
             text-to-video, `video_last_frame_ceiling` for continuation).",
            photo_psnr.len()
        ),
        metrics,
        details: serde_json::json!({
            "usage": usage,
            "photo_psnr_db": photo_psnr,
            "geneval_ceiling": ceiling,
        }),
        samples: vec![save_grid(out, "recon.png", &gallery, 6)?],
        seconds: start.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::world::Shape;

    #[test]
    fn geneval_ceiling_is_perfect_through_a_lossless_pass_and_zero_through_a_blank_one() {
        // Five per category: every shape once among the single-object prompts.
        let prompts = benchmark_prompts(5, 0);
        let clean = geneval_through(&prompts, 64, |s| s.to_vec());
        assert_eq!(clean.overall, 1.0, "{clean:?}");
        let blank = geneval_through(&prompts, 64, |s| {
            vec![RgbImage::from_pixel(64, 64, image::Rgb([128, 128, 128])); s.len()]
        });
        assert_eq!(blank.overall, 0.0);
        // Every shape drawn as a circle keeps only what circles alone satisfy.
        let circles = geneval_through(&prompts, 64, |_| {
            prompts
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let mut scene = p.example_scene(i as u64);
                    for o in &mut scene.objects {
                        o.shape = Shape::Circle;
                    }
                    render(&scene, 64)
                })
                .collect()
        });
        let single = circles.per_category[&crate::world::Category::SingleObject].score;
        assert_eq!(single, 0.2, "only \"a circle\" passes");
        assert_eq!(circles.per_category[&crate::world::Category::TwoObject].score, 0.0);
    }

    #[test]
    fn the_video_checks_pass_through_a_lossless_pass_and_a_frame_holding_one_only() {
        // At 32 pixels the tracker misreads one of these twelve true clips.
        let ok = video_through(32, 12, 8, |f| Ok(f.to_vec())).unwrap();
        assert_eq!(ok, (11.0 / 12.0, 1.0, 100.0));
        let blank = video_through(32, 12, 8, |f| {
            Ok(vec![RgbImage::from_pixel(32, 32, image::Rgb([128, 128, 128])); f.len()])
        })
        .unwrap();
        assert_eq!((blank.0, blank.1), (0.0, 0.0));
        // What a 4x temporal tokenizer at its identity init can at best give back: each group of
        // four frames shows its newest. The last frame is exact; the motion seen is only that
        // between the two groups' newest frames, which the tracker still reads in most clips.
        let held = video_through(32, 12, 8, |f| {
            Ok((0..f.len()).map(|i| f[i / 4 * 4 + 3].clone()).collect())
        })
        .unwrap();
        assert_eq!(held.1, 1.0);
        assert!(held.0 >= 0.5 && held.0 < ok.0 && held.2 < 100.0, "{held:?}");
        // The first frame repeated: nothing moves, and the last frame is wrong.
        let frozen = video_through(32, 12, 8, |f| Ok(vec![f[0].clone(); f.len()])).unwrap();
        assert_eq!(frozen.0, 0.0);
    }

    #[test]
    fn the_sample_photographs_are_in_the_checkout_and_load() {
        let photos = sample_photos();
        assert_eq!(photos.len(), 4, "{photos:?}");
        for p in photos {
            let img = emu_tokenizer::image::load_image(&p).unwrap();
            assert_eq!(img.dimensions(), (128, 128), "{}", p.display());
        }
    }

    #[test]
    fn detector_agreement_separates_shape_from_placement() {
        let scenes: Vec<Scene> = (0..20u64).map(|s| Scene::random(7_000 + s)).collect();
        let clean: Vec<RgbImage> = scenes.iter().map(|s| render(s, 64)).collect();
        assert_eq!(detector_agreement(&scenes, &clean), (1.0, 1.0, 1.0));
        // The same scenes with every shape changed: placement stays, shapes are all wrong.
        let reshaped: Vec<RgbImage> = scenes
            .iter()
            .map(|s| {
                let mut s = s.clone();
                for o in &mut s.objects {
                    o.shape = if o.shape == Shape::Square { Shape::Circle } else { Shape::Square };
                }
                render(&s, 64)
            })
            .collect();
        let (exact, placed, shape) = detector_agreement(&scenes, &reshaped);
        assert_eq!((exact, placed, shape), (0.0, 1.0, 0.0));
        let blank = vec![RgbImage::from_pixel(64, 64, image::Rgb([128, 128, 128])); 20];
        assert_eq!(detector_agreement(&scenes, &blank), (0.0, 0.0, 0.0));
    }
}
