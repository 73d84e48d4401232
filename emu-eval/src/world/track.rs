//! Video detection: per-frame detections linked into tracks, each summarised as what happened to
//! one object (appearance frame, motion direction, colour change). T is the frame index;
//! positions are fractions of the image side.

use image::RgbImage;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::detect::{DetectedObject, detect};
use super::scene::{Cell, Color, Shape, Size};
use super::video::{Direction, Event, VideoScene};

/// Largest centre step between frames for one object. World movers go at most ~0.065 per frame,
/// but a 4× temporal tokenizer may decode each latent frame as four equal frames (as ours does
/// from its identity init), so a mover can jump four frames' worth at once.
const MAX_STEP: f32 = 0.3;
/// Frames a track may go undetected before it is closed.
const MAX_GAP: u32 = 2;
/// Net displacement (fraction of the side) below which an object counts as static.
const MIN_MOTION: f32 = 0.1;

/// One object followed through a video.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrackedObject {
    pub shape: Shape,
    /// Colour at its first frames.
    pub color: Color,
    pub size: Size,
    /// First frame in which it was seen (0 unless it appears later).
    pub first_frame: u32,
    pub start: [f32; 2],
    pub end: [f32; 2],
    pub start_cell: Cell,
    pub motion: Option<Direction>,
    /// (first frame of the new colour, new colour).
    pub color_change: Option<(u32, Color)>,
    pub frames_seen: u32,
}

/// Detects and tracks objects through a video's frames.
pub fn detect_video(frames: &[RgbImage]) -> Vec<TrackedObject> {
    let detections: Vec<Vec<DetectedObject>> = frames.par_iter().map(detect).collect();
    track(&detections)
}

/// Links per-frame detections greedily by distance (shape mismatches cost extra, colour may
/// change) and summarises every track seen in at least half the frames after its start.
pub fn track(detections: &[Vec<DetectedObject>]) -> Vec<TrackedObject> {
    let mut tracks: Vec<Vec<(u32, DetectedObject)>> = Vec::new();
    for (t, dets) in detections.iter().enumerate() {
        let t = t as u32;
        let mut pairs: Vec<(f32, usize, usize)> = Vec::new();
        for (k, tr) in tracks.iter().enumerate() {
            let (last_t, last) = tr[tr.len() - 1];
            if t - last_t > MAX_GAP + 1 {
                continue;
            }
            for (j, d) in dets.iter().enumerate() {
                let dist = (d.center[0] - last.center[0]).hypot(d.center[1] - last.center[1]);
                if dist <= MAX_STEP * (t - last_t) as f32 {
                    pairs.push((dist + if d.shape == last.shape { 0.0 } else { 0.1 }, k, j));
                }
            }
        }
        pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (mut track_used, mut det_used) = (vec![false; tracks.len()], vec![false; dets.len()]);
        for (_, k, j) in pairs {
            if !track_used[k] && !det_used[j] {
                (track_used[k], det_used[j]) = (true, true);
                tracks[k].push((t, dets[j]));
            }
        }
        for (j, d) in dets.iter().enumerate() {
            if !det_used[j] {
                tracks.push(vec![(t, *d)]);
            }
        }
    }
    let n = detections.len() as u32;
    tracks
        .iter()
        .filter(|tr| {
            let span = n - tr[0].0;
            tr.len() >= 2 && 2 * tr.len() as u32 >= span
        })
        .map(|tr| summarise(tr))
        .collect()
}

/// Most frequent value (ties go to the one seen first).
fn mode<T: Copy + PartialEq>(xs: impl Iterator<Item = T>) -> (T, usize) {
    let xs: Vec<T> = xs.collect();
    let mut best = (xs[0], 0);
    for &x in &xs {
        let c = xs.iter().filter(|&&y| y == x).count();
        if c > best.1 {
            best = (x, c);
        }
    }
    best
}

fn summarise(tr: &[(u32, DetectedObject)]) -> TrackedObject {
    let avg = |part: &[(u32, DetectedObject)]| {
        let n = part.len() as f32;
        [
            part.iter().map(|(_, d)| d.center[0]).sum::<f32>() / n,
            part.iter().map(|(_, d)| d.center[1]).sum::<f32>() / n,
        ]
    };
    let ends = tr.len().min(2);
    let (start, end) = (avg(&tr[..ends]), avg(&tr[tr.len() - ends..]));
    let (dx, dy) = (end[0] - start[0], end[1] - start[1]);
    let motion = if dx.abs().max(dy.abs()) < MIN_MOTION {
        None
    } else if dx.abs() >= dy.abs() {
        Some(if dx > 0.0 { Direction::Right } else { Direction::Left })
    } else {
        Some(if dy > 0.0 { Direction::Down } else { Direction::Up })
    };

    // A colour change is the split that explains at least two more frames than one colour does.
    let colors: Vec<Color> = tr.iter().map(|(_, d)| d.color).collect();
    let (overall, overall_n) = mode(colors.iter().copied());
    let mut best: Option<(usize, usize, Color, Color)> = None;
    for s in 1..colors.len() {
        let (a, na) = mode(colors[..s].iter().copied());
        let (b, nb) = mode(colors[s..].iter().copied());
        if a != b && na + nb >= overall_n + 2 && best.is_none_or(|(_, n, _, _)| na + nb > n) {
            best = Some((s, na + nb, a, b));
        }
    }
    let (color, color_change) = match best {
        Some((s, _, a, b)) => (a, Some((tr[s].0, b))),
        None => (overall, None),
    };
    TrackedObject {
        shape: mode(tr.iter().map(|(_, d)| d.shape)).0,
        color,
        size: mode(tr.iter().map(|(_, d)| d.size)).0,
        first_frame: tr[0].0,
        start,
        end,
        start_cell: Cell::from_point(start),
        motion,
        color_change,
        frames_seen: tr.len() as u32,
    }
}

/// The track a perfect detector would report for each object of a video, in object order.
pub fn expected_tracks(video: &VideoScene) -> Vec<TrackedObject> {
    video
        .objects
        .iter()
        .map(|o| {
            let first_frame = match o.event {
                Some(Event::Appears { frame }) => frame,
                _ => 0,
            };
            let start = o.object.center();
            TrackedObject {
                shape: o.object.shape,
                color: o.object.color,
                size: o.object.size,
                first_frame,
                start,
                end: o.end_center(video.frames),
                start_cell: o.object.cell,
                motion: match o.event {
                    Some(Event::Moves { direction, .. }) => Some(direction),
                    _ => None,
                },
                color_change: match o.event {
                    Some(Event::ChangesColor { frame, to }) => Some((frame, to)),
                    _ => None,
                },
                frames_seen: video.frames - first_frame,
            }
        })
        .collect()
}

/// The parts of a track that a video caption or question can state.
pub fn track_key(
    t: &TrackedObject,
) -> (Shape, Color, Option<Direction>, u32, Option<(u32, Color)>) {
    (t.shape, t.color, t.motion, t.first_frame, t.color_change)
}

/// Whether the tracks match the video's objects one to one on [`track_key`].
pub fn tracks_match(video: &VideoScene, found: &[TrackedObject]) -> bool {
    let mut want: Vec<_> = expected_tracks(video).iter().map(track_key).collect();
    let mut got: Vec<_> = found.iter().map(track_key).collect();
    want.sort_unstable();
    got.sort_unstable();
    want == got
}

#[cfg(test)]
mod tests {
    use super::super::degrade::{Degradation, degrade};
    use super::super::video::render_video;
    use super::*;

    fn video_accuracy(n: u64, d: &Degradation) -> (f32, Vec<u64>) {
        video_accuracy_held(n, d, 1)
    }

    /// With `hold` > 1, each group of `hold` frames shows its newest, as a temporal tokenizer
    /// that keeps one frame in `hold` decodes them; only videos whose objects stay or move are
    /// read then (holding shifts when objects appear or change colour).
    fn video_accuracy_held(n: u64, d: &Degradation, hold: usize) -> (f32, Vec<u64>) {
        let only_motion = |s: &u64| {
            hold == 1
                || VideoScene::random(*s)
                    .objects
                    .iter()
                    .all(|o| matches!(o.event, None | Some(Event::Moves { .. })))
        };
        let seeds: Vec<u64> = (0..).filter(only_motion).take(n as usize).collect();
        let results: Vec<(u64, bool)> = seeds
            .into_par_iter()
            .map(|seed| {
                let mut video = VideoScene::random(seed);
                video.frames = video.frames / hold as u32 * hold as u32;
                let clean = render_video(&video, 64);
                let frames: Vec<RgbImage> = (0..clean.len())
                    .map(|t| degrade(&clean[t / hold * hold + hold - 1], d, seed * 100 + t as u64))
                    .collect();
                let dets: Vec<Vec<DetectedObject>> = frames.iter().map(detect).collect();
                (seed, tracks_match(&video, &track(&dets)))
            })
            .collect();
        let failed: Vec<u64> = results.iter().filter(|r| !r.1).map(|r| r.0).collect();
        (1.0 - failed.len() as f32 / n as f32, failed)
    }

    #[test]
    fn clean_videos_are_read_back() {
        let (acc, failed) = video_accuracy(200, &Degradation::NONE);
        println!("clean video accuracy {acc:.4}, failures {failed:?}");
        assert!(acc >= 0.99, "accuracy {acc}, failures {failed:?}");
    }

    #[test]
    fn videos_held_four_frames_at_a_time_are_read_back() {
        let (acc, failed) = video_accuracy_held(200, &Degradation::NONE, 4);
        println!("held video accuracy {acc:.4}, failures {failed:?}");
        assert!(acc >= 0.97, "accuracy {acc}, failures {failed:?}");
    }

    #[test]
    fn mildly_degraded_videos_are_read_back() {
        let (acc, failed) = video_accuracy(200, &Degradation::mild());
        println!("mild video accuracy {acc:.4}, failures {failed:?}");
        assert!(acc >= 0.97, "accuracy {acc}, failures {failed:?}");
    }

    #[test]
    fn summary_finds_colour_change_and_motion() {
        let det = |x: f32, color: Color| DetectedObject {
            shape: Shape::Star,
            color,
            size: Size::Small,
            center: [x, 0.5],
            cell: Cell::from_point([x, 0.5]),
            area: 0.01,
            confidence: 1.0,
        };
        use Color::{Blue, Red};
        let colours = [Red, Red, Red, Blue, Red, Blue, Blue, Blue];
        let frames: Vec<Vec<DetectedObject>> =
            colours.iter().enumerate().map(|(t, &c)| vec![det(0.2 + 0.05 * t as f32, c)]).collect();
        let tracks = track(&frames);
        assert_eq!(tracks.len(), 1);
        // Split after frame 2 explains 3 + 4 = 7 frames versus 4 for either colour alone.
        assert_eq!(tracks[0].color_change, Some((3, Blue)));
        assert_eq!(tracks[0].color, Red);
        assert_eq!(tracks[0].motion, Some(Direction::Right));
        // Start is the mean of frames 0–1 (x = 0.225), end of frames 6–7 (x = 0.525).
        assert!(
            (tracks[0].start[0] - 0.225).abs() < 1e-6 && (tracks[0].end[0] - 0.525).abs() < 1e-6
        );

        // A one-frame blip is not a track; a late object is, with its first frame.
        let mut frames: Vec<Vec<DetectedObject>> = (0..8).map(|_| vec![det(0.2, Red)]).collect();
        frames[1].push(det(0.8, Blue));
        for f in &mut frames[5..] {
            f.push(det(0.5, Blue));
        }
        let tracks = track(&frames);
        assert_eq!(tracks.len(), 2);
        assert_eq!(
            (tracks[1].first_frame, tracks[1].motion, tracks[1].color_change),
            (5, None, None)
        );
    }
}
