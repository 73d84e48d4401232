//! GenEval-style text-to-image benchmark over the world: the six GenEval categories, a fixed
//! prompt set from seeds, scenes that satisfy each prompt, detector-based scoring, and
//! conversion to and from GenEval's JSONL metadata.
//!
//! Prompt texts are captions of the training grammar ("two red circles", "a star to the right
//! of a circle") so a model trained on world captions understands them. Scoring follows GenEval:
//! an object requirement is met by at least `count` matching detections (exactly `count` for
//! `counting`), and a position holds when the detected centres are separated by more than
//! [`POSITION_MARGIN`] along the relation's axis.

use std::collections::BTreeMap;

use image::RgbImage;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::detect::{DetectedObject, detect, perfect_detection};
use super::scene::{Cell, Color, MAX_OBJECTS, ObjectSpec, Relation, Scene, Shape};
use super::text::noun_phrase;

/// Least centre separation (fraction of the side) for a position to hold; GenEval's value.
pub const POSITION_MARGIN: f32 = 0.1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    SingleObject,
    TwoObject,
    Counting,
    Colors,
    Position,
    ColorAttr,
}

impl Category {
    pub const ALL: [Category; 6] = [
        Category::SingleObject,
        Category::TwoObject,
        Category::Counting,
        Category::Colors,
        Category::Position,
        Category::ColorAttr,
    ];

    /// GenEval's `tag`.
    pub fn tag(self) -> &'static str {
        match self {
            Category::SingleObject => "single_object",
            Category::TwoObject => "two_object",
            Category::Counting => "counting",
            Category::Colors => "colors",
            Category::Position => "position",
            Category::ColorAttr => "color_attr",
        }
    }

    pub fn from_tag(tag: &str) -> Option<Category> {
        Category::ALL.into_iter().find(|c| c.tag() == tag)
    }
}

/// Objects of `shape` (and `color`, if given) the image must contain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Requirement {
    pub shape: Shape,
    pub count: usize,
    pub color: Option<Color>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GenEvalPrompt {
    pub category: Category,
    pub text: String,
    pub include: Vec<Requirement>,
    /// For `position`: `include[0]` stands in this relation to `include[1]`.
    pub relation: Option<Relation>,
}

impl Requirement {
    /// Whether an object of this shape and colour counts towards the requirement.
    pub fn matches(&self, shape: Shape, color: Color) -> bool {
        shape == self.shape && self.color.is_none_or(|c| c == color)
    }
}

fn req(shape: Shape, count: usize, color: Option<Color>) -> Requirement {
    Requirement { shape, count, color }
}

impl GenEvalPrompt {
    fn new(category: Category, include: Vec<Requirement>, relation: Option<Relation>) -> Self {
        let phrase = |r: &Requirement| noun_phrase(r.count, None, r.color, Some(r.shape));
        let text = match relation {
            Some(rel) => {
                format!("{} {} {}", phrase(&include[0]), rel.phrase(), phrase(&include[1]))
            }
            None => include.iter().map(phrase).collect::<Vec<_>>().join(" and "),
        };
        GenEvalPrompt { category, text, include, relation }
    }

    pub fn single_object(shape: Shape) -> Self {
        Self::new(Category::SingleObject, vec![req(shape, 1, None)], None)
    }

    pub fn two_object(a: Shape, b: Shape) -> Self {
        assert_ne!(a, b, "two_object needs two different shapes");
        Self::new(Category::TwoObject, vec![req(a, 1, None), req(b, 1, None)], None)
    }

    pub fn counting(shape: Shape, n: usize) -> Self {
        assert!((2..=MAX_OBJECTS).contains(&n), "counting needs 2..=4 objects, got {n}");
        Self::new(Category::Counting, vec![req(shape, n, None)], None)
    }

    pub fn colors(shape: Shape, color: Color) -> Self {
        Self::new(Category::Colors, vec![req(shape, 1, Some(color))], None)
    }

    /// "`subject` is `relation` `reference`", e.g. a star to the right of a circle.
    pub fn position(subject: Shape, relation: Relation, reference: Shape) -> Self {
        assert_ne!(subject, reference, "position needs two different shapes");
        Self::new(
            Category::Position,
            vec![req(subject, 1, None), req(reference, 1, None)],
            Some(relation),
        )
    }

    pub fn color_attr(a: (Shape, Color), b: (Shape, Color)) -> Self {
        assert_ne!(a.0, b.0, "color_attr needs two different shapes");
        Self::new(Category::ColorAttr, vec![req(a.0, 1, Some(a.1)), req(b.0, 1, Some(b.1))], None)
    }

    /// A scene satisfying the prompt with exact counts (so the prompt is also a true caption),
    /// plus up to two distractors of shapes the prompt does not mention.
    pub fn example_scene(&self, seed: u64) -> Scene {
        self.scene_with_distractors(seed, 2)
    }

    /// A scene satisfying the prompt with exact counts, plus up to `most` distractors (as many as
    /// the grid has room for) of shapes the prompt does not mention. With `most` 0 the prompt
    /// names everything in the scene: it is the scene's complete caption.
    pub fn scene_with_distractors(&self, seed: u64, most: usize) -> Scene {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut specs: Vec<ObjectSpec> = Vec::new();
        let cells: Option<(Cell, Cell)> = self.relation.map(|rel| {
            let pairs: Vec<(Cell, Cell)> = Cell::all()
                .flat_map(|a| Cell::all().map(move |b| (a, b)))
                .filter(|&(a, b)| rel.holds_cells(a, b))
                .collect();
            *pairs.choose(&mut rng).expect("every relation has cell pairs")
        });
        for (i, r) in self.include.iter().enumerate() {
            for _ in 0..r.count {
                let cell = cells.map(|(a, b)| if i == 0 { a } else { b });
                specs.push(ObjectSpec { shape: Some(r.shape), color: r.color, size: None, cell });
            }
        }
        let others: Vec<Shape> =
            Shape::ALL.into_iter().filter(|s| self.include.iter().all(|r| r.shape != *s)).collect();
        let n_extra = rng.random_range(0..=(MAX_OBJECTS - specs.len()).min(most));
        for _ in 0..n_extra {
            specs
                .push(ObjectSpec { shape: others.choose(&mut rng).copied(), ..Default::default() });
        }
        specs.shuffle(&mut rng);
        Scene::from_specs_rng(&specs, &mut rng)
    }

    /// The same prompt naming its two objects in the order a reader meets them in `scene` (row by
    /// row, left to right), as the world's captions do; other prompts, and prompts the scene does
    /// not satisfy, come back unchanged. Training captions follow this order so that "a red
    /// circle and a blue square" also says which object comes first, the order in which the
    /// generator draws them.
    pub fn in_reading_order(self, scene: &Scene) -> GenEvalPrompt {
        let first = |r: &Requirement| {
            scene
                .objects
                .iter()
                .filter(|o| r.matches(o.shape, o.color))
                .map(|o| o.cell.reading_order())
                .min()
        };
        let later = |a: &Requirement, b: &Requirement| match (first(a), first(b)) {
            (Some(x), Some(y)) => x > y,
            _ => false,
        };
        match (self.category, &self.include[..]) {
            (Category::TwoObject, &[a, b]) if later(&a, &b) => {
                GenEvalPrompt::two_object(b.shape, a.shape)
            }
            (Category::ColorAttr, &[a, b]) if later(&a, &b) => {
                let colour = |r: Requirement| r.color.expect("color_attr names colours");
                GenEvalPrompt::color_attr((b.shape, colour(b)), (a.shape, colour(a)))
            }
            _ => self,
        }
    }

    /// Whether detections satisfy the prompt.
    pub fn score(&self, found: &[DetectedObject]) -> bool {
        let matching = |r: &Requirement| -> Vec<&DetectedObject> {
            found.iter().filter(|d| r.matches(d.shape, d.color)).collect()
        };
        let counts_ok = self.include.iter().all(|r| {
            let n = matching(r).len();
            if self.category == Category::Counting { n == r.count } else { n >= r.count }
        });
        counts_ok
            && self.relation.is_none_or(|rel| {
                let (subjects, references) =
                    (matching(&self.include[0]), matching(&self.include[1]));
                subjects.iter().any(|a| {
                    references.iter().any(|b| rel.holds_points(a.center, b.center, POSITION_MARGIN))
                })
            })
    }
}

/// Every distinct prompt of a category (5, 20, 15, 40, 80 and 1120 of them).
pub fn all_prompts(category: Category) -> Vec<GenEvalPrompt> {
    let shapes = Shape::ALL;
    let pairs = || {
        shapes
            .into_iter()
            .flat_map(move |a| shapes.into_iter().filter(move |&b| b != a).map(move |b| (a, b)))
    };
    match category {
        Category::SingleObject => shapes.map(GenEvalPrompt::single_object).to_vec(),
        Category::TwoObject => pairs().map(|(a, b)| GenEvalPrompt::two_object(a, b)).collect(),
        Category::Counting => shapes
            .into_iter()
            .flat_map(|s| (2..=MAX_OBJECTS).map(move |n| GenEvalPrompt::counting(s, n)))
            .collect(),
        Category::Colors => shapes
            .into_iter()
            .flat_map(|s| Color::ALL.map(|c| GenEvalPrompt::colors(s, c)))
            .collect(),
        Category::Position => pairs()
            .flat_map(|(a, b)| Relation::ALL.map(|r| GenEvalPrompt::position(a, r, b)))
            .collect(),
        Category::ColorAttr => pairs()
            .flat_map(|(a, b)| {
                Color::ALL.into_iter().flat_map(move |ca| {
                    Color::ALL
                        .into_iter()
                        .filter(move |&cb| cb != ca)
                        .map(move |cb| GenEvalPrompt::color_attr((a, ca), (b, cb)))
                })
            })
            .collect(),
    }
}

/// `n` prompts of a category: all distinct prompts in a seeded order, cycled when `n` exceeds
/// them, so small categories are covered evenly.
pub fn prompts(category: Category, n: usize, seed: u64) -> Vec<GenEvalPrompt> {
    let mut all = all_prompts(category);
    all.shuffle(&mut ChaCha8Rng::seed_from_u64(seed ^ category as u64));
    all.iter().cycle().take(n).cloned().collect()
}

/// The benchmark prompt set: `n_per_category` prompts of each of the six categories.
pub fn benchmark_prompts(n_per_category: usize, seed: u64) -> Vec<GenEvalPrompt> {
    Category::ALL.into_iter().flat_map(|c| prompts(c, n_per_category, seed)).collect()
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CategoryScore {
    pub correct: usize,
    pub total: usize,
    pub score: f32,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GenEvalReport {
    pub per_category: BTreeMap<Category, CategoryScore>,
    /// Mean of the category scores, as GenEval reports it.
    pub overall: f32,
}

/// Aggregates per-prompt results (category, correct) into per-category and overall scores.
pub fn aggregate(results: &[(Category, bool)]) -> GenEvalReport {
    let mut per_category: BTreeMap<Category, CategoryScore> = BTreeMap::new();
    for &(c, ok) in results {
        let s = per_category.entry(c).or_default();
        s.total += 1;
        s.correct += usize::from(ok);
    }
    for s in per_category.values_mut() {
        s.score = s.correct as f32 / s.total as f32;
    }
    let overall = if per_category.is_empty() {
        0.0
    } else {
        per_category.values().map(|s| s.score).sum::<f32>() / per_category.len() as f32
    };
    GenEvalReport { per_category, overall }
}

/// What a model that ignores its prompts would score: random world scenes, `per_category` prompts
/// of each category, judged on the scenes' truth.
pub fn chance_level(per_category: usize, seed: u64) -> GenEvalReport {
    let results: Vec<(Category, bool)> = Category::ALL
        .iter()
        .flat_map(|&c| prompts(c, per_category, seed).into_iter().enumerate())
        .map(|(i, p)| {
            (p.category, p.score(&perfect_detection(&Scene::random(1_000_000 + i as u64))))
        })
        .collect();
    aggregate(&results)
}

/// Detects objects in each generated image (in parallel) and scores it against its prompt.
pub fn score_images(prompts: &[GenEvalPrompt], images: &[RgbImage]) -> GenEvalReport {
    assert_eq!(prompts.len(), images.len(), "one image per prompt");
    let results: Vec<(Category, bool)> = prompts
        .par_iter()
        .zip(images)
        .map(|(p, img)| (p.category, p.score(&detect(img))))
        .collect();
    aggregate(&results)
}

#[cfg(test)]
mod tests {
    use super::super::detect::perfect_detection;
    use super::super::parse::{ObjectView, text_holds};
    use super::super::render::render;
    use super::super::scene::Size;
    use super::*;

    fn det(shape: Shape, color: Color, center: [f32; 2]) -> DetectedObject {
        DetectedObject {
            shape,
            color,
            size: Size::Large,
            center,
            cell: Cell::from_point(center),
            area: 0.05,
            confidence: 1.0,
        }
    }

    #[test]
    fn reading_order_names_the_first_object_first_and_keeps_the_prompt_true() {
        let read_at = |p: &GenEvalPrompt, scene: &Scene, i: usize| {
            let r = p.include[i];
            let cells = scene.objects.iter().filter(|o| r.matches(o.shape, o.color));
            cells.map(|o| o.cell.reading_order()).min().expect("the scene satisfies the prompt")
        };
        let mut swapped = 0;
        for cat in [Category::TwoObject, Category::ColorAttr] {
            for (seed, p) in prompts(cat, 60, 3).into_iter().enumerate() {
                let scene = p.example_scene(seed as u64);
                let q = p.clone().in_reading_order(&scene);
                assert!(read_at(&q, &scene, 0) < read_at(&q, &scene, 1), "{:?} {scene:?}", q.text);
                assert!(q.score(&perfect_detection(&scene)), "{} no longer holds", q.text);
                let (mut a, mut b) = (p.include.clone(), q.include.clone());
                a.sort_by_key(|r| r.shape);
                b.sort_by_key(|r| r.shape);
                assert_eq!(a, b, "the same objects, in some order");
                swapped += usize::from(q != p);
            }
        }
        // Example scenes place objects at random, so about half the prompts turn around.
        assert!((30..=90).contains(&swapped), "{swapped} of 120 swapped");
        // A relation keeps its grammar: its words say where each object is.
        let p = GenEvalPrompt::position(Shape::Star, Relation::RightOf, Shape::Circle);
        let scene = p.example_scene(0);
        assert_eq!(p.clone().in_reading_order(&scene), p);
        // A scene without one of the objects says nothing about their order.
        let p = GenEvalPrompt::two_object(Shape::Star, Shape::Circle);
        let circle_only = GenEvalPrompt::single_object(Shape::Circle).example_scene(0);
        let circle_only = Scene {
            objects: circle_only.objects.into_iter().filter(|o| o.shape != Shape::Star).collect(),
            ..circle_only
        };
        assert_eq!(p.clone().in_reading_order(&circle_only), p);
    }

    #[test]
    fn prompt_texts_and_set_sizes() {
        let sizes: Vec<usize> = Category::ALL.iter().map(|&c| all_prompts(c).len()).collect();
        assert_eq!(sizes, [5, 20, 15, 40, 80, 1120]);
        assert_eq!(GenEvalPrompt::single_object(Shape::Circle).text, "a circle");
        assert_eq!(
            GenEvalPrompt::two_object(Shape::Circle, Shape::Star).text,
            "a circle and a star"
        );
        assert_eq!(GenEvalPrompt::counting(Shape::Circle, 2).text, "two circles");
        assert_eq!(GenEvalPrompt::colors(Shape::Star, Color::Orange).text, "an orange star");
        let p = GenEvalPrompt::position(Shape::Square, Relation::LeftOf, Shape::Star);
        assert_eq!(p.text, "a square to the left of a star");
        let p =
            GenEvalPrompt::color_attr((Shape::Square, Color::Blue), (Shape::Star, Color::Yellow));
        assert_eq!(p.text, "a blue square and a yellow star");
    }

    #[test]
    fn prompt_sets_are_fixed_and_cover_categories_evenly() {
        assert_eq!(benchmark_prompts(30, 7), benchmark_prompts(30, 7));
        assert_ne!(prompts(Category::Position, 30, 7), prompts(Category::Position, 30, 8));
        let singles = prompts(Category::SingleObject, 10, 3);
        for s in Shape::ALL {
            assert_eq!(singles.iter().filter(|p| p.include[0].shape == s).count(), 2);
        }
    }

    #[test]
    fn scoring_rules_by_hand() {
        let circle = det(Shape::Circle, Color::Red, [0.2, 0.5]);
        let star = det(Shape::Star, Color::Blue, [0.5, 0.5]);
        let near_star = det(Shape::Star, Color::Blue, [0.25, 0.5]);
        let right = GenEvalPrompt::position(Shape::Star, Relation::RightOf, Shape::Circle);
        assert!(right.score(&[circle, star]));
        // 0.05 apart is within the 0.1 margin: not "right of".
        assert!(!right.score(&[circle, near_star]));
        assert!(!right.score(&[star]));
        let two = GenEvalPrompt::counting(Shape::Star, 2);
        assert!(two.score(&[star, near_star, circle]));
        assert!(!two.score(&[star, near_star, det(Shape::Star, Color::Red, [0.8, 0.8])]));
        assert!(GenEvalPrompt::single_object(Shape::Star).score(&[star, near_star]));
        assert!(GenEvalPrompt::colors(Shape::Circle, Color::Red).score(&[circle]));
        assert!(!GenEvalPrompt::colors(Shape::Circle, Color::Blue).score(&[circle, star]));
        let attr =
            GenEvalPrompt::color_attr((Shape::Circle, Color::Red), (Shape::Star, Color::Blue));
        assert!(attr.score(&[circle, star]));
        assert!(
            !GenEvalPrompt::color_attr((Shape::Circle, Color::Blue), (Shape::Star, Color::Red))
                .score(&[circle, star])
        );
    }

    #[test]
    fn aggregate_is_the_mean_of_categories() {
        use Category::*;
        let r =
            aggregate(&[(Counting, true), (Counting, false), (Counting, false), (Colors, true)]);
        assert_eq!(
            r.per_category[&Counting],
            CategoryScore { correct: 1, total: 3, score: 1.0 / 3.0 }
        );
        // (1/3 + 1) / 2, not the pooled 2/4.
        assert!((r.overall - 2.0 / 3.0).abs() < 1e-6);
    }

    #[test]
    fn without_distractors_a_prompt_names_everything_in_its_scene() {
        let (mut with_extras, mut scenes) = (0, 0);
        for c in Category::ALL {
            for (i, p) in all_prompts(c).iter().enumerate().step_by(7) {
                let named: usize = p.include.iter().map(|r| r.count).sum();
                let exact = p.scene_with_distractors(i as u64, 0);
                assert!(p.score(&perfect_detection(&exact)), "{p:?} unsatisfied by {exact:?}");
                assert_eq!(exact.objects.len(), named, "{:?} in {exact:?}", p.text);
                let example = p.example_scene(i as u64);
                assert!(example.objects.len() <= (named + 2).min(MAX_OBJECTS), "{example:?}");
                with_extras += usize::from(example.objects.len() > named);
                scenes += 1;
            }
        }
        // Example scenes draw 0..=2 distractors where there is room, so many have some.
        assert!(with_extras * 3 > scenes, "{with_extras} of {scenes} example scenes had extras");
    }

    #[test]
    fn example_scenes_satisfy_their_prompts_as_captions_too() {
        for c in Category::ALL {
            for (i, p) in all_prompts(c).iter().enumerate() {
                let scene = p.example_scene(i as u64);
                assert!(p.score(&perfect_detection(&scene)), "{p:?} unsatisfied by {scene:?}");
                let views: Vec<ObjectView> = scene.objects.iter().map(ObjectView::from).collect();
                assert!(
                    text_holds(&p.text, &views),
                    "caption {:?} false of its example scene",
                    p.text
                );
            }
        }
    }

    #[test]
    fn oracle_scores_near_one_and_random_images_score_chance() {
        let prompts = benchmark_prompts(250, 42);
        let oracle: Vec<RgbImage> = prompts
            .par_iter()
            .enumerate()
            .map(|(i, p)| render(&p.example_scene(i as u64), 64))
            .collect();
        let oracle = score_images(&prompts, &oracle);
        let random: Vec<RgbImage> = (0..prompts.len() as u64)
            .into_par_iter()
            .map(|s| render(&Scene::random(s), 64))
            .collect();
        let random = score_images(&prompts, &random);
        let chance = chance_level(4000, 42);
        for c in Category::ALL {
            let (o, r, ch) = (
                oracle.per_category[&c].score,
                random.per_category[&c].score,
                chance.per_category[&c].score,
            );
            println!("{:>13}: oracle {o:.3} random {r:.3} chance {ch:.3}", c.tag());
            assert!(o >= 0.98, "{c:?} oracle {o}");
            assert!(r <= o - 0.5, "{c:?}: random {r} too close to oracle {o}");
            // 250 prompts: binomial standard error ≤ 0.032, so 0.1 is three of them.
            assert!((r - ch).abs() < 0.1, "{c:?}: random {r} vs chance {ch}");
        }
        println!(
            "overall: oracle {:.3} random {:.3} chance {:.3}",
            oracle.overall, random.overall, chance.overall
        );
        assert!(oracle.overall >= 0.99, "oracle overall {}", oracle.overall);
        assert!(random.overall < 0.25 && (random.overall - chance.overall).abs() < 0.04);
    }
}
