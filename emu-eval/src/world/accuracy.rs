//! How well the detector reads scenes back, clean and degraded.
//!
//! A scene counts as correct when the multiset of detected (shape, colour, cell) equals the
//! truth. Per object, recall is the share of true objects matched and precision the share of
//! detections that match; size accuracy is measured over matched objects.

use std::fmt;
use std::ops::Range;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::degrade::{Degradation, degrade};
use super::detect::{DetectedObject, detect};
use super::render::render;
use super::scene::{Cell, Color, Scene, Shape, Size};

/// The identity of an object for scoring: what a caption could state about it.
pub type ObjectKey = (Shape, Color, Cell);

/// One scene the detector got wrong.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DetectionFailure {
    pub seed: u64,
    pub missed: Vec<ObjectKey>,
    pub spurious: Vec<ObjectKey>,
}

impl fmt::Display for DetectionFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |v: &[ObjectKey]| {
            v.iter()
                .map(|(s, c, cell)| {
                    format!("{} {} @({},{})", c.name(), s.name(), cell.col, cell.row)
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        write!(
            f,
            "seed {}: missed [{}], spurious [{}]",
            self.seed,
            list(&self.missed),
            list(&self.spurious)
        )
    }
}

/// Aggregate detector accuracy over a set of scenes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DetectorReport {
    pub scenes: usize,
    pub scene_accuracy: f32,
    pub object_recall: f32,
    pub object_precision: f32,
    pub size_accuracy: f32,
    pub failures: Vec<DetectionFailure>,
}

/// Matches detections to truth by (shape, colour, cell): (matched pairs of sizes, missed
/// truth keys, spurious detection keys).
pub fn compare(
    truth: &Scene,
    found: &[DetectedObject],
) -> (Vec<(Size, Size)>, Vec<ObjectKey>, Vec<ObjectKey>) {
    let mut unmatched: Vec<&DetectedObject> = found.iter().collect();
    let (mut matched, mut missed) = (Vec::new(), Vec::new());
    for o in &truth.objects {
        let key = (o.shape, o.color, o.cell);
        match unmatched.iter().position(|d| (d.shape, d.color, d.cell) == key) {
            Some(i) => matched.push((o.size, unmatched.swap_remove(i).size)),
            None => missed.push(key),
        }
    }
    let spurious = unmatched.iter().map(|d| (d.shape, d.color, d.cell)).collect();
    (matched, missed, spurious)
}

/// Renders `Scene::random(seed)` for every seed at `size`, degrades it (seeded by the scene
/// seed) and scores the detector.
pub fn evaluate_detector(
    seeds: Range<u64>,
    size: u32,
    degradation: &Degradation,
) -> DetectorReport {
    let per_scene: Vec<_> = seeds
        .into_par_iter()
        .map(|seed| {
            let scene = Scene::random(seed);
            let img = degrade(&render(&scene, size), degradation, seed ^ 0x5eed);
            let found = detect(&img);
            let (matched, missed, spurious) = compare(&scene, &found);
            (seed, scene.objects.len(), found.len(), matched, missed, spurious)
        })
        .collect();
    let scenes = per_scene.len();
    let (mut truth_n, mut found_n, mut matched_n, mut size_ok) = (0, 0, 0, 0);
    let mut failures = Vec::new();
    for (seed, t, f, matched, missed, spurious) in per_scene {
        truth_n += t;
        found_n += f;
        matched_n += matched.len();
        size_ok += matched.iter().filter(|(a, b)| a == b).count();
        if !missed.is_empty() || !spurious.is_empty() {
            failures.push(DetectionFailure { seed, missed, spurious });
        }
    }
    let ratio = |a: usize, b: usize| if b == 0 { 1.0 } else { a as f32 / b as f32 };
    DetectorReport {
        scenes,
        scene_accuracy: ratio(scenes - failures.len(), scenes),
        object_recall: ratio(matched_n, truth_n),
        object_precision: ratio(matched_n, found_n),
        size_accuracy: ratio(size_ok, matched_n),
        failures,
    }
}

/// Detector accuracy under every preset degradation, for reports.
pub fn degradation_report(seeds: Range<u64>, size: u32) -> Vec<(String, DetectorReport)> {
    Degradation::presets()
        .into_iter()
        .map(|(name, d)| (name.to_string(), evaluate_detector(seeds.clone(), size, &d)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seeds among 0..1000 the detector gets wrong on clean 64² renders; pinned so that any
    /// change in behaviour (better or worse) is noticed.
    const KNOWN_CLEAN_FAILURES: &[u64] = &[];

    #[test]
    fn clean_accuracy_is_at_least_99_percent() {
        let report = evaluate_detector(0..1000, 64, &Degradation::NONE);
        for f in &report.failures {
            println!("clean failure: {f}");
        }
        println!(
            "clean: scene {:.4} recall {:.4} precision {:.4} size {:.4}",
            report.scene_accuracy,
            report.object_recall,
            report.object_precision,
            report.size_accuracy
        );
        assert!(report.scene_accuracy >= 0.99, "scene accuracy {}", report.scene_accuracy);
        assert!(report.object_recall >= 0.995 && report.object_precision >= 0.995);
        assert!(report.size_accuracy >= 0.99, "size accuracy {}", report.size_accuracy);
    }

    #[test]
    fn known_clean_failures_are_pinned() {
        let report = evaluate_detector(0..1000, 64, &Degradation::NONE);
        let seeds: Vec<u64> = report.failures.iter().map(|f| f.seed).collect();
        assert_eq!(
            seeds, KNOWN_CLEAN_FAILURES,
            "clean failure seeds changed: {:#?}",
            report.failures
        );
    }

    #[test]
    fn mild_degradation_keeps_accuracy_high() {
        let report = evaluate_detector(0..1000, 64, &Degradation::mild());
        for f in &report.failures {
            println!("mild failure: {f}");
        }
        println!("mild: scene {:.4} recall {:.4}", report.scene_accuracy, report.object_recall);
        // Measured 1.000 on seeds 0..1000 (also under the "strong" preset).
        assert!(report.scene_accuracy >= 0.98, "scene accuracy {}", report.scene_accuracy);
    }

    #[test]
    fn other_resolutions_work_too() {
        for size in [32, 128] {
            let report = evaluate_detector(0..200, size, &Degradation::NONE);
            assert!(report.scene_accuracy >= 0.98, "{size}: {}", report.scene_accuracy);
        }
    }

    #[test]
    fn compare_reports_missed_and_spurious() {
        let scene = Scene::random_with(11, 2);
        let o = scene.objects[0];
        let wrong = DetectedObject {
            shape: o.shape,
            color: o.color,
            size: o.size,
            center: o.center(),
            cell: Cell::new((o.cell.col + 1) % 3, o.cell.row),
            area: 0.03,
            confidence: 1.0,
        };
        let right = DetectedObject { cell: o.cell, ..wrong };
        let (matched, missed, spurious) = compare(&scene, &[wrong, right]);
        assert_eq!(matched, vec![(o.size, o.size)]);
        let o1 = scene.objects[1];
        assert_eq!(missed, vec![(o1.shape, o1.color, o1.cell)]);
        assert_eq!(spurious, vec![(wrong.shape, wrong.color, wrong.cell)]);
    }

    #[test]
    #[ignore = "report: prints accuracy under every degradation preset"]
    fn print_degradation_report() {
        for (name, r) in degradation_report(0..1000, 64) {
            println!(
                "{name:>10}: scene {:.4} recall {:.4} precision {:.4} size {:.4} failures {}",
                r.scene_accuracy,
                r.object_recall,
                r.object_precision,
                r.size_accuracy,
                r.failures.len()
            );
        }
    }
}
