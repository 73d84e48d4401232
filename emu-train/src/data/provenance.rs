//! What a token folder was made from (the data sources and the tokenisation options), kept beside
//! its index. A rerun in the same run folder reuses the tokens only when its config would make
//! the same ones; otherwise it stops and names the first field that differs, where reusing them
//! would train on other data than the config says.

use anyhow::{Context, Result, bail};
use emu_tokenizer::checkpoint::write_atomic;
use serde_json::Value;
use std::path::Path;

/// The file in a token folder that records what made it.
pub const FILE: &str = "made_from.json";

/// Records `made_from` in `dir` (created if needed); written before the shards, so that the index,
/// written last, still marks a finished folder.
pub fn record(dir: &Path, made_from: &Value) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    write_atomic(&dir.join(FILE), &serde_json::to_string_pretty(made_from)?)
}

/// Ok when `dir` was made from `made_from`. A folder that records nothing (written by an older
/// emu, or by hand) is reused with a note, as it was before this record existed.
pub fn check(dir: &Path, made_from: &Value) -> Result<()> {
    let path = dir.join(FILE);
    if !path.exists() {
        eprintln!(
            "note: {} does not record what it was made from; reusing it as it is",
            dir.display()
        );
        return Ok(());
    }
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let saved: Value = serde_json::from_str(&text).with_context(|| {
        format!("{} is not JSON; delete {} to tokenize again", path.display(), dir.display())
    })?;
    if let Some((field, was, now)) = first_difference(&saved, made_from, "") {
        bail!(
            "{} was made from other data: `{field}` was {was}, the config says {now}; delete {} \
             to tokenize again, or train under another --name",
            dir.display(),
            dir.display()
        );
    }
    Ok(())
}

/// The first path (`sources.0.images`) at which `a` and `b` differ, with both values.
fn first_difference(a: &Value, b: &Value, at: &str) -> Option<(String, String, String)> {
    let join = |k: &str| if at.is_empty() { k.to_string() } else { format!("{at}.{k}") };
    let missing = || "nothing".to_string();
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().find_map(|k| match (x.get(k), y.get(k)) {
                (Some(p), Some(q)) => first_difference(p, q, &join(k)),
                (p, q) => Some((
                    join(k),
                    p.map_or_else(missing, Value::to_string),
                    q.map_or_else(missing, Value::to_string),
                )),
            })
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (p, q))| first_difference(p, q, &join(&i.to_string()))),
        _ if a == b => None,
        _ => Some((
            if at.is_empty() { "(all)".into() } else { at.into() },
            a.to_string(),
            b.to_string(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tokens_are_reused_only_for_the_data_that_made_them() {
        let dir = tempfile::tempdir().unwrap();
        let made = json!({"sources": [{"kind": "world", "images": 12000}], "qa_turns": 4});
        check(dir.path(), &made).expect("a folder that records nothing is reused");
        record(dir.path(), &made).unwrap();
        check(dir.path(), &made).expect("the same data reuses the tokens");

        let more = json!({"sources": [{"kind": "world", "images": 24000}], "qa_turns": 4});
        let err = format!("{:#}", check(dir.path(), &more).unwrap_err());
        assert!(err.contains("`sources.0.images` was 12000, the config says 24000"), "{err}");
        assert!(err.contains(&dir.path().display().to_string()) && err.contains("delete"), "{err}");

        let two =
            json!({"sources": [{"kind": "world", "images": 12000}, {"kind": "x"}], "qa_turns": 4});
        let err = format!("{:#}", check(dir.path(), &two).unwrap_err());
        assert!(err.contains("`sources` was"), "{err}");
        let fewer = json!({"sources": [{"kind": "world", "images": 12000}]});
        let err = format!("{:#}", check(dir.path(), &fewer).unwrap_err());
        assert!(err.contains("`qa_turns` was 4, the config says nothing"), "{err}");
    }
}
