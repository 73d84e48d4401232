//! Scoring model text against world truth: VQA accuracy by question kind, and caption attribute
//! precision/recall/F1.
//!
//! Caption attributes are atoms: a shape is present, a shape has a colour, a (coloured) shape
//! has an exact count, the total count, or one (coloured) shape stands in a relation to
//! another. Precision is the share of atoms the caption states that are true of the scene;
//! recall is the share of the scene's inventory atoms (each present shape, each present
//! colour–shape pair) that the caption states. Sizes and video events are not scored.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::parse::{Caption, ObjectView, scan_caption};
use super::qa::QaKind;
use super::scene::{Color, Relation, Shape};
use super::text::{REASONING_END, number_word};

/// Lowercase first word of a prediction's answer, without punctuation; digits become number
/// words so "3" and "three" agree. The answer is what follows the last [`REASONING_END`], so a
/// model that reasons before it answers is judged on its answer alone.
pub fn normalize_answer(prediction: &str) -> String {
    let answer = prediction.rsplit(REASONING_END).next().unwrap_or(prediction);
    let lower = answer.to_ascii_lowercase();
    let word = lower
        .split(|c: char| !c.is_ascii_alphanumeric())
        .find(|w| !w.is_empty() && !matches!(*w, "a" | "an" | "the"))
        .unwrap_or("");
    match word.parse::<usize>() {
        Ok(n @ 1..=4) => number_word(n).to_string(),
        _ => word.to_string(),
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct KindAccuracy {
    pub correct: usize,
    pub total: usize,
    pub accuracy: f32,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VqaReport {
    /// Accuracy over all questions.
    pub overall: f32,
    pub by_kind: BTreeMap<QaKind, KindAccuracy>,
}

/// Exact-match accuracy of normalised predictions, overall and per kind; items are
/// (kind, ground-truth answer, prediction).
pub fn vqa_accuracy(items: &[(QaKind, &str, &str)]) -> VqaReport {
    let mut by_kind: BTreeMap<QaKind, KindAccuracy> = BTreeMap::new();
    let mut correct = 0;
    for &(kind, answer, prediction) in items {
        let ok = normalize_answer(prediction) == answer;
        correct += usize::from(ok);
        let k = by_kind.entry(kind).or_default();
        k.total += 1;
        k.correct += usize::from(ok);
    }
    for k in by_kind.values_mut() {
        k.accuracy = k.correct as f32 / k.total as f32;
    }
    let overall = if items.is_empty() { 0.0 } else { correct as f32 / items.len() as f32 };
    VqaReport { overall, by_kind }
}

/// One checkable statement of a caption.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Atom {
    Shape(Shape),
    Color(Shape, Color),
    Count(Shape, Option<Color>, usize),
    Total(usize),
    Relation(Shape, Option<Color>, Relation, Shape, Option<Color>),
}

/// The atoms a parsed caption states. Counts of clauses inside relations are not atoms: there
/// the article only introduces the object.
pub fn caption_atoms(cap: &Caption) -> BTreeSet<Atom> {
    let mut atoms = BTreeSet::new();
    for (k, c) in cap.clauses.iter().enumerate() {
        let p = c.phrase;
        let Some(shape) = p.shape else {
            atoms.insert(Atom::Total(p.count));
            continue;
        };
        atoms.insert(Atom::Shape(shape));
        if let Some(color) = p.color {
            atoms.insert(Atom::Color(shape, color));
        }
        // Sizes are not scored, so a sized count ("a small red diamond") is about an unscored
        // subset and says nothing checkable about how many red diamonds there are.
        if p.size.is_none() && !cap.relations.iter().any(|&(a, _, b)| a == k || b == k) {
            atoms.insert(Atom::Count(shape, p.color, p.count));
        }
    }
    for &(a, rel, b) in &cap.relations {
        let (pa, pb) = (cap.clauses[a].phrase, cap.clauses[b].phrase);
        if let (Some(sa), Some(sb)) = (pa.shape, pb.shape) {
            atoms.insert(Atom::Relation(sa, pa.color, rel, sb, pb.color));
        }
    }
    atoms
}

/// Every atom true of the objects (relations judged by cells, for some pair of objects).
pub fn scene_atoms(objects: &[ObjectView]) -> BTreeSet<Atom> {
    let mut atoms = BTreeSet::from([Atom::Total(objects.len())]);
    for o in objects {
        atoms.insert(Atom::Shape(o.shape));
        atoms.insert(Atom::Color(o.shape, o.color));
        let n_shape = objects.iter().filter(|p| p.shape == o.shape).count();
        let n_pair = objects.iter().filter(|p| (p.shape, p.color) == (o.shape, o.color)).count();
        atoms.insert(Atom::Count(o.shape, None, n_shape));
        atoms.insert(Atom::Count(o.shape, Some(o.color), n_pair));
        for p in objects {
            for rel in Relation::ALL.into_iter().filter(|r| r.holds_cells(o.cell, p.cell)) {
                for ca in [None, Some(o.color)] {
                    for cb in [None, Some(p.color)] {
                        atoms.insert(Atom::Relation(o.shape, ca, rel, p.shape, cb));
                    }
                }
            }
        }
    }
    atoms
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AttributeScore {
    pub precision: f32,
    pub recall: f32,
    pub f1: f32,
    /// Atoms the caption states.
    pub stated: usize,
    /// Stated atoms that are true.
    pub correct: usize,
    /// Inventory atoms of the scene.
    pub inventory: usize,
    /// Inventory atoms the caption states.
    pub covered: usize,
}

/// Attribute precision/recall/F1 of a (possibly free-form) caption against the true objects.
/// A caption stating nothing recognisable scores zero.
pub fn caption_attribute_score(caption: &str, objects: &[ObjectView]) -> AttributeScore {
    let stated = caption_atoms(&scan_caption(caption));
    let truth = scene_atoms(objects);
    let inventory: BTreeSet<Atom> =
        truth.iter().copied().filter(|a| matches!(a, Atom::Shape(_) | Atom::Color(..))).collect();
    let correct = stated.intersection(&truth).count();
    let covered = stated.intersection(&inventory).count();
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f32 / b as f32 };
    let (precision, recall) = (ratio(correct, stated.len()), ratio(covered, inventory.len()));
    let f1 = if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    };
    AttributeScore {
        precision,
        recall,
        f1,
        stated: stated.len(),
        correct,
        inventory: inventory.len(),
        covered,
    }
}

#[cfg(test)]
mod tests {
    use super::super::scene::{Cell, Size};
    use super::*;

    fn view(shape: Shape, color: Color, col: u8, row: u8) -> ObjectView {
        ObjectView {
            shape,
            color,
            size: Size::Large,
            cell: Cell::new(col, row),
            motion: None,
            appears: false,
            turns: None,
        }
    }

    #[test]
    fn answers_are_normalised() {
        assert_eq!(normalize_answer("Yellow."), "yellow");
        assert_eq!(normalize_answer("  3 objects"), "three");
        assert_eq!(normalize_answer("the circle"), "circle");
        assert_eq!(normalize_answer(""), "");
        // Reasoning before the answer is not judged, even when it names another answer.
        assert_eq!(normalize_answer("red circle top left, blue star top right: blue"), "blue");
        assert_eq!(normalize_answer("red circle top left: "), "");
    }

    #[test]
    fn vqa_accuracy_by_kind() {
        let items = [
            (QaKind::Color, "red", "red"),
            (QaKind::Color, "blue", "Blue!"),
            (QaKind::Color, "green", "yellow"),
            (QaKind::Count, "two", "2"),
            (QaKind::Relation, "yes", "no"),
        ];
        let r = vqa_accuracy(&items);
        assert_eq!(r.overall, 3.0 / 5.0);
        assert_eq!(
            r.by_kind[&QaKind::Color],
            KindAccuracy { correct: 2, total: 3, accuracy: 2.0 / 3.0 }
        );
        assert_eq!(r.by_kind[&QaKind::Count].accuracy, 1.0);
        assert_eq!(r.by_kind[&QaKind::Relation].accuracy, 0.0);
        assert!(!r.by_kind.contains_key(&QaKind::Motion));
    }

    #[test]
    fn attribute_scores_by_hand() {
        // Truth: red circle (0,0), blue square (1,0), blue star (1,1).
        let objs = [
            view(Shape::Circle, Color::Red, 0, 0),
            view(Shape::Square, Color::Blue, 1, 0),
            view(Shape::Star, Color::Blue, 1, 1),
        ];
        // Inventory: 3 shapes + 3 colour–shape pairs = 6 atoms.
        // "a red circle and two blue squares" states Shape(circle), Color(circle, red),
        // Count(circle, red, 1), Shape(square), Color(square, blue), Count(square, blue, 2):
        // 5 of 6 true (the count 2 is wrong); covers 4 of 6 inventory atoms.
        let s = caption_attribute_score("a red circle and two blue squares", &objs);
        assert_eq!((s.stated, s.correct, s.inventory, s.covered), (6, 5, 6, 4));
        assert!((s.precision - 5.0 / 6.0).abs() < 1e-6 && (s.recall - 4.0 / 6.0).abs() < 1e-6);
        // F1 = 2 · (5/6) · (4/6) / (9/6) = 20/27.
        assert!((s.f1 - 20.0 / 27.0).abs() < 1e-6);

        // "a red circle to the left of a green star": Shape(circle), Color(circle, red),
        // Shape(star), Color(star, green) ✗, Relation(circle red left-of star green) ✗ → 3/5.
        let s = caption_attribute_score("a red circle to the left of a green star", &objs);
        assert_eq!((s.stated, s.correct, s.covered), (5, 3, 3));

        // The full inventory is perfect.
        let s = caption_attribute_score("a red circle and a blue square and a blue star", &objs);
        assert_eq!((s.precision, s.recall, s.f1), (1.0, 1.0, 1.0));
        // "three objects" is one true atom but covers no inventory atom.
        let s = caption_attribute_score("three objects", &objs);
        assert_eq!((s.precision, s.recall, s.f1), (1.0, 0.0, 0.0));
        assert_eq!(
            caption_attribute_score("gibberish words", &objs),
            AttributeScore { inventory: 6, ..Default::default() }
        );
    }

    #[test]
    fn own_captions_are_fully_precise_and_inventories_complete() {
        use super::super::scene::Scene;
        use super::super::text::{CaptionTemplate, Detail, caption_with};
        for seed in 0..300 {
            let scene = Scene::random(seed);
            let views: Vec<ObjectView> = scene.objects.iter().map(ObjectView::from).collect();
            for t in CaptionTemplate::ALL {
                if let Some(c) = caption_with(&scene, t, seed) {
                    let s = caption_attribute_score(&c, &views);
                    assert_eq!(s.precision, 1.0, "seed {seed}: {c:?} states something false");
                    if t == CaptionTemplate::Inventory(Detail::ColorShape) {
                        assert_eq!(s.recall, 1.0, "seed {seed}: {c:?} misses objects");
                    }
                }
            }
        }
    }
}
