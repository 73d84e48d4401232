//! Short videos of the world: a scene over 8–16 frames in which objects move, appear or change
//! colour. T is the frame index; positions are fractions of the image side as in scenes.

use image::RgbImage;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::render::{draw_shape, render_background};
use super::scene::{Background, Cell, Color, GRID, MAX_JITTER, Object, Scene, Shape, Size};

/// Frame counts a random video may have.
pub const MIN_FRAMES: u32 = 8;
pub const MAX_FRAMES: u32 = 16;
/// Centres of moving objects stay this far from the border so even a large one stays in frame.
pub const MOTION_MARGIN: f32 = 0.21;
/// Most objects a random video holds: few enough that a moving object can own a whole grid line.
pub const MAX_VIDEO_OBJECTS: usize = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Left,
    Right,
    Up,
    Down,
}

impl Direction {
    pub const ALL: [Direction; 4] =
        [Direction::Left, Direction::Right, Direction::Up, Direction::Down];

    pub fn name(self) -> &'static str {
        match self {
            Direction::Left => "left",
            Direction::Right => "right",
            Direction::Up => "up",
            Direction::Down => "down",
        }
    }

    pub fn from_name(name: &str) -> Option<Direction> {
        Direction::ALL.into_iter().find(|d| d.name() == name)
    }

    /// Unit step in image coordinates (y grows downwards).
    pub fn delta(self) -> [f32; 2] {
        match self {
            Direction::Left => [-1.0, 0.0],
            Direction::Right => [1.0, 0.0],
            Direction::Up => [0.0, -1.0],
            Direction::Down => [0.0, 1.0],
        }
    }

    pub fn is_horizontal(self) -> bool {
        matches!(self, Direction::Left | Direction::Right)
    }
}

/// What happens to an object during a video.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Event {
    /// Moves every frame by `speed` (fraction of the image side per frame).
    Moves { direction: Direction, speed: f32 },
    /// Invisible before `frame`, then present.
    Appears { frame: u32 },
    /// Takes colour `to` from `frame` on.
    ChangesColor { frame: u32, to: Color },
}

/// An object of a video; `object` is its state at its first visible frame.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct VideoObject {
    pub object: Object,
    pub event: Option<Event>,
}

/// What is drawn of one object in one frame.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct FrameObject {
    pub shape: Shape,
    pub color: Color,
    pub size: Size,
    pub center: [f32; 2],
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VideoScene {
    pub objects: Vec<VideoObject>,
    pub background: Background,
    pub frames: u32,
}

impl VideoObject {
    /// State at frame `t`, or `None` before it appears.
    pub fn at(&self, t: u32) -> Option<FrameObject> {
        let o = &self.object;
        let mut f =
            FrameObject { shape: o.shape, color: o.color, size: o.size, center: o.center() };
        match self.event {
            Some(Event::Appears { frame }) if t < frame => return None,
            Some(Event::Moves { direction, speed }) => {
                let d = direction.delta();
                f.center =
                    [f.center[0] + d[0] * speed * t as f32, f.center[1] + d[1] * speed * t as f32];
            }
            Some(Event::ChangesColor { frame, to }) if t >= frame => f.color = to,
            _ => {}
        }
        Some(f)
    }

    /// Centre at the last frame of a `frames`-long video.
    pub fn end_center(&self, frames: u32) -> [f32; 2] {
        let mut o = *self;
        if let Some(Event::Appears { .. }) = o.event {
            o.event = None;
        }
        o.at(frames - 1).expect("visible after the event").center
    }
}

impl VideoScene {
    /// Checks frame count, distinct start cells, event frames and that movers stay in frame.
    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.frames >= 2, "video has {} frames, needs at least 2", self.frames);
        let first = Scene {
            objects: self.objects.iter().map(|o| o.object).collect(),
            background: self.background,
        };
        first.check()?;
        for (i, o) in self.objects.iter().enumerate() {
            match o.event {
                Some(Event::Appears { frame }) | Some(Event::ChangesColor { frame, .. }) => {
                    anyhow::ensure!(
                        (1..self.frames).contains(&frame),
                        "object {i} event frame {frame} outside 1..{}",
                        self.frames
                    );
                }
                Some(Event::Moves { direction, .. }) => {
                    let c = o.end_center(self.frames);
                    let along = if direction.is_horizontal() { c[0] } else { c[1] };
                    anyhow::ensure!(
                        (MOTION_MARGIN - 1e-4..=1.0 - MOTION_MARGIN + 1e-4).contains(&along),
                        "object {i} leaves the frame (ends at {c:?})"
                    );
                }
                None => {}
            }
        }
        Ok(())
    }

    /// Visible objects at frame `t`.
    pub fn frame_objects(&self, t: u32) -> Vec<FrameObject> {
        self.objects.iter().filter_map(|o| o.at(t)).collect()
    }

    /// A random video: 1–3 objects, at least one event, at most one mover (which owns its grid
    /// row or column so it never collides with another object).
    pub fn random(seed: u64) -> VideoScene {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let frames = rng.random_range(MIN_FRAMES..=MAX_FRAMES);
        let n = rng.random_range(1..=MAX_VIDEO_OBJECTS);
        let n_events = if n > 1 && rng.random_bool(0.3) { 2 } else { 1 };
        let mut kinds = [EventKind::Move, EventKind::Appear, EventKind::Turn];
        kinds.shuffle(&mut rng);
        let mut kinds = kinds[..n_events].to_vec();
        // Move sorts first so the mover claims its whole line before other objects take cells.
        kinds.sort_unstable();
        let mut free: Vec<Cell> = Cell::all().collect();
        free.shuffle(&mut rng);
        let mut objects = Vec::new();
        for i in 0..n {
            let kind = kinds.get(i).copied();
            let direction = Direction::ALL[rng.random_range(0..4)];
            let cell = if kind == Some(EventKind::Move) {
                let cell = random_mover_start(direction, &mut rng);
                free.retain(|c| {
                    if direction.is_horizontal() { c.row != cell.row } else { c.col != cell.col }
                });
                cell
            } else {
                free.pop().expect("a mover leaves a line of cells for the other two")
            };
            free.retain(|c| *c != cell);
            let object = Object {
                shape: Shape::ALL[rng.random_range(0..5)],
                color: Color::ALL[rng.random_range(0..8)],
                size: Size::ALL[rng.random_range(0..2)],
                cell,
                jitter: [
                    rng.random_range(-MAX_JITTER..=MAX_JITTER),
                    rng.random_range(-MAX_JITTER..=MAX_JITTER),
                ],
            };
            let event = kind.map(|k| match k {
                EventKind::Move => {
                    let c = object.center();
                    let along = if direction.is_horizontal() { c[0] } else { c[1] };
                    let forward = direction.delta().iter().sum::<f32>() > 0.0;
                    let room =
                        if forward { 1.0 - MOTION_MARGIN - along } else { along - MOTION_MARGIN };
                    // Start cells leave at least 0.53 of room, so 0.2 of travel always fits.
                    let travel = rng.random_range(0.2..=room.clamp(0.2, 0.45));
                    Event::Moves { direction, speed: travel / (frames - 1) as f32 }
                }
                EventKind::Appear => Event::Appears { frame: rng.random_range(2..=frames - 3) },
                EventKind::Turn => {
                    let others: Vec<Color> =
                        Color::ALL.into_iter().filter(|&c| c != object.color).collect();
                    let to = others[rng.random_range(0..others.len())];
                    Event::ChangesColor { frame: rng.random_range(2..=frames - 3), to }
                }
            });
            objects.push(VideoObject { object, event });
        }
        // The mover was placed first; shuffle so list order carries no meaning.
        objects.shuffle(&mut rng);
        let video = VideoScene { objects, background: Background::random(&mut rng), frames };
        if let Err(e) = video.check() {
            panic!("random video {seed} is invalid: {e}");
        }
        video
    }
}

/// Event kinds a random video draws from; `Move` orders first (see [`VideoScene::random`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum EventKind {
    Move,
    Appear,
    Turn,
}

/// A start cell from which a mover in `direction` has at least 0.2 of the side to travel.
fn random_mover_start(direction: Direction, rng: &mut impl Rng) -> Cell {
    let across = rng.random_range(0..GRID);
    // Never start in the last cell of the line it moves towards.
    let along = match direction {
        Direction::Right | Direction::Down => rng.random_range(0..GRID - 1),
        Direction::Left | Direction::Up => rng.random_range(1..GRID),
    };
    if direction.is_horizontal() { Cell::new(along, across) } else { Cell::new(across, along) }
}

/// Renders every frame of a video at `size`×`size`.
pub fn render_video(video: &VideoScene, size: u32) -> Vec<RgbImage> {
    let bg = render_background(&video.background, size, size);
    (0..video.frames)
        .map(|t| {
            let mut img = bg.clone();
            for o in video.frame_objects(t) {
                draw_shape(&mut img, o.shape, o.color.rgb(), o.center, o.size.radius());
            }
            img
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_videos_are_valid_and_varied() {
        let videos: Vec<VideoScene> = (0..500).map(VideoScene::random).collect();
        assert_eq!(videos[17], VideoScene::random(17));
        let mut kinds = [0usize; 3];
        for v in &videos {
            v.check().unwrap();
            assert!((MIN_FRAMES..=MAX_FRAMES).contains(&v.frames));
            let events: Vec<&Event> = v.objects.iter().filter_map(|o| o.event.as_ref()).collect();
            assert!(!events.is_empty());
            for e in events {
                kinds[match e {
                    Event::Moves { .. } => 0,
                    Event::Appears { .. } => 1,
                    Event::ChangesColor { .. } => 2,
                }] += 1;
            }
        }
        assert!(kinds.iter().all(|&k| k > 130), "event kinds unbalanced: {kinds:?}");
    }

    #[test]
    fn movers_never_meet_other_objects() {
        for seed in 0..500 {
            let v = VideoScene::random(seed);
            for t in 0..v.frames {
                let objs = v.frame_objects(t);
                for (i, a) in objs.iter().enumerate() {
                    for b in &objs[i + 1..] {
                        let d = ((a.center[0] - b.center[0]).powi(2)
                            + (a.center[1] - b.center[1]).powi(2))
                        .sqrt();
                        // Two large objects need 2 · 0.20 · 1.05 = 0.42 to stay apart.
                        assert!(d > 0.42, "seed {seed} frame {t}: objects {d} apart");
                    }
                }
            }
        }
    }

    #[test]
    fn events_change_frames_as_described() {
        let base = Object {
            shape: Shape::Circle,
            color: Color::Red,
            size: Size::Small,
            cell: Cell::new(0, 1),
            jitter: [0.0, 0.0],
        };
        let mover = VideoObject {
            object: base,
            event: Some(Event::Moves { direction: Direction::Right, speed: 0.05 }),
        };
        assert_eq!(mover.at(4).unwrap().center, [0.25 + 0.2, 0.75]);
        let appear = VideoObject { object: base, event: Some(Event::Appears { frame: 3 }) };
        assert!(appear.at(2).is_none() && appear.at(3).is_some());
        let turn = VideoObject {
            object: base,
            event: Some(Event::ChangesColor { frame: 5, to: Color::Blue }),
        };
        assert_eq!(
            (turn.at(4).unwrap().color, turn.at(5).unwrap().color),
            (Color::Red, Color::Blue)
        );

        let video = VideoScene {
            objects: vec![appear, turn],
            background: Background::Plain { base: [128; 3] },
            frames: 8,
        };
        assert!(video.check().unwrap_err().to_string().contains("share cell"));
        let frames = render_video(&VideoScene { objects: vec![appear], ..video }, 32);
        assert_eq!(frames.len(), 8);
        assert!(frames[2].pixels().all(|p| p.0 == [128; 3]));
        assert_eq!(frames[3].get_pixel(8, 24).0, Color::Red.rgb());
    }
}
