//! What a model folder is: its layout, config, size, dtype, tokenizer and vocabulary, and what is
//! missing or inconsistent, found without loading the weights (names and shapes only).

use crate::config::Emu3Config;
use crate::layout::LmLayout;
use crate::model::Emu3ForCausalLM;
use anyhow::Result;
use emu_tokenizer::checkpoint::{Checkpoint, Layout};
use emu_tokenizer::vq::{VqConfig, VqLayout, VqModel};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use tch::Tensor;

#[derive(Debug, Default, Serialize)]
pub struct Part {
    pub layout: String,
    pub parameters: i64,
    pub dtypes: Vec<String>,
    pub config: serde_json::Value,
}

#[derive(Debug, Default, Serialize)]
pub struct InspectReport {
    pub path: String,
    /// "emu3 (language model + vision tokenizer)", "language model", "vision tokenizer", ...
    pub kind: String,
    pub language_model: Option<Part>,
    pub vision_tokenizer: Option<Part>,
    /// Where the text tokenizer is, if anywhere.
    pub tokenizer: Option<String>,
    pub problems: Vec<String>,
}

fn compare(
    vars: HashMap<String, Tensor>,
    ckpt: &Checkpoint,
    layout: &dyn Layout,
    what: &str,
    problems: &mut Vec<String>,
) -> (i64, Vec<String>) {
    let want: BTreeMap<String, Vec<i64>> =
        vars.iter().map(|(n, t)| (n.clone(), t.size())).collect();
    let mut seen = BTreeMap::new();
    let mut dtypes = std::collections::BTreeSet::new();
    let mut params = 0;
    for name in ckpt.names() {
        let Some(ours) = layout.model_name(name) else { continue };
        let meta = ckpt.meta(name).expect("listed");
        dtypes.insert(format!("{:?}", meta.dtype));
        params += meta.shape.iter().product::<i64>();
        match want.get(&ours) {
            None => problems.push(format!("{what}: unexpected tensor `{name}`")),
            Some(shape) if shape.iter().product::<i64>() != meta.shape.iter().product::<i64>() => {
                problems.push(format!(
                    "{what}: `{name}` has shape {:?}, the config implies {shape:?}",
                    meta.shape
                ))
            }
            Some(_) => {
                seen.insert(ours, ());
            }
        }
    }
    let missing: Vec<_> = want.keys().filter(|k| !seen.contains_key(*k)).collect();
    if !missing.is_empty() {
        problems.push(format!("{what}: {} tensors missing, e.g. `{}`", missing.len(), missing[0]));
    }
    (params, dtypes.into_iter().collect())
}

/// Inspects `dir` (a model folder, a tokenizer folder, or a transformers Emu3 folder).
pub fn inspect(dir: &Path) -> Result<InspectReport> {
    let mut r = InspectReport { path: dir.display().to_string(), ..Default::default() };
    anyhow::ensure!(dir.is_dir(), "{} is not a folder", dir.display());
    let cfg_path = dir.join("config.json");
    let raw: Option<serde_json::Value> =
        std::fs::read_to_string(&cfg_path).ok().and_then(|t| serde_json::from_str(&t).ok());
    if raw.is_none() {
        r.problems.push(format!("{} is missing or not JSON", cfg_path.display()));
    }
    let ckpt = match Checkpoint::open(dir) {
        Ok(c) => Some(c),
        Err(e) => {
            r.problems.push(format!("{e:#}"));
            None
        }
    };
    if let (Some(raw), Some(ckpt)) = (&raw, &ckpt) {
        if let Ok(layout) = LmLayout::detect(ckpt) {
            match Emu3Config::from_value(raw.clone()).and_then(|c| c.validate().map(|_| c)) {
                Ok(cfg) => {
                    let vars = Emu3ForCausalLM::shape_only(&cfg).vs.variables();
                    let (parameters, dtypes) =
                        compare(vars, ckpt, &layout, "language model", &mut r.problems);
                    r.language_model = Some(Part {
                        layout: layout.name().into(),
                        parameters,
                        dtypes,
                        config: serde_json::to_value(&cfg)?,
                    });
                }
                Err(e) => r.problems.push(format!("language-model config: {e:#}")),
            }
        }
        if let Ok(layout) = VqLayout::detect(ckpt) {
            let vq_raw = raw.get("vq_config").cloned().unwrap_or_else(|| raw.clone());
            match serde_json::from_value::<VqConfig>(vq_raw)
                .map_err(anyhow::Error::from)
                .and_then(|c| c.validate().map(|_| c))
            {
                Ok(cfg) => {
                    let vars = VqModel::shape_only(cfg.clone()).vs.variables();
                    let (parameters, dtypes) =
                        compare(vars, ckpt, &layout, "vision tokenizer", &mut r.problems);
                    let name = match layout {
                        VqLayout::Original => "original".to_string(),
                        VqLayout::Transformers { prefix } => format!("transformers ({prefix}*)"),
                    };
                    r.vision_tokenizer = Some(Part {
                        layout: name,
                        parameters,
                        dtypes,
                        config: serde_json::to_value(&cfg)?,
                    });
                }
                Err(e) => r.problems.push(format!("vision-tokenizer config: {e:#}")),
            }
        }
    }
    let sub = dir.join("vision_tokenizer");
    if r.vision_tokenizer.is_none() && sub.is_dir() {
        let inner = inspect(&sub)?;
        r.problems.extend(inner.problems.into_iter().map(|p| format!("vision_tokenizer/: {p}")));
        r.vision_tokenizer = inner.vision_tokenizer;
    }
    for name in ["tokenizer.json", "emu3.tiktoken"] {
        if dir.join(name).exists() {
            r.tokenizer = Some(name.into());
            break;
        }
    }
    r.kind = match (&r.language_model, &r.vision_tokenizer) {
        (Some(_), Some(_)) => "emu3 model (language model + vision tokenizer)",
        (Some(_), None) => "language model (no vision tokenizer: text only, or pass --vq)",
        (None, Some(_)) => "vision tokenizer",
        (None, None) => "unknown (no Emu3 weights found)",
    }
    .into();
    if r.language_model.is_some() && r.tokenizer.is_none() {
        r.problems
            .push("no text tokenizer (tokenizer.json or emu3.tiktoken) beside config.json".into());
    }
    Ok(r)
}
