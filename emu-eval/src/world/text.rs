//! Captions for scenes and videos: several templates per scene, deterministic given the seed.
//!
//! Text is lowercase ASCII words separated by single spaces with no final period, so a small
//! BPE tokenizer sees a tiny closed vocabulary. Every count in a caption is exact ("two red
//! circles" means exactly two), and objects in a relation or with an event are described so
//! that exactly one object fits. A still scene's caption that lists objects lists them in
//! reading order (row by row, left to right), so the order of its phrases says which comes
//! first; a video's clauses stay in random order. GenEval prompts are captions of this same
//! grammar.

use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::scene::{Cell, Color, Object, Relation, Scene, Shape, Size};
use super::video::{Event, VideoObject, VideoScene};

/// Number words for counts 1..=4 (0 is never said).
pub fn number_word(n: usize) -> &'static str {
    match n {
        1 => "one",
        2 => "two",
        3 => "three",
        4 => "four",
        _ => panic!("no number word for {n}: scenes hold 1..=4 objects"),
    }
}

pub fn number_from_word(word: &str) -> Option<usize> {
    match word {
        "a" | "an" | "one" => Some(1),
        "two" => Some(2),
        "three" => Some(3),
        "four" => Some(4),
        _ => None,
    }
}

/// "a red circle", "an orange star", "two small circles", "three objects".
pub fn noun_phrase(
    count: usize,
    size: Option<Size>,
    color: Option<Color>,
    shape: Option<Shape>,
) -> String {
    let mut words: Vec<&str> = Vec::new();
    words.extend(size.map(Size::name));
    words.extend(color.map(Color::name));
    words.push(match (shape, count) {
        (Some(s), 1) => s.name(),
        (Some(s), _) => s.plural(),
        (None, 1) => "object",
        (None, _) => "objects",
    });
    let head = if count == 1 {
        if words[0].starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" }
    } else {
        number_word(count)
    };
    format!("{head} {}", words.join(" "))
}

/// How an object is named: which attributes the phrase includes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Detail {
    Shape,
    ColorShape,
    SizeColorShape,
}

impl Detail {
    pub const ALL: [Detail; 3] = [Detail::Shape, Detail::ColorShape, Detail::SizeColorShape];

    fn key(self, o: &Object) -> (Option<Size>, Option<Color>, Shape) {
        match self {
            Detail::Shape => (None, None, o.shape),
            Detail::ColorShape => (None, Some(o.color), o.shape),
            Detail::SizeColorShape => (Some(o.size), Some(o.color), o.shape),
        }
    }
}

/// Caption templates for still scenes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaptionTemplate {
    /// Every object, grouped at the given detail, groups in reading order of their first
    /// object: "a red circle and two blue squares".
    Inventory(Detail),
    /// Total count: "three objects".
    Total,
    /// One group at the given detail: "two circles", "a red circle".
    Group(Detail),
    /// Two groups with different shapes, in reading order: "a circle and a star", "a red circle
    /// and a blue star".
    Pair(Detail),
    /// Two uniquely named objects and a relation: "a blue square to the left of a yellow star".
    Relation(Detail),
}

impl CaptionTemplate {
    pub const ALL: [CaptionTemplate; 12] = [
        CaptionTemplate::Inventory(Detail::Shape),
        CaptionTemplate::Inventory(Detail::ColorShape),
        CaptionTemplate::Inventory(Detail::SizeColorShape),
        CaptionTemplate::Total,
        CaptionTemplate::Group(Detail::Shape),
        CaptionTemplate::Group(Detail::ColorShape),
        CaptionTemplate::Group(Detail::SizeColorShape),
        CaptionTemplate::Pair(Detail::Shape),
        CaptionTemplate::Pair(Detail::ColorShape),
        CaptionTemplate::Relation(Detail::Shape),
        CaptionTemplate::Relation(Detail::ColorShape),
        CaptionTemplate::Relation(Detail::SizeColorShape),
    ];
}

/// Objects grouped by their phrase key, with counts, in order of first appearance.
fn groups(
    objects: &[Object],
    detail: Detail,
) -> Vec<((Option<Size>, Option<Color>, Shape), usize)> {
    let mut out: Vec<((Option<Size>, Option<Color>, Shape), usize)> = Vec::new();
    for o in objects {
        let k = detail.key(o);
        match out.iter_mut().find(|(g, _)| *g == k) {
            Some((_, n)) => *n += 1,
            None => out.push((k, 1)),
        }
    }
    out
}

fn group_phrase(key: (Option<Size>, Option<Color>, Shape), n: usize) -> String {
    noun_phrase(n, key.0, key.1, Some(key.2))
}

/// A caption from one template, or `None` if the scene cannot support it (e.g. a relation
/// caption needs two objects that can be named uniquely).
pub fn caption_with(scene: &Scene, template: CaptionTemplate, seed: u64) -> Option<String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut objs = scene.objects.clone();
    objs.sort_by_key(|o| o.cell.reading_order());
    let objs = &objs;
    match template {
        CaptionTemplate::Total => Some(noun_phrase(objs.len(), None, None, None)),
        CaptionTemplate::Inventory(detail) => {
            let gs = groups(objs, detail);
            Some(gs.iter().map(|&(k, n)| group_phrase(k, n)).collect::<Vec<_>>().join(" and "))
        }
        CaptionTemplate::Group(detail) => {
            let gs = groups(objs, detail);
            let &(k, n) = gs.choose(&mut rng)?;
            Some(group_phrase(k, n))
        }
        CaptionTemplate::Pair(detail) => {
            let gs = groups(objs, detail);
            let pairs: Vec<(usize, usize)> = (0..gs.len())
                .flat_map(|i| (0..gs.len()).map(move |j| (i, j)))
                .filter(|&(i, j)| i < j && gs[i].0.2 != gs[j].0.2)
                .collect();
            let &(i, j) = pairs.choose(&mut rng)?;
            Some(format!(
                "{} and {}",
                group_phrase(gs[i].0, gs[i].1),
                group_phrase(gs[j].0, gs[j].1)
            ))
        }
        CaptionTemplate::Relation(detail) => {
            let unique: Vec<&Object> = objs
                .iter()
                .filter(|o| objs.iter().filter(|p| detail.key(p) == detail.key(o)).count() == 1)
                .collect();
            let mut options = Vec::new();
            for a in &unique {
                for b in &unique {
                    for rel in Relation::ALL {
                        if rel.holds_cells(a.cell, b.cell) {
                            options.push((*a, rel, *b));
                        }
                    }
                }
            }
            let &(a, rel, b) = options.choose(&mut rng)?;
            Some(format!(
                "{} {} {}",
                group_phrase(detail.key(a), 1),
                rel.phrase(),
                group_phrase(detail.key(b), 1)
            ))
        }
    }
}

/// Ends the reasoning that may open an answer: a chat model trained with
/// [`reasoned_answer`] states the scene's [`layout`], then this mark, then its answer.
pub const REASONING_END: char = ':';

/// The scene's layout: each object's colour, shape and cell, in reading order, such as
/// "purple triangle top left, orange circle top right, green diamond bottom left". Every
/// question the world asks about a still scene can be answered by reading this text alone, which
/// is why a chat model may say it before it answers ([`reasoned_answer`]).
pub fn layout(scene: &Scene) -> String {
    let mut objs: Vec<&Object> = scene.objects.iter().collect();
    objs.sort_by_key(|o| o.cell.reading_order());
    places(&objs)
}

/// Objects in a layout's words, in the order given: "red circle top left, blue star top right".
pub fn places(objects: &[&Object]) -> String {
    objects
        .iter()
        .map(|o| format!("{} {} {}", o.color.name(), o.shape.name(), o.cell.name()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A layout read back: each item's colour, shape and cell, or `None` unless every item is
/// "{colour} {shape} {cell}" with names the world knows and no cell holds two objects.
pub fn read_layout(text: &str) -> Option<Vec<(Color, Shape, Cell)>> {
    let mut out: Vec<(Color, Shape, Cell)> = Vec::new();
    for item in text.trim().split(", ") {
        let (color, rest) = item.split_once(' ')?;
        let (shape, cell) = rest.split_once(' ')?;
        let cell = Cell::all().find(|c| c.name() == cell)?;
        if out.iter().any(|o| o.2 == cell) {
            return None;
        }
        out.push((Color::from_name(color)?, Shape::from_name(shape)?, cell));
    }
    Some(out)
}

/// An answer that first states its reasoning: "{reasoning}: {answer}".
pub fn reasoned_answer(reasoning: &str, answer: &str) -> String {
    format!("{reasoning}{REASONING_END} {answer}")
}

/// Templates this scene supports.
pub fn applicable_templates(scene: &Scene) -> Vec<CaptionTemplate> {
    CaptionTemplate::ALL.into_iter().filter(|&t| caption_with(scene, t, 0).is_some()).collect()
}

/// A caption from a template drawn uniformly (by `seed`) among those the scene supports.
pub fn caption(scene: &Scene, seed: u64) -> String {
    let templates = applicable_templates(scene);
    let t = templates[ChaCha8Rng::seed_from_u64(seed ^ 0xc0ffee).random_range(0..templates.len())];
    caption_with(scene, t, seed).expect("applicable template yields a caption")
}

/// The shortest description (by [`Detail`]) that names exactly one object of a video, judged on
/// first-frame attributes.
pub fn unique_detail(objects: &[VideoObject], i: usize, details: &[Detail]) -> Option<Detail> {
    let me = &objects[i].object;
    details
        .iter()
        .copied()
        .find(|d| objects.iter().filter(|o| d.key(&o.object) == d.key(me)).count() == 1)
}

/// Caption templates for videos: every event, with objects named by colour and shape, or by
/// shape alone where that is unique.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VideoTemplate {
    Events,
    ShapeEvents,
}

/// "moves right", "appears", "turns blue".
pub fn event_phrase(e: &Event) -> String {
    match e {
        Event::Moves { direction, .. } => format!("moves {}", direction.name()),
        Event::Appears { .. } => "appears".to_string(),
        Event::ChangesColor { to, .. } => format!("turns {}", to.name()),
    }
}

/// "a green triangle moves right and a red circle appears"; `None` if no event object can be
/// named uniquely at the template's detail.
pub fn video_caption_with(
    video: &VideoScene,
    template: VideoTemplate,
    seed: u64,
) -> Option<String> {
    let details: &[Detail] = match template {
        VideoTemplate::Events => &[Detail::ColorShape, Detail::SizeColorShape],
        VideoTemplate::ShapeEvents => &[Detail::Shape],
    };
    let mut clauses: Vec<String> = Vec::new();
    for (i, o) in video.objects.iter().enumerate() {
        if let (Some(e), Some(d)) = (o.event, unique_detail(&video.objects, i, details)) {
            clauses.push(format!("{} {}", group_phrase(d.key(&o.object), 1), event_phrase(&e)));
        }
    }
    if clauses.len() < video.objects.iter().filter(|o| o.event.is_some()).count()
        || clauses.is_empty()
    {
        return None;
    }
    clauses.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    Some(clauses.join(" and "))
}

/// A video caption, preferring (by `seed`) either template when both apply.
pub fn video_caption(video: &VideoScene, seed: u64) -> String {
    let mut templates = [VideoTemplate::Events, VideoTemplate::ShapeEvents];
    templates.shuffle(&mut ChaCha8Rng::seed_from_u64(seed ^ 0xc0ffee));
    templates.iter().find_map(|&t| video_caption_with(video, t, seed)).unwrap_or_else(|| {
        // Two identical objects with events cannot be told apart; describe the first frame.
        let first = Scene {
            objects: video.objects.iter().map(|o| o.object).collect(),
            background: video.background,
        };
        caption_with(&first, CaptionTemplate::Inventory(Detail::ColorShape), seed)
            .expect("inventory always applies")
    })
}

#[cfg(test)]
mod tests {
    use super::super::scene::{Background, Cell};
    use super::super::video::Direction;
    use super::*;

    fn obj(shape: Shape, color: Color, size: Size, col: u8, row: u8) -> Object {
        Object { shape, color, size, cell: Cell::new(col, row), jitter: [0.0, 0.0] }
    }

    fn scene(objects: Vec<Object>) -> Scene {
        Scene::new(objects, Background::Plain { base: [128; 3] })
    }

    #[test]
    fn noun_phrases_use_articles_and_plurals() {
        assert_eq!(noun_phrase(1, None, Some(Color::Red), Some(Shape::Circle)), "a red circle");
        assert_eq!(noun_phrase(1, None, Some(Color::Orange), Some(Shape::Star)), "an orange star");
        assert_eq!(
            noun_phrase(2, Some(Size::Small), None, Some(Shape::Diamond)),
            "two small diamonds"
        );
        assert_eq!(noun_phrase(3, None, None, None), "three objects");
        assert_eq!(noun_phrase(1, None, None, None), "an object");
    }

    #[test]
    fn a_layout_answers_every_question_about_its_scene() {
        use super::super::parse::ObjectView;
        use super::super::qa::{answer_question, scene_questions};
        let s = scene(vec![
            obj(Shape::Star, Color::Yellow, Size::Large, 1, 1),
            obj(Shape::Circle, Color::Red, Size::Small, 1, 0),
            obj(Shape::Square, Color::Blue, Size::Large, 0, 1),
        ]);
        assert_eq!(
            layout(&s),
            "red circle top right, blue square bottom left, yellow star bottom right"
        );
        // Read a layout back with nothing but its words, then answer from that alone.
        let read = |text: &str| -> Vec<ObjectView> {
            read_layout(text)
                .unwrap_or_else(|| panic!("{text:?} does not read back"))
                .into_iter()
                .map(|(color, shape, cell)| {
                    ObjectView::from(&obj(shape, color, Size::Large, cell.col, cell.row))
                })
                .collect()
        };
        for bad in [
            "",
            "red circle",
            "red blob top left",
            "red circle middle",
            "red circle top left, blue star top left",
        ] {
            assert_eq!(read_layout(bad), None, "{bad:?}");
        }
        for seed in 0..300 {
            let s = Scene::random(seed);
            let truth: Vec<ObjectView> = s.objects.iter().map(ObjectView::from).collect();
            let from_layout = read(&layout(&s));
            for q in scene_questions(&s, seed) {
                assert_eq!(answer_question(&q.question, &truth).as_deref(), Some(&*q.answer));
                assert_eq!(
                    answer_question(&q.question, &from_layout).as_deref(),
                    Some(&*q.answer),
                    "seed {seed}: {:?} from {:?}",
                    q.question,
                    layout(&s)
                );
            }
        }
        assert_eq!(reasoned_answer("red circle top left", "red"), "red circle top left: red");
    }

    #[test]
    fn templates_produce_expected_text() {
        use Color::*;
        let s = scene(vec![
            obj(Shape::Circle, Red, Size::Small, 0, 0),
            obj(Shape::Circle, Red, Size::Large, 1, 0),
            obj(Shape::Star, Yellow, Size::Large, 1, 1),
        ]);
        let inv = caption_with(&s, CaptionTemplate::Inventory(Detail::ColorShape), 1).unwrap();
        assert_eq!(inv, "two red circles and a yellow star");
        assert_eq!(caption_with(&s, CaptionTemplate::Total, 0).unwrap(), "three objects");
        let sized =
            caption_with(&s, CaptionTemplate::Inventory(Detail::SizeColorShape), 4).unwrap();
        assert_eq!(sized.split(" and ").count(), 3, "{sized}");
        // Only the star and the sized circles can be named uniquely, so a colour relation is
        // impossible but a sized one is not.
        assert_eq!(caption_with(&s, CaptionTemplate::Relation(Detail::ColorShape), 0), None);
        let rel = caption_with(&s, CaptionTemplate::Relation(Detail::SizeColorShape), 0).unwrap();
        let allowed = [
            "a small red circle to the left of a large red circle",
            "a large red circle to the right of a small red circle",
            "a small red circle above a large yellow star",
            "a small red circle to the left of a large yellow star",
            "a large red circle above a large yellow star",
            "a large yellow star below a small red circle",
            "a large yellow star to the right of a small red circle",
            "a large yellow star below a large red circle",
        ];
        assert!(allowed.contains(&rel.as_str()), "{rel}");
    }

    #[test]
    fn captions_name_objects_in_reading_order() {
        use CaptionTemplate::{Inventory, Pair};
        use Color::*;
        // Row by row: the circle at (1, 0) is read before the star at (0, 1). The objects are
        // listed in another order, so listing them as stored would fail.
        let s = scene(vec![
            obj(Shape::Square, Blue, Size::Large, 1, 1),
            obj(Shape::Star, Yellow, Size::Large, 0, 1),
            obj(Shape::Circle, Red, Size::Small, 1, 0),
        ]);
        let pairs = ["a circle and a star", "a circle and a square", "a star and a square"];
        let mut seen = std::collections::HashSet::new();
        for seed in 0..20 {
            assert_eq!(
                caption_with(&s, Inventory(Detail::ColorShape), seed).unwrap(),
                "a red circle and a yellow star and a blue square"
            );
            let pair = caption_with(&s, Pair(Detail::Shape), seed).unwrap();
            assert!(pairs.contains(&pair.as_str()), "{pair}");
            seen.insert(pair);
        }
        assert_eq!(seen.len(), 3, "every pair is drawn: {seen:?}");
    }

    #[test]
    fn captions_are_clean_deterministic_and_varied() {
        let mut distinct = std::collections::HashSet::new();
        for seed in 0..300 {
            let s = Scene::random(seed);
            let c = caption(&s, seed);
            assert_eq!(c, caption(&s, seed));
            assert!(c.bytes().all(|b| b.is_ascii_lowercase() || b == b' '), "{c:?}");
            assert!(!c.contains("  ") && !c.starts_with(' ') && !c.ends_with(' '));
            distinct.insert(c);
        }
        assert!(distinct.len() > 200, "only {} distinct captions", distinct.len());
    }

    #[test]
    fn video_captions_describe_events() {
        let mover = VideoObject {
            object: obj(Shape::Triangle, Color::Green, Size::Large, 0, 1),
            event: Some(Event::Moves { direction: Direction::Right, speed: 0.03 }),
        };
        let still =
            VideoObject { object: obj(Shape::Circle, Color::Red, Size::Small, 0, 0), event: None };
        let turner = VideoObject {
            object: obj(Shape::Square, Color::Blue, Size::Small, 1, 1),
            event: Some(Event::ChangesColor { frame: 3, to: Color::Yellow }),
        };
        let v = VideoScene {
            objects: vec![mover, still, turner],
            background: Background::Plain { base: [128; 3] },
            frames: 10,
        };
        let c = video_caption_with(&v, VideoTemplate::Events, 0).unwrap();
        assert!(
            c == "a green triangle moves right and a blue square turns yellow"
                || c == "a blue square turns yellow and a green triangle moves right",
            "{c}"
        );
        let c = video_caption_with(&v, VideoTemplate::ShapeEvents, 0).unwrap();
        assert!(c.contains("a triangle moves right") && c.contains("a square turns yellow"), "{c}");
    }
}
