//! `video`: text-to-video motion correctness and video continuation on the world.
//!
//! Motion: captions of fixed world videos in which an object moves; a generated clip is correct
//! when the tracker finds that object (shape and colour) moving in the stated direction.
//! Continuation: the first latent frame of a world video (4 frames) is given, the model writes
//! the next; correct when every object of the true last frame is detected within `tolerance` of
//! its true position.
//!
//! Shapes: T frames, h/w code grid.

use super::report::BenchResult;
use super::{BenchOptions, save_grid};
use crate::world::{self, Event, TrackedObject, VideoScene, detect, detect_video};
use anyhow::Result;
use emu_model::generate::Structure;
use emu_model::pipeline::Emu3;
use image::RgbImage;
use std::collections::BTreeMap;
use std::path::Path;

/// Latent frames of benchmark videos (8 frames at 4× temporal downsampling).
pub const LATENT_FRAMES: i64 = 2;
pub const FPS: i64 = 8;
/// How far (in image widths) a continued object may be from where it should be.
pub const TOLERANCE: f32 = 0.15;

/// World videos whose events all happen within `frames` frames, trimmed to that length.
pub fn videos(
    seeds: impl Iterator<Item = u64>,
    frames: u32,
    need_motion: bool,
) -> Vec<(u64, VideoScene)> {
    seeds
        .filter_map(|s| {
            let mut v = VideoScene::random(s);
            let ok = v.objects.iter().all(|o| match o.event {
                Some(Event::Appears { frame }) | Some(Event::ChangesColor { frame, .. }) => {
                    frame < frames
                }
                _ => true,
            });
            let moves = v.objects.iter().any(|o| matches!(o.event, Some(Event::Moves { .. })));
            v.frames = frames;
            (ok && (moves || !need_motion) && v.check().is_ok()).then_some((s, v))
        })
        .collect()
}

/// The first `n` text-to-video clips of `frames` frames (each has a mover), from seed 0 on:
/// what `video` generates and what `recon` reconstructs.
pub fn motion_clips(frames: u32, n: usize) -> Vec<(u64, VideoScene)> {
    videos(0..10_000, frames, true).into_iter().take(n).collect()
}

pub fn run(
    model: &Emu3,
    opts: &BenchOptions,
    out: &Path,
    tick: &mut dyn FnMut(usize),
) -> Result<BenchResult> {
    let start = std::time::Instant::now();
    let (h, w) = opts.grid(model)?;
    let (ph, _) = model.pixels(h, w)?;
    let t = model.vq.as_ref().map_or(4, |v| v.config.temporal_downsample_factor);
    let frames = (LATENT_FRAMES * t) as u32;
    let structure = Structure { h, w, frames: LATENT_FRAMES };

    // Text-to-video motion.
    let motion = motion_clips(frames, opts.video_prompts);
    let captions: Vec<String> = motion.iter().map(|(s, v)| world::video_caption(v, *s)).collect();
    let mut motion_ok = 0;
    let mut caption_ok = 0;
    let mut gallery = Vec::new();
    for (b, chunk) in motion.chunks(opts.batch.max(1)).enumerate() {
        let texts: Vec<String> = chunk.iter().map(|(s, v)| world::video_caption(v, *s)).collect();
        let mut cfg = opts.generation.clone();
        cfg.seed = cfg.seed.wrapping_add(b as u64 * 104_729);
        let generated = model.text_to_grid(&texts, "", structure, FPS, &cfg, &mut |_, _, _| {})?;
        for ((_, v), g) in chunk.iter().zip(generated) {
            let tracks = detect_video(&g.frames);
            let ok = motion_holds(v, &tracks);
            motion_ok += usize::from(ok);
            let views: Vec<world::ObjectView> =
                tracks.iter().map(world::ObjectView::from).collect();
            caption_ok += usize::from(world::text_holds(&g.prompt, &views));
            if gallery.len() < 6 {
                for (f, img) in g.frames.iter().enumerate().step_by(2) {
                    gallery.push((
                        if f == 0 {
                            format!("{}{}", if ok { "" } else { "x " }, g.prompt)
                        } else {
                            format!("t={f}")
                        },
                        img.clone(),
                    ));
                }
            }
        }
        tick(chunk.len());
    }

    // Continuation from the first latent frame.
    let cont = videos(50_000..60_000, frames, false)
        .into_iter()
        .take(opts.video_prompts)
        .collect::<Vec<_>>();
    let mut cont_ok = 0;
    for (s, v) in &cont {
        let truth = world::render_video(v, ph as u32);
        let caption = world::video_caption(v, *s);
        let g = model.continue_video(
            &caption,
            &truth[..t as usize],
            structure,
            FPS,
            &opts.generation,
        )?;
        cont_ok += usize::from(last_frame_holds(v, g.frames.last().expect("frames")));
        tick(1);
    }
    let mut metrics = BTreeMap::new();
    metrics.insert("motion_accuracy".into(), motion_ok as f64 / motion.len().max(1) as f64);
    metrics.insert("caption_agreement".into(), caption_ok as f64 / motion.len().max(1) as f64);
    metrics.insert("continuation_accuracy".into(), cont_ok as f64 / cont.len().max(1) as f64);
    Ok(BenchResult {
        name: "video".into(),
        protocol: format!(
            "Text-to-video: {} world videos with a moving object ({} frames, {FPS} fps){}, correct when the tracker finds \
             the object moving the stated way; caption_agreement = every stated attribute and event holds. \
             Continuation: {} videos, first {t} frames given, correct when every object of the last frame is within \
             {TOLERANCE} image widths of its true position.",
            motion.len(),
            frames,
            super::generation::best_of_note(opts.generation.best_of),
            cont.len()
        ),
        metrics,
        details: serde_json::json!({"prompts": captions}),
        samples: vec![save_grid(out, "video_t2v.png", &gallery, (frames as usize).div_ceil(2))?],
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Whether `tracks` hold `v`'s moving object (shape and colour) moving its way.
pub fn motion_holds(v: &VideoScene, tracks: &[TrackedObject]) -> bool {
    let mover = v.objects.iter().find_map(|o| match o.event {
        Some(Event::Moves { direction, .. }) => Some((o.object.shape, o.object.color, direction)),
        _ => None,
    });
    mover.is_some_and(|(s, c, d)| {
        tracks.iter().any(|t| t.shape == s && t.color == c && t.motion == Some(d))
    })
}

/// Whether every object of `v`'s last frame is detected in `frame` within [`TOLERANCE`] of its
/// true place.
pub fn last_frame_holds(v: &VideoScene, frame: &RgbImage) -> bool {
    let found = detect(frame);
    v.frame_objects(v.frames - 1).iter().all(|o| {
        found.iter().any(|d| {
            d.shape == o.shape && d.color == o.color && dist(d.center, o.center) <= TOLERANCE
        })
    })
}

fn dist(a: [f32; 2], b: [f32; 2]) -> f32 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt()
}
