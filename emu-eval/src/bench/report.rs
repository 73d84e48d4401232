//! The report every benchmark writes into: one schema for all (`report.json`), rendered as
//! `report.md` for people.
//!
//! Schema 1:
//! ```json
//! { "schema": 1, "model": "<model folder>", "suite": "smoke|quick|full", "seconds": 12.3,
//!   "benchmarks": [ { "name": "geneval|vqa|video|recon|ppl",
//!                     "protocol": "how it was measured",
//!                     "metrics": { "<metric>": <finite number>, ... },
//!                     "details": <any JSON>,
//!                     "samples": ["<png file beside report.json>", ...],
//!                     "seconds": 4.5 } ] }
//! ```
//! Metrics: geneval `overall` and one per category (`single_object`, `two_object`, `counting`,
//! `colors`, `position`, `color_attr`), in [0,1], and `chance` (random scenes' overall); vqa
//! `accuracy`, `accuracy_<kind>`, `caption_f1`; video `motion_accuracy`, `caption_agreement`,
//! `continuation_accuracy`; recon `world_psnr_db`, `world_ssim`, `photo_psnr_db`,
//! `codebook_perplexity`, `codebook_used`, `detect_exact`, `detect_colour_cell`, `detect_shape`
//! (in [0,1]); ppl `loss_image`, `caption_gain` (loss_image after an empty caption minus
//! loss_image), `loss_text`, `loss_video` (nats per token).

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// Version of the report schema; bump on incompatible changes.
pub const SCHEMA: u32 = 1;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BenchResult {
    /// `geneval`, `vqa`, `video`, `recon` or `ppl`.
    pub name: String,
    /// How it was measured (prompt set, samples per prompt, seeds).
    pub protocol: String,
    /// Headline numbers, all in [0,1] except where the name says (`psnr_db`, `loss_*`).
    pub metrics: BTreeMap<String, f64>,
    /// Per-item or per-category detail.
    pub details: serde_json::Value,
    /// Sample grids written (relative to the report's folder).
    pub samples: Vec<String>,
    pub seconds: f64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub schema: u32,
    pub model: String,
    /// `quick` or `full`.
    pub suite: String,
    pub benchmarks: Vec<BenchResult>,
    pub seconds: f64,
}

impl Report {
    pub fn metric(&self, bench: &str, name: &str) -> Option<f64> {
        self.benchmarks.iter().find(|b| b.name == bench)?.metrics.get(name).copied()
    }

    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        emu_tokenizer::checkpoint::write_atomic(
            &dir.join("report.json"),
            &serde_json::to_string_pretty(self)?,
        )?;
        emu_tokenizer::checkpoint::write_atomic(&dir.join("report.md"), &self.markdown())
    }

    pub fn read(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let r: Report = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a report of schema {SCHEMA}", path.display()))?;
        anyhow::ensure!(
            r.schema == SCHEMA,
            "{} has schema {}, expected {SCHEMA}",
            path.display(),
            r.schema
        );
        Ok(r)
    }

    pub fn markdown(&self) -> String {
        let mut s = format!("# Evaluation of `{}` ({} suite)\n\n", self.model, self.suite);
        s.push_str("| benchmark | metric | value |\n| --- | --- | --- |\n");
        for b in &self.benchmarks {
            for (k, v) in &b.metrics {
                s.push_str(&format!("| {} | {k} | {v:.3} |\n", b.name));
            }
        }
        for b in &self.benchmarks {
            s.push_str(&format!("\n## {}\n\n{}\n\n", b.name, b.protocol));
            for p in &b.samples {
                s.push_str(&format!("![{}]({p})\n\n", b.name));
            }
            s.push_str(&format!("({:.1} s)\n", b.seconds));
        }
        s.push_str(&format!("\nTotal: {:.1} s\n", self.seconds));
        s
    }
}

/// Checks that `value` has the report schema (what `cargo xtask test` asserts of the smoke run).
pub fn validate(value: &serde_json::Value) -> Result<Report> {
    let r: Report = serde_json::from_value(value.clone()).context("not a report")?;
    anyhow::ensure!(r.schema == SCHEMA, "schema {} is not {SCHEMA}", r.schema);
    anyhow::ensure!(!r.benchmarks.is_empty(), "the report has no benchmarks");
    for b in &r.benchmarks {
        anyhow::ensure!(!b.metrics.is_empty(), "benchmark {} has no metrics", b.name);
        for (k, v) in &b.metrics {
            anyhow::ensure!(v.is_finite(), "{}.{k} is not a finite number", b.name);
        }
    }
    Ok(r)
}
