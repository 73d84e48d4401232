//! Scenes of the synthetic world: up to four coloured shapes on a coarse 2×2 grid over a muted
//! background, generated deterministically from a `u64` seed.
//!
//! Positions are fractions of the image side: x grows rightwards, y grows downwards, both in
//! [0, 1]. A [`Cell`] is (col, row) on the grid, col = x half and row = y half.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Cells per grid side. Two, so that objects can be large: at 32 pixels a 4× tokenizer then sees
/// each shape across about 3×3 codes and its reconstructions keep 96% of shapes. On a 3×3 grid
/// (radii 0.10 and 0.15) shapes spanned about 2×2 codes and reconstructions kept half of them.
pub const GRID: u8 = 2;
/// Most objects a scene holds.
pub const MAX_OBJECTS: usize = 4;
/// Largest centre jitter as a fraction of the image side. Small enough that two large objects in
/// neighbouring cells keep a visible gap even after blur, so the detector can separate them.
pub const MAX_JITTER: f32 = 0.01;

/// The five shapes. Orientation is fixed (triangle and star point up) so that shape is the only
/// thing a detector has to infer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Shape {
    Circle,
    Square,
    Triangle,
    Diamond,
    Star,
}

impl Shape {
    pub const ALL: [Shape; 5] =
        [Shape::Circle, Shape::Square, Shape::Triangle, Shape::Diamond, Shape::Star];

    pub fn name(self) -> &'static str {
        match self {
            Shape::Circle => "circle",
            Shape::Square => "square",
            Shape::Triangle => "triangle",
            Shape::Diamond => "diamond",
            Shape::Star => "star",
        }
    }

    pub fn plural(self) -> &'static str {
        match self {
            Shape::Circle => "circles",
            Shape::Square => "squares",
            Shape::Triangle => "triangles",
            Shape::Diamond => "diamonds",
            Shape::Star => "stars",
        }
    }

    /// Parses the singular name.
    pub fn from_name(name: &str) -> Option<Shape> {
        Shape::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// The eight object colours, saturated and at least ~110 apart in RGB from each other and from
/// every background colour, so nearest-palette classification survives blur, noise and shifts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Color {
    Red,
    Orange,
    Yellow,
    Green,
    Cyan,
    Blue,
    Purple,
    Pink,
}

impl Color {
    pub const ALL: [Color; 8] = [
        Color::Red,
        Color::Orange,
        Color::Yellow,
        Color::Green,
        Color::Cyan,
        Color::Blue,
        Color::Purple,
        Color::Pink,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Color::Red => "red",
            Color::Orange => "orange",
            Color::Yellow => "yellow",
            Color::Green => "green",
            Color::Cyan => "cyan",
            Color::Blue => "blue",
            Color::Purple => "purple",
            Color::Pink => "pink",
        }
    }

    pub fn rgb(self) -> [u8; 3] {
        match self {
            Color::Red => [225, 25, 25],
            Color::Orange => [250, 135, 0],
            Color::Yellow => [245, 240, 30],
            Color::Green => [30, 175, 40],
            Color::Cyan => [20, 215, 225],
            Color::Blue => [35, 60, 235],
            Color::Purple => [145, 30, 205],
            Color::Pink => [255, 115, 210],
        }
    }

    pub fn from_name(name: &str) -> Option<Color> {
        Color::ALL.into_iter().find(|c| c.name() == name)
    }

    /// The palette colour nearest to `rgb` in Euclidean RGB distance, with that distance.
    pub fn nearest(rgb: [f32; 3]) -> (Color, f32) {
        Color::ALL
            .into_iter()
            .map(|c| (c, rgb_distance(rgb, c.rgb().map(f32::from))))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .expect("palette is not empty")
    }
}

/// Euclidean distance between two RGB triples.
pub fn rgb_distance(a: [f32; 3], b: [f32; 3]) -> f32 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt()
}

/// Muted greys and beiges: far from every object colour so object pixels stand out.
pub const BACKGROUND_COLORS: [[u8; 3]; 5] =
    [[128, 128, 128], [172, 170, 166], [88, 90, 94], [186, 176, 156], [142, 134, 118]];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Size {
    Small,
    Large,
}

impl Size {
    pub const ALL: [Size; 2] = [Size::Small, Size::Large];

    /// Nominal radius as a fraction of the image side; each shape's extent is about this.
    /// Small objects were 0.14, where a 32-pixel scene's tokenizer kept 88% of their shapes
    /// against 98.5% of large ones.
    pub fn radius(self) -> f32 {
        match self {
            Size::Small => 0.17,
            Size::Large => 0.20,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Size::Small => "small",
            Size::Large => "large",
        }
    }

    pub fn from_name(name: &str) -> Option<Size> {
        Size::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Nominal radii halfway between the two sizes separate them.
    pub fn from_radius(radius: f32) -> Size {
        if radius > 0.5 * (Size::Small.radius() + Size::Large.radius()) {
            Size::Large
        } else {
            Size::Small
        }
    }
}

/// A cell of the 2×2 grid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Cell {
    pub col: u8,
    pub row: u8,
}

impl Cell {
    pub fn new(col: u8, row: u8) -> Cell {
        assert!(col < GRID && row < GRID, "cell ({col}, {row}) is outside the {GRID}x{GRID} grid");
        Cell { col, row }
    }

    /// All cells in reading order.
    pub fn all() -> impl Iterator<Item = Cell> {
        (0..GRID).flat_map(|row| (0..GRID).map(move |col| Cell { col, row }))
    }

    /// Sort key of reading order: row by row, left to right. (`Cell`'s own order compares the
    /// column first, so sorting by the cell itself would read column by column.)
    pub fn reading_order(self) -> (u8, u8) {
        (self.row, self.col)
    }

    /// "top left", "top right", "bottom left" or "bottom right".
    pub fn name(self) -> &'static str {
        const NAMES: [[&str; GRID as usize]; GRID as usize] =
            [["top left", "top right"], ["bottom left", "bottom right"]];
        NAMES[usize::from(self.row)][usize::from(self.col)]
    }

    /// Centre of the cell as fractions of the image side.
    pub fn center(self) -> [f32; 2] {
        let g = f32::from(GRID);
        [(f32::from(self.col) + 0.5) / g, (f32::from(self.row) + 0.5) / g]
    }

    /// The cell containing a point given as fractions of the image side (clamped to the grid).
    pub fn from_point(p: [f32; 2]) -> Cell {
        let g = f32::from(GRID);
        let idx = |v: f32| (v * g).floor().clamp(0.0, g - 1.0) as u8;
        Cell { col: idx(p[0]), row: idx(p[1]) }
    }
}

/// Spatial relation of a subject to a reference object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Relation {
    LeftOf,
    RightOf,
    Above,
    Below,
}

impl Relation {
    pub const ALL: [Relation; 4] =
        [Relation::LeftOf, Relation::RightOf, Relation::Above, Relation::Below];

    /// Caption wording, e.g. "a square to the left of a star".
    pub fn phrase(self) -> &'static str {
        match self {
            Relation::LeftOf => "to the left of",
            Relation::RightOf => "to the right of",
            Relation::Above => "above",
            Relation::Below => "below",
        }
    }

    /// GenEval metadata wording.
    pub fn geneval_name(self) -> &'static str {
        match self {
            Relation::LeftOf => "left of",
            Relation::RightOf => "right of",
            Relation::Above => "above",
            Relation::Below => "below",
        }
    }

    pub fn from_geneval_name(name: &str) -> Option<Relation> {
        Relation::ALL.into_iter().find(|r| r.geneval_name() == name)
    }

    pub fn inverse(self) -> Relation {
        match self {
            Relation::LeftOf => Relation::RightOf,
            Relation::RightOf => Relation::LeftOf,
            Relation::Above => Relation::Below,
            Relation::Below => Relation::Above,
        }
    }

    /// Whether `subject` stands in this relation to `reference`, judged by grid cells.
    pub fn holds_cells(self, subject: Cell, reference: Cell) -> bool {
        match self {
            Relation::LeftOf => subject.col < reference.col,
            Relation::RightOf => subject.col > reference.col,
            Relation::Above => subject.row < reference.row,
            Relation::Below => subject.row > reference.row,
        }
    }

    /// Whether the relation holds between centres, needing at least `margin` (fraction of the
    /// image side) of separation so objects in one column are never "left of" each other.
    pub fn holds_points(self, subject: [f32; 2], reference: [f32; 2], margin: f32) -> bool {
        match self {
            Relation::LeftOf => subject[0] + margin < reference[0],
            Relation::RightOf => subject[0] > reference[0] + margin,
            Relation::Above => subject[1] + margin < reference[1],
            Relation::Below => subject[1] > reference[1] + margin,
        }
    }
}

/// One object of a scene.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Object {
    pub shape: Shape,
    pub color: Color,
    pub size: Size,
    pub cell: Cell,
    /// Offset of the centre from the cell centre, fractions of the image side, each |.| ≤
    /// [`MAX_JITTER`].
    pub jitter: [f32; 2],
}

impl Object {
    /// Centre as fractions of the image side.
    pub fn center(&self) -> [f32; 2] {
        let c = self.cell.center();
        [c[0] + self.jitter[0], c[1] + self.jitter[1]]
    }
}

/// Background fill. Textures are low contrast so they never look like an object.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Background {
    Plain {
        base: [u8; 3],
    },
    /// Sinusoidal stripes; `period` is a fraction of the image side, `contrast` the amplitude in
    /// 8-bit levels.
    Stripes {
        base: [u8; 3],
        vertical: bool,
        period: f32,
        contrast: u8,
    },
    /// Blocks of `blocks`×`blocks` per image, each offset by a hashed level in ±`contrast`.
    Checker {
        base: [u8; 3],
        blocks: u8,
        contrast: u8,
        seed: u64,
    },
}

impl Background {
    pub fn base(&self) -> [u8; 3] {
        match *self {
            Background::Plain { base }
            | Background::Stripes { base, .. }
            | Background::Checker { base, .. } => base,
        }
    }

    pub fn random(rng: &mut impl Rng) -> Background {
        let base = BACKGROUND_COLORS[rng.random_range(0..BACKGROUND_COLORS.len())];
        match rng.random_range(0..4) {
            0 => Background::Stripes {
                base,
                vertical: rng.random(),
                period: rng.random_range(0.08..0.2),
                contrast: rng.random_range(4..=9),
            },
            1 => Background::Checker {
                base,
                blocks: rng.random_range(6..=16),
                contrast: rng.random_range(4..=9),
                seed: rng.random(),
            },
            _ => Background::Plain { base },
        }
    }
}

/// Partial description of an object; unset fields are drawn at random by [`Scene::from_specs`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ObjectSpec {
    pub shape: Option<Shape>,
    pub color: Option<Color>,
    pub size: Option<Size>,
    pub cell: Option<Cell>,
}

/// A still scene: 1 to 4 objects in distinct cells over a background.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scene {
    pub objects: Vec<Object>,
    pub background: Background,
}

impl Scene {
    /// Builds a scene, panicking on misuse (object count or shared cells).
    pub fn new(objects: Vec<Object>, background: Background) -> Scene {
        let scene = Scene { objects, background };
        if let Err(e) = scene.check() {
            panic!("invalid scene: {e}");
        }
        scene
    }

    /// Checks the invariants a deserialised scene must satisfy.
    pub fn check(&self) -> anyhow::Result<()> {
        let n = self.objects.len();
        anyhow::ensure!((1..=MAX_OBJECTS).contains(&n), "scene has {n} objects, expected 1..=4");
        for (i, a) in self.objects.iter().enumerate() {
            anyhow::ensure!(
                a.cell.col < GRID && a.cell.row < GRID,
                "object {i} lies outside the grid"
            );
            anyhow::ensure!(
                a.jitter.iter().all(|j| j.abs() <= MAX_JITTER + 1e-6),
                "object {i} jitter {:?} exceeds {MAX_JITTER}",
                a.jitter
            );
            if let Some(j) = self.objects[..i].iter().position(|b| b.cell == a.cell) {
                anyhow::bail!("objects {j} and {i} share cell {:?}", a.cell);
            }
        }
        Ok(())
    }

    /// A random scene with 1 to 4 objects.
    pub fn random(seed: u64) -> Scene {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let n = rng.random_range(1..=MAX_OBJECTS);
        Scene::random_from(&mut rng, n)
    }

    /// A random scene with exactly `n_objects` objects.
    pub fn random_with(seed: u64, n_objects: usize) -> Scene {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        Scene::random_from(&mut rng, n_objects)
    }

    fn random_from(rng: &mut ChaCha8Rng, n: usize) -> Scene {
        Scene::from_specs_rng(&vec![ObjectSpec::default(); n], rng)
    }

    /// A scene whose objects follow `specs`, with every unset attribute (and the background)
    /// drawn from `seed`. Panics if specs name a cell twice or there are not 1..=4 of them.
    pub fn from_specs(specs: &[ObjectSpec], seed: u64) -> Scene {
        Scene::from_specs_rng(specs, &mut ChaCha8Rng::seed_from_u64(seed))
    }

    pub(crate) fn from_specs_rng(specs: &[ObjectSpec], rng: &mut impl Rng) -> Scene {
        assert!(
            (1..=MAX_OBJECTS).contains(&specs.len()),
            "a scene needs 1..=4 objects, got {}",
            specs.len()
        );
        let mut free: Vec<Cell> =
            Cell::all().filter(|c| specs.iter().all(|s| s.cell != Some(*c))).collect();
        free.shuffle(rng);
        let objects = specs
            .iter()
            .map(|spec| {
                let cell = spec.cell.unwrap_or_else(|| free.pop().expect("4 cells hold 4 objects"));
                Object {
                    shape: spec.shape.unwrap_or_else(|| Shape::ALL[rng.random_range(0..5)]),
                    color: spec.color.unwrap_or_else(|| Color::ALL[rng.random_range(0..8)]),
                    size: spec.size.unwrap_or_else(|| Size::ALL[rng.random_range(0..2)]),
                    cell,
                    jitter: [
                        rng.random_range(-MAX_JITTER..=MAX_JITTER),
                        rng.random_range(-MAX_JITTER..=MAX_JITTER),
                    ],
                }
            })
            .collect();
        Scene::new(objects, Background::random(rng))
    }

    /// Number of objects with this shape.
    pub fn count_shape(&self, shape: Shape) -> usize {
        self.objects.iter().filter(|o| o.shape == shape).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn palette_is_well_separated() {
        let rgb = |c: [u8; 3]| c.map(f32::from);
        let mut min_pair = f32::MAX;
        for (i, a) in Color::ALL.iter().enumerate() {
            for b in &Color::ALL[i + 1..] {
                min_pair = min_pair.min(rgb_distance(rgb(a.rgb()), rgb(b.rgb())));
            }
        }
        let min_bg = Color::ALL
            .iter()
            .flat_map(|c| BACKGROUND_COLORS.iter().map(|b| rgb_distance(rgb(c.rgb()), rgb(*b))))
            .fold(f32::MAX, f32::min);
        assert!(min_pair > 105.0, "closest object colours are {min_pair} apart");
        assert!(min_bg > 95.0, "closest object/background colours are {min_bg} apart");
    }

    #[test]
    fn random_scenes_are_deterministic_and_valid() {
        for seed in 0..200 {
            let a = Scene::random(seed);
            assert_eq!(a, Scene::random(seed));
            a.check().unwrap();
        }
        assert_ne!(Scene::random(1), Scene::random(2));
        let counts: Vec<usize> = (0..400).map(|s| Scene::random(s).objects.len()).collect();
        for n in 1..=4 {
            assert!(counts.iter().filter(|&&c| c == n).count() > 60, "too few {n}-object scenes");
        }
        assert_eq!(Scene::random_with(7, 3).objects.len(), 3);
    }

    #[test]
    fn specs_are_respected() {
        let specs = [
            ObjectSpec {
                shape: Some(Shape::Star),
                cell: Some(Cell::new(0, 0)),
                ..Default::default()
            },
            ObjectSpec { color: Some(Color::Pink), size: Some(Size::Small), ..Default::default() },
        ];
        let s = Scene::from_specs(&specs, 3);
        assert_eq!(s.objects[0].shape, Shape::Star);
        assert_eq!(s.objects[0].cell, Cell::new(0, 0));
        assert_eq!(s.objects[1].color, Color::Pink);
        assert_eq!(s.objects[1].size, Size::Small);
        assert_ne!(s.objects[1].cell, Cell::new(0, 0));
    }

    #[test]
    fn check_rejects_shared_cells() {
        let mut s = Scene::random_with(5, 2);
        s.objects[1].cell = s.objects[0].cell;
        assert!(s.check().unwrap_err().to_string().contains("share cell"));
        let json = serde_json::to_string(&Scene::random(9)).unwrap();
        assert_eq!(serde_json::from_str::<Scene>(&json).unwrap(), Scene::random(9));
    }

    #[test]
    fn relations_follow_cells_and_points() {
        let (a, b) = (Cell::new(0, 1), Cell::new(1, 0));
        assert!(Relation::LeftOf.holds_cells(a, b));
        assert!(Relation::Below.holds_cells(a, b));
        assert!(!Relation::Above.holds_cells(a, b) && !Relation::RightOf.holds_cells(a, b));
        assert!(Relation::LeftOf.holds_points([0.2, 0.5], [0.5, 0.5], 0.1));
        assert!(!Relation::LeftOf.holds_points([0.45, 0.5], [0.5, 0.5], 0.1));
        assert_eq!(Cell::from_point([0.51, 0.99]), Cell::new(1, 1));
        assert_eq!(Cell::from_point([0.49, 0.51]), Cell::new(0, 1));
        assert_eq!(Cell::from_point([-0.1, 1.2]), Cell::new(0, 1));
    }
}
