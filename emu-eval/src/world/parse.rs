//! Reading captions back: a parser for the caption grammar of `text.rs` (strict for our own
//! captions and prompts, tolerant for model output) and a checker that decides whether a parsed
//! caption is true of a set of objects, so captions can be verified against the detector.
//!
//! Grammar: `clause (("and" | relation) clause)*`, `clause = count [size] [colour] noun
//! [event]`, `noun = shape | shapes | object | objects`, `event = moves dir | appears | turns
//! colour`, `relation = to the left of | to the right of | above | below`.

use serde::{Deserialize, Serialize};

use super::detect::DetectedObject;
use super::scene::{Cell, Color, Object, Relation, Shape, Size};
use super::text::number_from_word;
use super::track::TrackedObject;
use super::video::Direction;

/// A noun phrase: how many objects of which description.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NounPhrase {
    pub count: usize,
    pub size: Option<Size>,
    pub color: Option<Color>,
    /// `None` for "object(s)".
    pub shape: Option<Shape>,
}

/// What a video caption says happens to an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventClaim {
    Moves(Direction),
    Appears,
    Turns(Color),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Clause {
    pub phrase: NounPhrase,
    pub event: Option<EventClaim>,
}

/// A parsed caption: clauses plus relations `(subject clause, relation, reference clause)`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caption {
    pub clauses: Vec<Clause>,
    pub relations: Vec<(usize, Relation, usize)>,
}

/// Parses a caption of our grammar exactly; `None` on any deviation (including count/noun
/// number disagreement such as "two circle").
pub fn parse_caption(text: &str) -> Option<Caption> {
    parse(text, true)
}

/// Extracts whatever clauses and relations can be recognised, skipping unknown words; for
/// scoring free-form model captions.
pub fn scan_caption(text: &str) -> Caption {
    parse(text, false).expect("tolerant parsing never fails")
}

fn relation_at(words: &[&str], i: usize) -> Option<(Relation, usize)> {
    let w = |k: usize| words.get(i + k).copied();
    match (w(0), w(1), w(2), w(3)) {
        (Some("to"), Some("the"), Some("left"), Some("of")) => Some((Relation::LeftOf, 4)),
        (Some("to"), Some("the"), Some("right"), Some("of")) => Some((Relation::RightOf, 4)),
        (Some("left"), Some("of"), ..) => Some((Relation::LeftOf, 2)),
        (Some("right"), Some("of"), ..) => Some((Relation::RightOf, 2)),
        (Some("above"), ..) => Some((Relation::Above, 1)),
        (Some("below"), ..) => Some((Relation::Below, 1)),
        _ => None,
    }
}

/// Noun phrase at `i`: (phrase, words consumed). Tolerant mode lets the count default to one
/// and ignores number agreement.
fn phrase_at(words: &[&str], mut i: usize, strict: bool) -> Option<(NounPhrase, usize)> {
    let start = i;
    let count = match words.get(i).and_then(|w| number_from_word(w)) {
        Some(n) => {
            i += 1;
            Some(n)
        }
        None if strict => return None,
        None => None,
    };
    let size = words.get(i).and_then(|w| Size::from_name(w));
    i += usize::from(size.is_some());
    let color = words.get(i).and_then(|w| Color::from_name(w));
    i += usize::from(color.is_some());
    let noun = *words.get(i)?;
    let (shape, plural) = if let Some(s) = Shape::from_name(noun) {
        (Some(s), false)
    } else if let Some(s) = Shape::ALL.into_iter().find(|s| s.plural() == noun) {
        (Some(s), true)
    } else {
        match noun {
            "object" => (None, false),
            "objects" => (None, true),
            _ => return None,
        }
    };
    let count = count.unwrap_or(if plural { 2 } else { 1 });
    let article = matches!(words[start], "a" | "an");
    if strict
        && (plural != (count > 1)
            || article && (words[start] == "an") != starts_with_vowel(words[start + 1]))
    {
        return None;
    }
    Some((NounPhrase { count, size, color, shape }, i + 1 - start))
}

fn starts_with_vowel(word: &str) -> bool {
    word.starts_with(['a', 'e', 'i', 'o', 'u'])
}

fn event_at(words: &[&str], i: usize) -> Option<(EventClaim, usize)> {
    match *words.get(i)? {
        "moves" | "move" => Some((EventClaim::Moves(Direction::from_name(words.get(i + 1)?)?), 2)),
        "appears" | "appear" => Some((EventClaim::Appears, 1)),
        "turns" | "turn" => Some((EventClaim::Turns(Color::from_name(words.get(i + 1)?)?), 2)),
        _ => None,
    }
}

fn parse(text: &str, strict: bool) -> Option<Caption> {
    let lowered = text.to_ascii_lowercase();
    let cleaned: String = lowered
        .chars()
        .map(|c| if c.is_ascii_alphabetic() || c == ' ' || strict { c } else { ' ' })
        .collect();
    let words: Vec<&str> = cleaned.split(' ').filter(|w| !w.is_empty() || strict).collect();
    if strict && (text != lowered || words.iter().any(|w| w.is_empty())) {
        return None;
    }
    let mut cap = Caption::default();
    let mut pending: Option<Relation> = None;
    let mut i = 0;
    // Alternates between expecting a clause and expecting a connective.
    let mut want_clause = true;
    while i < words.len() {
        if want_clause {
            match phrase_at(&words, i, strict) {
                Some((phrase, used)) => {
                    i += used;
                    let event = event_at(&words, i).map(|(e, used)| {
                        i += used;
                        e
                    });
                    cap.clauses.push(Clause { phrase, event });
                    let idx = cap.clauses.len() - 1;
                    if let Some(rel) = pending.take() {
                        cap.relations.push((idx - 1, rel, idx));
                    }
                    want_clause = false;
                }
                None if strict => return None,
                None => i += 1,
            }
        } else if words[i] == "and" {
            i += 1;
            want_clause = true;
        } else if let Some((rel, used)) = relation_at(&words, i) {
            i += used;
            pending = Some(rel);
            want_clause = true;
        } else if strict {
            return None;
        } else {
            // Tolerant: an unknown word ends the clause; a new clause may start right here.
            want_clause = true;
            pending = None;
            if phrase_at(&words, i, false).is_none() {
                i += 1;
            }
        }
    }
    if strict && (want_clause || cap.clauses.is_empty()) {
        return None;
    }
    Some(cap)
}

/// What the checker needs to know about one object, from truth or from the detector.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ObjectView {
    pub shape: Shape,
    pub color: Color,
    pub size: Size,
    pub cell: Cell,
    pub motion: Option<Direction>,
    pub appears: bool,
    pub turns: Option<Color>,
}

impl From<&Object> for ObjectView {
    fn from(o: &Object) -> Self {
        let (shape, color, size, cell) = (o.shape, o.color, o.size, o.cell);
        ObjectView { shape, color, size, cell, motion: None, appears: false, turns: None }
    }
}

impl From<&DetectedObject> for ObjectView {
    fn from(o: &DetectedObject) -> Self {
        let (shape, color, size, cell) = (o.shape, o.color, o.size, o.cell);
        ObjectView { shape, color, size, cell, motion: None, appears: false, turns: None }
    }
}

impl From<&TrackedObject> for ObjectView {
    fn from(t: &TrackedObject) -> Self {
        ObjectView {
            shape: t.shape,
            color: t.color,
            size: t.size,
            cell: t.start_cell,
            motion: t.motion,
            appears: t.first_frame > 0,
            turns: t.color_change.map(|c| c.1),
        }
    }
}

impl NounPhrase {
    pub fn matches(&self, v: &ObjectView) -> bool {
        self.shape.is_none_or(|s| s == v.shape)
            && self.color.is_none_or(|c| c == v.color)
            && self.size.is_none_or(|s| s == v.size)
    }
}

/// Whether a caption is true of `objects`: counts are exact; a clause in a relation or with an
/// event must name exactly one object, which must have that event or relation (by cells).
pub fn caption_holds(cap: &Caption, objects: &[ObjectView]) -> bool {
    let matching = |c: &Clause| objects.iter().filter(|v| c.phrase.matches(v)).collect::<Vec<_>>();
    let in_relation = |k: usize| cap.relations.iter().any(|&(a, _, b)| a == k || b == k);
    let clauses_ok = cap.clauses.iter().enumerate().all(|(k, c)| {
        let m = matching(c);
        let singular = in_relation(k) || c.event.is_some();
        if singular && (c.phrase.count != 1 || m.len() != 1) {
            return false;
        }
        match c.event {
            None => m.len() == c.phrase.count,
            Some(EventClaim::Moves(d)) => m[0].motion == Some(d),
            Some(EventClaim::Appears) => m[0].appears,
            Some(EventClaim::Turns(col)) => m[0].turns == Some(col),
        }
    });
    clauses_ok
        && cap.relations.iter().all(|&(a, rel, b)| {
            let (va, vb) = (matching(&cap.clauses[a]), matching(&cap.clauses[b]));
            rel.holds_cells(va[0].cell, vb[0].cell)
        })
}

/// Parses `text` strictly and checks it against `objects`; unparseable text is false.
pub fn text_holds(text: &str, objects: &[ObjectView]) -> bool {
    parse_caption(text).is_some_and(|c| caption_holds(&c, objects))
}

#[cfg(test)]
mod tests {
    use super::super::scene::Scene;
    use super::super::text::{CaptionTemplate, caption, caption_with};
    use super::*;

    fn np(
        count: usize,
        size: Option<Size>,
        color: Option<Color>,
        shape: Option<Shape>,
    ) -> NounPhrase {
        NounPhrase { count, size, color, shape }
    }

    #[test]
    fn parses_each_construction() {
        let c = parse_caption("a small pink diamond above a large cyan circle").unwrap();
        assert_eq!(
            c.clauses[0].phrase,
            np(1, Some(Size::Small), Some(Color::Pink), Some(Shape::Diamond))
        );
        assert_eq!(
            c.clauses[1].phrase,
            np(1, Some(Size::Large), Some(Color::Cyan), Some(Shape::Circle))
        );
        assert_eq!(c.relations, vec![(0, Relation::Above, 1)]);
        let c = parse_caption("two red circles and an orange star").unwrap();
        assert_eq!(c.clauses.len(), 2);
        assert_eq!(c.clauses[0].phrase, np(2, None, Some(Color::Red), Some(Shape::Circle)));
        let c =
            parse_caption("a green triangle moves right and a blue square turns yellow").unwrap();
        assert_eq!(c.clauses[0].event, Some(EventClaim::Moves(Direction::Right)));
        assert_eq!(c.clauses[1].event, Some(EventClaim::Turns(Color::Yellow)));
        assert_eq!(
            parse_caption("three objects").unwrap().clauses[0].phrase,
            np(3, None, None, None)
        );
    }

    #[test]
    fn strict_rejects_malformed_text() {
        for bad in [
            "two circle",
            "a circles",
            "a orange star",
            "an red star",
            "red circle",
            "a circle and",
            "a circle  and a star",
            "a circle.",
            "A circle",
            "a circle near a star",
            "",
        ] {
            assert_eq!(parse_caption(bad), None, "{bad:?} should not parse");
        }
    }

    #[test]
    fn tolerant_scan_recovers_what_it_can() {
        let c = scan_caption("There are two red circles, and a big blue star left of a square!");
        assert_eq!(c.clauses.len(), 3, "{c:?}");
        assert_eq!(c.clauses[0].phrase, np(2, None, Some(Color::Red), Some(Shape::Circle)));
        assert_eq!(c.clauses[1].phrase, np(1, None, Some(Color::Blue), Some(Shape::Star)));
        assert_eq!(c.relations, vec![(1, Relation::LeftOf, 2)]);
        assert!(scan_caption("nothing to see here").clauses.is_empty());
    }

    #[test]
    fn checker_uses_exact_counts_and_relations() {
        let s = Scene::random_with(3, 3);
        let views: Vec<ObjectView> = s.objects.iter().map(ObjectView::from).collect();
        let total = format!("{} objects", super::super::text::number_word(views.len()));
        assert!(text_holds(&total, &views));
        assert!(!text_holds("two objects", &views));
        let a = s.objects[0];
        let other = Shape::ALL.into_iter().find(|&sh| s.count_shape(sh) == 0).unwrap();
        assert!(!text_holds(&format!("a {}", other.name()), &views));
        let n = s.count_shape(a.shape);
        let phrase = super::super::text::noun_phrase(n, None, None, Some(a.shape));
        assert!(text_holds(&phrase, &views), "{phrase}");
    }

    #[test]
    fn every_caption_parses_and_is_true_of_its_scene() {
        for seed in 0..500 {
            let s = Scene::random(seed);
            let views: Vec<ObjectView> = s.objects.iter().map(ObjectView::from).collect();
            for t in CaptionTemplate::ALL {
                if let Some(c) = caption_with(&s, t, seed) {
                    assert!(text_holds(&c, &views), "seed {seed} {t:?}: {c:?} false of own scene");
                    assert_eq!(scan_caption(&c), parse_caption(&c).unwrap(), "{c}");
                }
            }
        }
        // A caption of another scene is usually false here: the checker is not vacuous.
        let false_rate = (0..500)
            .filter(|&seed| {
                let views: Vec<ObjectView> =
                    Scene::random(seed).objects.iter().map(ObjectView::from).collect();
                !text_holds(&caption(&Scene::random(seed + 1000), seed), &views)
            })
            .count();
        assert!(false_rate > 400, "only {false_rate}/500 foreign captions were false");
    }

    #[test]
    fn captions_agree_with_the_detector() {
        use super::super::detect::detect;
        use super::super::render::render;
        use rayon::prelude::*;
        let failures: Vec<String> = (0..1000u64)
            .into_par_iter()
            .flat_map_iter(|seed| {
                let s = Scene::random(seed);
                let views: Vec<ObjectView> =
                    detect(&render(&s, 64)).iter().map(ObjectView::from).collect();
                CaptionTemplate::ALL
                    .into_iter()
                    .filter_map(|t| caption_with(&s, t, seed))
                    .filter(|c| !text_holds(c, &views))
                    .map(|c| format!("seed {seed}: {c:?}"))
                    .collect::<Vec<_>>()
            })
            .collect();
        assert!(failures.is_empty(), "captions contradicted by the detector: {failures:#?}");
    }

    #[test]
    fn video_captions_agree_with_the_video_detector() {
        use super::super::text::video_caption;
        use super::super::track::detect_video;
        use super::super::video::{VideoScene, render_video};
        use rayon::prelude::*;
        let failures: Vec<String> = (0..200u64)
            .into_par_iter()
            .filter_map(|seed| {
                let v = VideoScene::random(seed);
                let views: Vec<ObjectView> =
                    detect_video(&render_video(&v, 64)).iter().map(ObjectView::from).collect();
                let c = video_caption(&v, seed);
                (!text_holds(&c, &views)).then(|| format!("seed {seed}: {c:?}"))
            })
            .collect();
        assert!(failures.is_empty(), "video captions contradicted by the detector: {failures:#?}");
    }
}
