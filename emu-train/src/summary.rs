//! The run's `report.md`: what was trained, how long each stage took, the scores reached, the
//! curves (PNG plots of metrics.jsonl) and sample grids.

use crate::metrics;
use crate::pipeline::Timings;
use crate::plot::plot;
use crate::presets::PipelineConfig;
use anyhow::Result;
use emu_eval::bench::report::Report;
use std::path::Path;

fn series(records: &[serde_json::Value], phase: &str, key: &str) -> Vec<(f64, f64)> {
    records
        .iter()
        .filter(|r| r["phase"] == phase)
        .filter_map(|r| Some((r["step"].as_f64()?, r.pointer(key).and_then(|v| v.as_f64())?)))
        .collect()
}

/// Writes plots and `report.md` into `run`.
pub fn write(run: &Path, cfg: &PipelineConfig, t: &Timings, report: Option<&Report>) -> Result<()> {
    let recs = metrics::read(&run.join("metrics.jsonl")).unwrap_or_default();
    let plots = run.join("plots");
    std::fs::create_dir_all(&plots)?;
    let mut losses = vec![("loss".to_string(), series(&recs, "lm", "/loss"))];
    if cfg.chat.is_some() {
        // The chat phase counts its own steps from 0; plot it after the first phase.
        let first = cfg.lm_train.steps as f64;
        let chat = metrics::read(&run.join("chat").join("metrics.jsonl")).unwrap_or_default();
        let chat: Vec<(f64, f64)> =
            series(&chat, "lm", "/loss").into_iter().map(|(s, l)| (s + first, l)).collect();
        losses[0].0 = "model/".into();
        losses.push(("chat/".into(), chat));
    }
    plot(&plots.join("lm_loss.png"), "language model: training loss", "step", &losses)?;
    plot(
        &plots.join("vq.png"),
        "vision tokenizer: reconstruction PSNR (dB)",
        "step",
        &[("psnr".into(), series(&recs, "vq", "/psnr"))],
    )?;
    let cats =
        ["overall", "single_object", "two_object", "counting", "colors", "position", "color_attr"];
    let eval: Vec<(String, Vec<(f64, f64)>)> = cats
        .iter()
        .map(|c| (c.to_string(), series(&recs, "eval", &format!("/geneval/{c}"))))
        .filter(|(_, s)| !s.is_empty())
        .collect();
    if !eval.is_empty() {
        plot(&plots.join("geneval.png"), "quick GenEval during training", "step", &eval)?;
    }
    let total = t.records_s + t.vq_s + t.bpe_s + t.tokenize_s + t.lm_s + t.chat_s + t.eval_s;
    let mut md = format!("# emu3-rs run: preset `{}`\n\n", cfg.preset);
    md.push_str(&format!(
        "Vision tokenizer: {} codes, {}× spatial / {}× temporal downsampling. Language model: hidden {}, {} layers, {}/{} heads, \
         {} steps of {} sequences × {} tokens ({:?}).\n\n",
        cfg.vq.codebook_size,
        cfg.vq.spatial_factor(),
        cfg.vq.temporal_downsample_factor,
        cfg.model.hidden_size,
        cfg.model.num_hidden_layers,
        cfg.model.num_attention_heads,
        cfg.model.num_key_value_heads,
        cfg.lm_train.steps,
        cfg.lm_train.batch_size,
        cfg.lm_train.max_len,
        cfg.lm_train.stage
    ));
    if let Some(c) = &cfg.chat {
        md.push_str(&format!(
            "Then a chat model: {} more steps ({:?}) from that model into `chat/`. As Emu3 pairs \
             Emu3-Gen with Emu3-Chat, generation is judged on `model/` and understanding on \
             `chat/`.\n\n",
            c.steps, c.stage
        ));
    }
    md.push_str("## Wall time\n\n| stage | seconds |\n| --- | --- |\n");
    for (k, v) in [
        ("data", t.records_s),
        ("VQ training", t.vq_s),
        ("BPE", t.bpe_s),
        ("tokenize", t.tokenize_s),
        ("LM training", t.lm_s),
        ("LM training (chat)", t.chat_s),
        ("evaluation", t.eval_s),
        ("total", total),
    ]
    .into_iter()
    .filter(|(k, _)| cfg.chat.is_some() || !k.ends_with("(chat)"))
    {
        md.push_str(&format!("| {k} | {v:.1} |\n"));
    }
    if let Some(r) = report {
        md.push_str("\n## Scores\n\n| benchmark | metric | value |\n| --- | --- | --- |\n");
        for b in &r.benchmarks {
            for (k, v) in &b.metrics {
                md.push_str(&format!("| {} | {k} | {v:.3} |\n", b.name));
            }
        }
        md.push_str("\nProtocols and sample grids: [eval/report.md](eval/report.md).\n\n");
        for b in &r.benchmarks {
            for s in b.samples.iter().filter(|s| !s.is_empty()).take(2) {
                md.push_str(&format!("![{}](eval/{s})\n\n", b.name));
            }
        }
    }
    md.push_str("## Curves\n\n![loss](plots/lm_loss.png)\n\n![vq](plots/vq.png)\n\n");
    if !eval.is_empty() {
        md.push_str("![geneval](plots/geneval.png)\n");
    }
    emu_tokenizer::checkpoint::write_atomic(&run.join("report.md"), &md)
}
