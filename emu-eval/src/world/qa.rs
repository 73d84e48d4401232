//! Question/answer pairs about scenes and videos for understanding (VQA) training and scoring.
//!
//! Questions are lowercase words ending in "?"; answers are single words. A question is only
//! asked when its answer is unambiguous for the scene (e.g. "what color is the star?" needs
//! exactly one star), and yes/no questions draw the answer first so yes and no are balanced.

use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::parse::ObjectView;
use super::scene::{Color, Object, Relation, Scene, Shape};
use super::text::{Detail, number_word, places, unique_detail};
use super::video::{Event, VideoScene};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QaKind {
    Color,
    Shape,
    Count,
    Relation,
    Motion,
}

impl QaKind {
    pub const ALL: [QaKind; 5] =
        [QaKind::Color, QaKind::Shape, QaKind::Count, QaKind::Relation, QaKind::Motion];
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct QaPair {
    pub kind: QaKind,
    pub question: String,
    pub answer: String,
}

fn qa(kind: QaKind, question: String, answer: &str) -> QaPair {
    QaPair { kind, question, answer: answer.to_string() }
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// "red circle" for objects unique by colour and shape.
fn name(o: &Object) -> String {
    format!("{} {}", o.color.name(), o.shape.name())
}

/// One question of each kind the scene supports (Colour, Shape, Count, Relation), each variant
/// and subject drawn from `seed`.
pub fn scene_questions(scene: &Scene, seed: u64) -> Vec<QaPair> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let objs = &scene.objects;
    let mut out = Vec::new();

    let unique_shapes: Vec<&Object> =
        objs.iter().filter(|o| scene.count_shape(o.shape) == 1).collect();
    if let Some(o) = unique_shapes.choose(&mut rng) {
        out.push(qa(
            QaKind::Color,
            format!("what color is the {}?", o.shape.name()),
            o.color.name(),
        ));
    }
    let color_count = |c: Color| objs.iter().filter(|o| o.color == c).count();
    let unique_colors: Vec<&Object> = objs.iter().filter(|o| color_count(o.color) == 1).collect();
    if let Some(o) = unique_colors.choose(&mut rng) {
        out.push(qa(
            QaKind::Shape,
            format!("what shape is the {} object?", o.color.name()),
            o.shape.name(),
        ));
    }

    let o = objs.choose(&mut rng).expect("scenes are never empty");
    out.push(match rng.random_range(0..3) {
        0 => qa(QaKind::Count, "how many objects are there?".into(), number_word(objs.len())),
        1 => qa(
            QaKind::Count,
            format!("how many {} are there?", o.shape.plural()),
            number_word(scene.count_shape(o.shape)),
        ),
        _ => qa(
            QaKind::Count,
            format!("how many {} objects are there?", o.color.name()),
            number_word(color_count(o.color)),
        ),
    });

    let named: Vec<&Object> = objs
        .iter()
        .filter(|o| objs.iter().filter(|p| (p.color, p.shape) == (o.color, o.shape)).count() == 1)
        .collect();
    let want_yes: bool = rng.random();
    let mut options: Vec<(&Object, Relation, &Object, bool)> = Vec::new();
    for (i, a) in named.iter().enumerate() {
        for (j, b) in named.iter().enumerate() {
            if i != j {
                for rel in Relation::ALL {
                    options.push((a, rel, b, rel.holds_cells(a.cell, b.cell)));
                }
            }
        }
    }
    let preferred: Vec<_> = options.iter().filter(|o| o.3 == want_yes).collect();
    let pool = if preferred.is_empty() { options.iter().collect() } else { preferred };
    if let Some(&&(a, rel, b, holds)) = pool.choose(&mut rng) {
        let q = format!("is the {} {} the {}?", name(a), rel.phrase(), name(b));
        out.push(qa(QaKind::Relation, q, yes_no(holds)));
    }
    out
}

/// One question drawn uniformly among the kinds the scene supports.
pub fn sample_question(scene: &Scene, seed: u64) -> QaPair {
    let qs = scene_questions(scene, seed);
    let i = ChaCha8Rng::seed_from_u64(seed ^ 0x9a).random_range(0..qs.len());
    qs[i].clone()
}

/// Questions about a video: where its event objects go, what they turn into, what appears and
/// how many objects there are at the end. Objects are named by first-frame colour and shape.
pub fn video_questions(video: &VideoScene, seed: u64) -> Vec<QaPair> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let objs = &video.objects;
    let named: Vec<usize> = (0..objs.len())
        .filter(|&i| unique_detail(objs, i, &[Detail::ColorShape]).is_some())
        .collect();
    let mut out = Vec::new();
    for &i in &named {
        let o = &objs[i];
        match o.event {
            Some(Event::Moves { direction, .. }) => out.push(qa(
                QaKind::Motion,
                format!("which way does the {} move?", name(&o.object)),
                direction.name(),
            )),
            Some(Event::ChangesColor { to, .. }) => out.push(qa(
                QaKind::Color,
                format!("what color does the {} turn?", name(&o.object)),
                to.name(),
            )),
            _ => {}
        }
    }
    // Balanced yes/no about motion: choose the answer, then an object that gives it.
    let want_yes: bool = rng.random();
    let movers: Vec<usize> = named
        .iter()
        .copied()
        .filter(|&i| matches!(objs[i].event, Some(Event::Moves { .. })) == want_yes)
        .collect();
    if let Some(&i) = movers.choose(&mut rng) {
        out.push(qa(
            QaKind::Motion,
            format!("does the {} move?", name(&objs[i].object)),
            yes_no(want_yes),
        ));
    }
    let appearing: Vec<&Object> = objs
        .iter()
        .filter(|o| matches!(o.event, Some(Event::Appears { .. })))
        .map(|o| &o.object)
        .collect();
    if let [o] = appearing[..] {
        out.push(qa(QaKind::Shape, "what shape appears?".into(), o.shape.name()));
    }
    out.push(qa(
        QaKind::Count,
        "how many objects are there at the end?".into(),
        number_word(video.frame_objects(video.frames - 1).len()),
    ));
    out.shuffle(&mut rng);
    out
}

/// "is the red circle above the blue star?" → (above, "red circle", "blue star").
fn relation_parts(question: &str) -> Option<(Relation, &str, &str)> {
    let body = question.strip_prefix("is the ")?.strip_suffix('?')?;
    Relation::ALL.into_iter().find_map(|r| {
        let (a, b) = body.split_once(&format!(" {} the ", r.phrase()))?;
        Some((r, a, b))
    })
}

/// What an answer states first when its question searches the image ([`reasoned_answer`]
/// (super::text::reasoned_answer) puts the answer after it): the objects searched for, each with
/// its cell, in the words of [`layout`](super::text::layout). For a relation, its two objects in
/// the order it names them: "is the red circle above the blue star?" → "red circle top left, blue
/// star bottom right". For a count of one shape or colour, what it counts in reading order: "how
/// many circles are there?" → "red circle top left, blue circle bottom right". For a colour, the
/// one object of its shape without its colour, which is the answer: "what color is the circle?"
/// → "circle top left". `None` for other questions (the count of all objects needs no search,
/// and a shape question finds its object by colour, which the codes show directly), when a
/// relation's object is not named uniquely, or when nothing is found.
pub fn placed_first(question: &str, objects: &[Object]) -> Option<String> {
    relation_places(question, objects)
        .or_else(|| count_places(question, objects))
        .or_else(|| color_places(question, objects))
}

/// The one object that `pick` selects, or `None` for none or several.
fn only(objects: &[Object], pick: impl Fn(&Object) -> bool) -> Option<&Object> {
    let mut it = objects.iter().filter(|o| pick(o));
    let first = it.next()?;
    it.next().is_none().then_some(first)
}

/// "what color is the circle?" → "circle top right": the one object of that shape, without the
/// colour. Placed with its colour ("orange circle top right"), the answer's first word was the
/// colour itself, chosen before the object was found; on some training seeds it came out as
/// another object's colour (README, "Places first").
fn color_places(question: &str, objects: &[Object]) -> Option<String> {
    let shape = question.strip_prefix("what color is the ")?.strip_suffix('?')?;
    let s = Shape::from_name(shape)?;
    let o = only(objects, |o| o.shape == s)?;
    Some(format!("{} {}", o.shape.name(), o.cell.name()))
}

fn relation_places(question: &str, objects: &[Object]) -> Option<String> {
    let (_, a, b) = relation_parts(question)?;
    let named = |n: &str| only(objects, |o| name(o) == n);
    Some(places(&[named(a)?, named(b)?]))
}

/// What a count of one colour or shape counts: "how many red objects are there?" → (red, any);
/// "how many circles are there?" → (any, circle). `None` for the count of all objects and for
/// other questions.
fn count_subject(question: &str) -> Option<(Option<Color>, Option<Shape>)> {
    let q = question.strip_prefix("how many ")?.strip_suffix(" are there?")?;
    match q.split_once(' ') {
        Some((color, "objects")) => Some((Some(Color::from_name(color)?), None)),
        None if q != "objects" => {
            Some((None, Some(Shape::ALL.into_iter().find(|s| s.plural() == q)?)))
        }
        _ => None,
    }
}

/// Whether an object of `color` and `shape` is what [`count_subject`] counts.
fn counted(
    (want_color, want_shape): (Option<Color>, Option<Shape>),
    color: Color,
    shape: Shape,
) -> bool {
    want_color.is_none_or(|c| c == color) && want_shape.is_none_or(|s| s == shape)
}

fn count_places(question: &str, objects: &[Object]) -> Option<String> {
    let subject = count_subject(question)?;
    let mut found: Vec<&Object> =
        objects.iter().filter(|o| counted(subject, o.color, o.shape)).collect();
    found.sort_by_key(|o| o.cell.reading_order());
    (!found.is_empty()).then(|| places(&found))
}

/// Answers a question of our templates from objects (truth, detections or tracks): the
/// detector-based "oracle" VQA model. `None` for questions outside the templates or whose
/// subject is not uniquely present.
pub fn answer_question(question: &str, objects: &[ObjectView]) -> Option<String> {
    let q = question.strip_suffix('?')?;
    let words: Vec<&str> = q.split(' ').collect();
    let unique = |pred: &dyn Fn(&ObjectView) -> bool| -> Option<ObjectView> {
        let mut it = objects.iter().filter(|v| pred(v));
        let first = *it.next()?;
        it.next().is_none().then_some(first)
    };
    // "red circle" → the unique object with that colour and shape.
    let named = |name: &str| -> Option<ObjectView> {
        let (c, s) = name.split_once(' ')?;
        let (c, s) = (Color::from_name(c)?, Shape::from_name(s)?);
        unique(&|v: &ObjectView| v.color == c && v.shape == s)
    };
    let count = |n: usize| (n > 0).then(|| number_word(n).to_string());
    let answer = match words[..] {
        ["what", "color", "is", "the", shape] => {
            let s = Shape::from_name(shape)?;
            unique(&|v: &ObjectView| v.shape == s)?.color.name().to_string()
        }
        ["what", "shape", "is", "the", color, "object"] => {
            let c = Color::from_name(color)?;
            unique(&|v: &ObjectView| v.color == c)?.shape.name().to_string()
        }
        ["how", "many", "objects", "are", "there"]
        | ["how", "many", "objects", "are", "there", "at", "the", "end"] => count(objects.len())?,
        ["how", "many", ..] => {
            let subject = count_subject(question)?;
            count(objects.iter().filter(|v| counted(subject, v.color, v.shape)).count())?
        }
        ["which", "way", "does", "the", c, s, "move"] => {
            named(&format!("{c} {s}"))?.motion?.name().to_string()
        }
        ["does", "the", c, s, "move"] => {
            yes_no(named(&format!("{c} {s}"))?.motion.is_some()).into()
        }
        ["what", "color", "does", "the", c, s, "turn"] => {
            named(&format!("{c} {s}"))?.turns?.name().to_string()
        }
        ["what", "shape", "appears"] => {
            unique(&|v: &ObjectView| v.appears)?.shape.name().to_string()
        }
        ["is", "the", ..] => {
            let (rel, a, b) = relation_parts(question)?;
            yes_no(rel.holds_cells(named(a)?.cell, named(b)?.cell)).into()
        }
        _ => return None,
    };
    Some(answer)
}

#[cfg(test)]
mod tests {
    use super::super::scene::{Background, Cell, Size};
    use super::super::video::{Direction, VideoObject};
    use super::*;

    fn obj(shape: Shape, color: Color, col: u8, row: u8) -> Object {
        Object { shape, color, size: Size::Large, cell: Cell::new(col, row), jitter: [0.0; 2] }
    }

    /// A scene of large `(shape, colour, col, row)` objects on a plain background.
    fn scene(objects: &[(Shape, Color, u8, u8)]) -> Scene {
        let objects = objects.iter().map(|&(s, c, col, row)| obj(s, c, col, row)).collect();
        Scene::new(objects, Background::Plain { base: [128; 3] })
    }

    #[test]
    fn questions_have_the_right_answers() {
        use Color::*;
        // Yellow star at (0,0), red circle at (1,0), blue circle at (1,1).
        let s = scene(&[
            (Shape::Star, Yellow, 0, 0),
            (Shape::Circle, Red, 1, 0),
            (Shape::Circle, Blue, 1, 1),
        ]);
        let facts = [
            ("what color is the star?", "yellow"),
            ("what shape is the red object?", "circle"),
            ("what shape is the blue object?", "circle"),
            ("what shape is the yellow object?", "star"),
            ("how many objects are there?", "three"),
            ("how many circles are there?", "two"),
            ("how many stars are there?", "one"),
            ("how many red objects are there?", "one"),
            ("how many yellow objects are there?", "one"),
            ("how many blue objects are there?", "one"),
        ];
        // The 8 true relations among the three; the other 16 of the 24 questions are "no" (the
        // star and the red circle share a row, the two circles a column).
        let true_relations = [
            "yellow star to the left of the red circle",
            "yellow star to the left of the blue circle",
            "yellow star above the blue circle",
            "red circle to the right of the yellow star",
            "red circle above the blue circle",
            "blue circle to the right of the yellow star",
            "blue circle below the yellow star",
            "blue circle below the red circle",
        ];
        let mut kinds = std::collections::BTreeSet::new();
        for seed in 0..40 {
            for q in scene_questions(&s, seed) {
                kinds.insert(q.kind);
                if q.kind == QaKind::Relation {
                    let body = q.question.trim_start_matches("is the ").trim_end_matches('?');
                    assert_eq!(q.answer, yes_no(true_relations.contains(&body)), "{}", q.question);
                } else {
                    let want = facts.iter().find(|f| f.0 == q.question).map(|f| f.1);
                    assert_eq!(Some(q.answer.as_str()), want, "{}", q.question);
                }
            }
        }
        assert_eq!(kinds.len(), 4, "every still-image kind should be asked: {kinds:?}");
    }

    #[test]
    fn what_a_question_searches_for_is_placed_first() {
        use Color::*;
        // A relation: its two objects, in the order it names them.
        let s = scene(&[
            (Shape::Star, Yellow, 0, 0),
            (Shape::Circle, Red, 1, 0),
            (Shape::Circle, Red, 0, 1),
            (Shape::Circle, Blue, 1, 1),
        ]);
        let r = |q: &str| placed_first(q, &s.objects);
        assert_eq!(
            r("is the blue circle below the yellow star?").as_deref(),
            Some("blue circle bottom right, yellow star top left")
        );
        // Two red circles: neither can be placed.
        assert_eq!(r("is the red circle above the blue circle?"), None);
        // A count: what it counts, in reading order; a colour: the one object of its shape.
        let s = scene(&[
            (Shape::Circle, Blue, 1, 1),
            (Shape::Star, Red, 1, 0),
            (Shape::Circle, Red, 0, 1),
        ]);
        let r = |q: &str| placed_first(q, &s.objects);
        assert_eq!(
            r("how many circles are there?").as_deref(),
            Some("red circle bottom left, blue circle bottom right")
        );
        assert_eq!(
            r("how many red objects are there?").as_deref(),
            Some("red star top right, red circle bottom left")
        );
        assert_eq!(r("how many squares are there?"), None);
        assert_eq!(r("how many objects are there?"), None);
        assert_eq!(r("what color is the star?").as_deref(), Some("star top right"));
        assert_eq!(r("what color is the circle?"), None, "two circles");
        assert_eq!(r("what shape is the blue object?"), None);
        // Placed objects read back as true objects; a count places as many as it answers, and
        // a colour places its one object in its cell.
        for seed in 0..300 {
            let s = Scene::random(seed);
            let views: Vec<ObjectView> = s.objects.iter().map(ObjectView::from).collect();
            for q in scene_questions(&s, seed) {
                let Some(text) = placed_first(&q.question, &s.objects) else {
                    assert!(q.kind != QaKind::Relation, "{}", q.question);
                    continue;
                };
                if q.kind == QaKind::Color {
                    let shape = q.question.trim_start_matches("what color is the ");
                    let (name, cell) = text.split_once(' ').expect("shape and cell");
                    assert_eq!(format!("{name}?"), shape, "{text}");
                    let o = s.objects.iter().find(|o| o.shape.name() == name).unwrap();
                    assert_eq!(cell, o.cell.name(), "{}: {text}", q.question);
                    continue;
                }
                let read = super::super::text::read_layout(&text).expect("layout words");
                for &(c, sh, cell) in &read {
                    assert!(s.objects.iter().any(|o| (o.color, o.shape, o.cell) == (c, sh, cell)));
                }
                match q.kind {
                    QaKind::Relation => assert_eq!(read.len(), 2, "{text}"),
                    QaKind::Count => {
                        let n = answer_question(&q.question, &views).unwrap();
                        assert_eq!(number_word(read.len()), n, "{}: {text}", q.question);
                    }
                    kind => panic!("{kind:?} places nothing: {}", q.question),
                }
            }
        }
    }

    #[test]
    fn relation_answers_are_true_and_balanced() {
        let mut yes = 0;
        let mut total = 0;
        for seed in 0..1000 {
            let s = Scene::random(seed);
            for q in scene_questions(&s, seed).into_iter().filter(|q| q.kind == QaKind::Relation) {
                total += 1;
                yes += usize::from(q.answer == "yes");
                let body = q.question.trim_start_matches("is the ").trim_end_matches('?');
                let rel = Relation::ALL
                    .into_iter()
                    .find(|r| body.contains(&format!(" {} ", r.phrase())))
                    .unwrap();
                let (a, b) = body.split_once(&format!(" {} the ", rel.phrase())).unwrap();
                let find = |n: &str| s.objects.iter().find(|o| name(o) == n).unwrap().cell;
                assert_eq!(q.answer == "yes", rel.holds_cells(find(a), find(b)), "{}", q.question);
            }
        }
        let frac = yes as f32 / total as f32;
        assert!(total > 300 && (0.45..=0.55).contains(&frac), "yes fraction {frac} of {total}");
    }

    #[test]
    fn answers_are_single_lowercase_words() {
        for seed in 0..300 {
            let qs = scene_questions(&Scene::random(seed), seed)
                .into_iter()
                .chain(video_questions(&VideoScene::random(seed), seed));
            for q in qs {
                assert!(q.answer.bytes().all(|b| b.is_ascii_lowercase()), "{q:?}");
                assert!(q.question.ends_with('?') && !q.question.contains("  "), "{q:?}");
            }
        }
    }

    #[test]
    fn video_questions_follow_events() {
        let mover = VideoObject {
            object: obj(Shape::Triangle, Color::Green, 0, 1),
            event: Some(Event::Moves { direction: Direction::Right, speed: 0.03 }),
        };
        let late = VideoObject {
            object: obj(Shape::Star, Color::Pink, 0, 0),
            event: Some(Event::Appears { frame: 4 }),
        };
        let v = VideoScene {
            objects: vec![mover, late],
            background: Background::Plain { base: [128; 3] },
            frames: 10,
        };
        let qs = video_questions(&v, 1);
        let get = |q: &str| qs.iter().find(|p| p.question == q).map(|p| p.answer.as_str());
        assert_eq!(get("which way does the green triangle move?"), Some("right"));
        assert_eq!(get("what shape appears?"), Some("star"));
        assert_eq!(get("how many objects are there at the end?"), Some("two"));
        assert!((0..50).map(|s| video_questions(&v, s)).any(|qs| {
            qs.iter().any(|q| q.question == "does the pink star move?" && q.answer == "no")
        }));
        assert!((0..50).map(|s| video_questions(&v, s)).any(|qs| {
            qs.iter().any(|q| q.question == "does the green triangle move?" && q.answer == "yes")
        }));
    }

    #[test]
    fn detector_answers_every_question_like_the_truth() {
        use super::super::detect::detect;
        use super::super::render::render;
        use super::super::track::detect_video;
        use super::super::video::render_video;
        use rayon::prelude::*;
        let still: Vec<String> = (0..1000u64)
            .into_par_iter()
            .flat_map_iter(|seed| {
                let scene = Scene::random(seed);
                let truth: Vec<ObjectView> = scene.objects.iter().map(ObjectView::from).collect();
                let seen: Vec<ObjectView> =
                    detect(&render(&scene, 64)).iter().map(ObjectView::from).collect();
                scene_questions(&scene, seed)
                    .into_iter()
                    .filter(|q| {
                        answer_question(&q.question, &truth).as_deref() != Some(q.answer.as_str())
                            || answer_question(&q.question, &seen)
                                != answer_question(&q.question, &truth)
                    })
                    .map(|q| format!("seed {seed}: {q:?}"))
                    .collect::<Vec<_>>()
            })
            .collect();
        assert!(still.is_empty(), "{still:#?}");
        let videos: Vec<String> = (0..200u64)
            .into_par_iter()
            .flat_map_iter(|seed| {
                let video = VideoScene::random(seed);
                let seen: Vec<ObjectView> =
                    detect_video(&render_video(&video, 64)).iter().map(ObjectView::from).collect();
                video_questions(&video, seed)
                    .into_iter()
                    .filter(|q| {
                        answer_question(&q.question, &seen).as_deref() != Some(q.answer.as_str())
                    })
                    .map(|q| format!("video {seed}: {q:?}"))
                    .collect::<Vec<_>>()
            })
            .collect();
        assert!(videos.is_empty(), "{videos:#?}");
    }

    #[test]
    fn unanswerable_questions_get_none() {
        let s = Scene::random_with(2, 1);
        let views: Vec<ObjectView> = s.objects.iter().map(ObjectView::from).collect();
        assert_eq!(answer_question("what is the meaning of life?", &views), None);
        assert_eq!(answer_question("how many objects are there", &views), None);
        assert_eq!(answer_question("how many objects are there?", &views).as_deref(), Some("one"));
        let missing = Shape::ALL.into_iter().find(|&sh| sh != s.objects[0].shape).unwrap();
        assert_eq!(
            answer_question(&format!("what color is the {}?", missing.name()), &views),
            None
        );
    }
}
