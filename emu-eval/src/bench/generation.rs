//! `geneval`: GenEval's six categories on the world. Fixed prompt sets from fixed seeds, N samples
//! per prompt, every image read back by the detector and judged as GenEval defines correctness;
//! per-category scores and their mean. Also GenEval's own file formats for interoperability.
//!
//! Shapes: h/w code grid of every generated image.

use super::report::BenchResult;
use super::{BenchOptions, save_grid};
use crate::world::text::read_layout;
use crate::world::{
    Category, DetectedObject, GenEvalPrompt, Size, benchmark_prompts, chance_level, detect,
    from_geneval_json, to_geneval_json,
};
use anyhow::{Context, Result};
use emu_model::generate::Structure;
use emu_model::pipeline::Emu3;
use image::RgbImage;
use std::collections::BTreeMap;
use std::path::Path;

/// One generated image and the plan a planning model wrote before it.
pub struct Drawn {
    pub image: RgbImage,
    pub plan: Option<String>,
}

/// Generates `samples` images per prompt, in batches; returns them in prompt order.
pub fn generate_images(
    model: &Emu3,
    prompts: &[String],
    samples: usize,
    opts: &BenchOptions,
    tick: &mut dyn FnMut(usize),
) -> Result<Vec<Vec<Drawn>>> {
    let (h, w) = opts.grid(model)?;
    let mut out: Vec<Vec<Drawn>> = (0..prompts.len()).map(|_| Vec::new()).collect();
    let jobs: Vec<(usize, String)> =
        (0..samples).flat_map(|_| prompts.iter().cloned().enumerate()).collect();
    for (b, chunk) in jobs.chunks(opts.batch.max(1)).enumerate() {
        let texts: Vec<String> = chunk.iter().map(|(_, t)| t.clone()).collect();
        let mut cfg = opts.generation.clone();
        cfg.seed = cfg.seed.wrapping_add(b as u64 * 7919);
        let generated =
            model.text_to_grid(&texts, "", Structure::image(h, w), 1, &cfg, &mut |_, _, _| {})?;
        for ((i, _), g) in chunk.iter().zip(generated) {
            let image = g.frames.into_iter().next().expect("an image has one frame");
            out[*i].push(Drawn { image, plan: g.plan });
        }
        tick(chunk.len());
    }
    Ok(out)
}

/// How samples were chosen, for protocols: nothing when each was drawn once.
pub fn best_of_note(best_of: usize) -> String {
    if best_of > 1 {
        format!(" (each the best of {best_of} candidates by the prompt's PMI with its codes)")
    } else {
        String::new()
    }
}

/// Prompts per category behind the chance level (standard error about 0.003).
const CHANCE_PROMPTS: usize = 4000;

pub fn run(
    model: &Emu3,
    opts: &BenchOptions,
    out: &Path,
    tick: &mut dyn FnMut(usize),
) -> Result<BenchResult> {
    let start = std::time::Instant::now();
    let prompts = benchmark_prompts(opts.prompts_per_category, 0);
    let texts: Vec<String> = prompts.iter().map(|p| p.text.clone()).collect();
    let images = generate_images(model, &texts, opts.samples_per_prompt, opts, tick)?;
    let mut per_cat: BTreeMap<Category, (usize, usize)> = BTreeMap::new();
    let mut gallery: BTreeMap<Category, Vec<(String, RgbImage)>> = BTreeMap::new();
    // Plans judged as the images are, with each planned object at its cell's centre: this
    // separates what a planning model decided from how well it drew it.
    let (mut plans_ok, mut plans) = (0usize, 0usize);
    for (p, drawn) in prompts.iter().zip(&images) {
        for Drawn { image: img, plan } in drawn {
            if let Some(plan) = plan {
                plans += 1;
                plans_ok += usize::from(plan_satisfies(p, plan));
            }
            let ok = p.score(&detect(img));
            let e = per_cat.entry(p.category).or_default();
            e.0 += usize::from(ok);
            e.1 += 1;
            let g = gallery.entry(p.category).or_default();
            if g.len() < 12 {
                g.push((format!("{}{}", if ok { "" } else { "x " }, p.text), img.clone()));
            }
        }
    }
    let mut metrics = BTreeMap::new();
    let mut details = serde_json::Map::new();
    for (cat, (ok, n)) in &per_cat {
        let score = *ok as f64 / (*n).max(1) as f64;
        metrics.insert(cat.tag().to_string(), score);
        details.insert(cat.tag().to_string(), serde_json::json!({"correct": ok, "total": n}));
    }
    let overall = metrics.values().sum::<f64>() / metrics.len().max(1) as f64;
    metrics.insert("overall".into(), overall);
    metrics.insert("chance".into(), f64::from(chance_level(CHANCE_PROMPTS, 0).overall));
    if plans > 0 {
        metrics.insert("plans".into(), plans_ok as f64 / plans as f64);
    }
    let mut samples = Vec::new();
    for (cat, items) in &gallery {
        samples.push(save_grid(out, &format!("geneval_{}.png", cat.tag()), items, 4)?);
    }
    Ok(BenchResult {
        name: "geneval".into(),
        protocol: format!(
            "GenEval's six categories on the synthetic world: {} prompts per category from seed 0, {} sample(s) each{}, \
             CFG {}, judged by the world's detector (counting exact, position by detected centres); overall = mean of \
             the categories; chance = the overall score of random world scenes ({CHANCE_PROMPTS} prompts per category \
             judged on the scenes' truth), what a model that ignores its prompts scores. Failed samples are marked x \
             in the grids.{}",
            opts.prompts_per_category,
            opts.samples_per_prompt,
            best_of_note(opts.generation.best_of),
            opts.generation.cfg_scale,
            if model.extensions.plan {
                " This model plans: each sample's plan (text, decoded as the suite decodes text) comes before its image; \
                 plans = the share of plans that satisfy their prompt, judged with each planned object at its cell's centre."
            } else {
                ""
            }
        ),
        metrics,
        details: serde_json::Value::Object(details),
        samples,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Whether a written plan satisfies the prompt, read as a layout ([`read_layout`]); a plan that
/// does not read back fails.
fn plan_satisfies(prompt: &GenEvalPrompt, plan: &str) -> bool {
    read_layout(plan).is_some_and(|objects| {
        let found: Vec<DetectedObject> = objects
            .into_iter()
            .map(|(color, shape, cell)| DetectedObject {
                shape,
                color,
                size: Size::Large,
                center: cell.center(),
                cell,
                area: 0.0,
                confidence: 1.0,
            })
            .collect();
        prompt.score(&found)
    })
}

/// GenEval interoperability: reads GenEval's metadata JSONL, writes `<index>/samples/<k>.png` and
/// `<index>/metadata.jsonl` for the official scorer. Returns the number of prompts.
pub fn from_file(
    model: &Emu3,
    prompts_file: &Path,
    opts: &BenchOptions,
    out: &Path,
    tick: &mut dyn FnMut(usize),
) -> Result<usize> {
    let text = std::fs::read_to_string(prompts_file)
        .with_context(|| format!("reading {}", prompts_file.display()))?;
    let mut prompts: Vec<(serde_json::Value, GenEvalPrompt)> = Vec::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not JSON", prompts_file.display(), n + 1))?;
        let p = from_geneval_json(&v)
            .with_context(|| format!("{}:{}", prompts_file.display(), n + 1))?;
        prompts.push((v, p));
    }
    anyhow::ensure!(!prompts.is_empty(), "{} holds no prompts", prompts_file.display());
    let texts: Vec<String> = prompts.iter().map(|(_, p)| p.text.clone()).collect();
    let images = generate_images(model, &texts, opts.samples_per_prompt, opts, tick)?;
    for (i, ((meta, p), imgs)) in prompts.iter().zip(&images).enumerate() {
        let dir = out.join(format!("{i:05}"));
        std::fs::create_dir_all(dir.join("samples"))?;
        for (k, d) in imgs.iter().enumerate() {
            let path = dir.join("samples").join(format!("{k:04}.png"));
            d.image.save(&path).with_context(|| format!("writing {}", path.display()))?;
        }
        let mut meta = meta.clone();
        if meta.get("prompt").is_none() {
            meta = to_geneval_json(p);
        }
        std::fs::write(dir.join("metadata.jsonl"), format!("{meta}\n"))?;
    }
    Ok(prompts.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::world::{Relation, Shape};

    #[test]
    fn plans_are_judged_as_their_images_would_be() {
        let two = GenEvalPrompt::counting(Shape::Circle, 2);
        assert!(plan_satisfies(&two, "red circle top left, blue circle bottom right"));
        assert!(!plan_satisfies(
            &two,
            "red circle top left, blue circle top right, red circle bottom left"
        ));
        assert!(
            !plan_satisfies(&two, "red circle top left, red circle top left"),
            "one cell twice"
        );
        assert!(!plan_satisfies(&two, "two circles"), "a plan that does not read back fails");
        let above = GenEvalPrompt::position(Shape::Diamond, Relation::Above, Shape::Triangle);
        assert!(plan_satisfies(&above, "red diamond top right, blue triangle bottom right"));
        assert!(!plan_satisfies(&above, "red triangle top right, blue diamond bottom right"));
        assert!(!plan_satisfies(&above, "red diamond top left, blue triangle top right"));
    }
}
