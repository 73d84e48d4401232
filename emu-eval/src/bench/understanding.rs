//! `vqa`: image understanding on the world. Fixed scenes from fixed seeds, every kind of question
//! (colour, shape, count, relation), greedy answers in Emu3-Chat's template, exact-match accuracy
//! by question type; plus caption attribute F1 of the answer to "describe the image". An answer
//! that reasons first is judged on what follows its reasoning (`world::metrics::normalize_answer`).
//!
//! Shapes: h/w code grid of every input image.

use super::report::BenchResult;
use super::{BenchOptions, save_grid};
use crate::world::{self, ObjectView, QaKind, Scene};
use anyhow::Result;
use emu_model::generate::{GenerateConfig, SamplingConfig};
use emu_model::pipeline::Emu3;
use std::collections::BTreeMap;
use std::path::Path;

pub const DESCRIBE: &str = "describe the image";

pub fn run(
    model: &Emu3,
    opts: &BenchOptions,
    out: &Path,
    tick: &mut dyn FnMut(usize),
) -> Result<BenchResult> {
    let start = std::time::Instant::now();
    let grid = opts.grid(model)?;
    let (ph, _) = model.pixels(grid.0, grid.1)?;
    let scenes: Vec<Scene> = (0..opts.vqa_images as u64).map(Scene::random).collect();
    // (scene index, kind or None for the description, question, answer)
    let mut items: Vec<(usize, Option<QaKind>, String, String)> = Vec::new();
    for (i, s) in scenes.iter().enumerate() {
        for q in world::scene_questions(s, i as u64) {
            items.push((i, Some(q.kind), q.question, q.answer));
        }
        items.push((i, None, DESCRIBE.into(), String::new()));
    }
    let images: Vec<_> = scenes.iter().map(|s| world::render(s, ph as u32)).collect();
    let greedy = GenerateConfig {
        sampling: SamplingConfig::greedy(),
        // Room for a reasoned answer: four objects' layout, then the answer.
        max_new_tokens: 64,
        cfg_scale: 1.0,
        ..opts.generation.clone()
    };
    let mut answers = Vec::with_capacity(items.len());
    for chunk in items.chunks(opts.batch.max(1) * 2) {
        let batch: Vec<_> =
            chunk.iter().map(|(i, _, q, _)| (images[*i].clone(), q.clone())).collect();
        answers.extend(model.answer_batch(&batch, grid, &greedy)?);
        tick(chunk.len());
    }
    let mut qa: Vec<(QaKind, &str, &str)> = Vec::new();
    let mut f1 = Vec::new();
    let mut gallery = Vec::new();
    for ((i, kind, q, a), pred) in items.iter().zip(&answers) {
        match kind {
            Some(k) => qa.push((*k, a.as_str(), pred.as_str())),
            None => {
                let views: Vec<ObjectView> =
                    scenes[*i].objects.iter().map(ObjectView::from).collect();
                f1.push(world::caption_attribute_score(pred, &views).f1 as f64);
                if gallery.len() < 12 {
                    gallery.push((format!("{q}: {pred}"), images[*i].clone()));
                }
            }
        }
    }
    let report = world::vqa_accuracy(&qa);
    let mut metrics = BTreeMap::new();
    metrics.insert("accuracy".to_string(), report.overall as f64);
    for (k, v) in &report.by_kind {
        metrics.insert(format!("accuracy_{}", format!("{k:?}").to_lowercase()), v.accuracy as f64);
    }
    metrics.insert("caption_f1".into(), f1.iter().sum::<f64>() / f1.len().max(1) as f64);
    let examples: Vec<serde_json::Value> = items
        .iter()
        .zip(&answers)
        .take(40)
        .map(|((i, k, q, a), p)| serde_json::json!({"scene": i, "kind": k, "question": q, "answer": a, "prediction": p}))
        .collect();
    Ok(BenchResult {
        name: "vqa".into(),
        protocol: format!(
            "{} world scenes (seeds 0..{}), every question the scene supports, greedy answers in Emu3-Chat's template; \
             exact match after normalisation, by question type; caption_f1 = attribute F1 of the answer to \"{DESCRIBE}\".",
            opts.vqa_images, opts.vqa_images
        ),
        metrics,
        details: serde_json::json!({"by_kind": report.by_kind, "examples": examples}),
        samples: vec![save_grid(out, "vqa_captions.png", &gallery, 4)?],
        seconds: start.elapsed().as_secs_f64(),
    })
}
