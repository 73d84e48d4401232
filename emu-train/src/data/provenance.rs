//! What a token folder was made from, kept beside its index: the data part of the pipeline config
//! and digests of the two tokenizers that turned it into ids. A rerun in the same run folder
//! reuses the tokens only when it would make the same ones; otherwise it stops and names the
//! first field that differs, where reusing them would train on other data than the config says.
//! Folder sources are recorded by path: edited files under the same path go unnoticed.

use anyhow::{Context, Result, bail};
use emu_tokenizer::checkpoint::write_atomic;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::path::Path;

/// The file in a token folder that records what made it.
pub const FILE: &str = "made_from.json";

/// The hex SHA-256 of a file, to stand for a tokenizer in the record.
pub fn digest(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect())
}

/// Records `made_from` in `dir` (created if needed); written before the shards, so that the index,
/// written last, still marks a finished folder.
pub fn record(dir: &Path, made_from: &Value) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    write_atomic(&dir.join(FILE), &serde_json::to_string_pretty(made_from)?)
}

/// Ok when `dir` was made from `made_from`. A folder without a record (made before records
/// existed) is judged by `legacy`, what the run folder's old config says made it, on the fields
/// that holds; with neither, it is reused with a note.
pub fn check(dir: &Path, made_from: &Value, legacy: Option<&Value>) -> Result<()> {
    // Both sides go through the same JSON text, so a float compares equal to itself.
    let now: Value = serde_json::from_str(&serde_json::to_string(made_from)?)?;
    let path = dir.join(FILE);
    let recorded = path.exists();
    let (saved, source) = if recorded {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let saved: Value = serde_json::from_str(&text).with_context(|| {
            format!("{} is not JSON; delete {} to tokenize again", path.display(), dir.display())
        })?;
        (saved, path.display().to_string())
    } else if let Some(old) = legacy {
        (old.clone(), "the run's previous pipeline.json".to_string())
    } else {
        eprintln!(
            "note: {} does not record what it was made from; reusing it as it is",
            dir.display()
        );
        return Ok(());
    };
    let now = match (&saved, now) {
        // A legacy record holds fewer fields (no digests): compare those it has.
        (Value::Object(old), Value::Object(mut n)) if !recorded => {
            n.retain(|k, _| old.contains_key(k));
            Value::Object(n)
        }
        (_, n) => n,
    };
    if let Some((field, was, wants)) = first_difference(&saved, &now, "") {
        bail!(
            "{} was made from other data: `{field}` was {was} (by {source}) and would now be \
             {wants}; delete {} to tokenize again, or train under another --name",
            dir.display(),
            dir.display()
        );
    }
    Ok(())
}

/// The first path (`sources.0.images`) at which `a` and `b` differ, with both values.
fn first_difference(a: &Value, b: &Value, at: &str) -> Option<(String, String, String)> {
    let join = |k: &str| if at.is_empty() { k.to_string() } else { format!("{at}.{k}") };
    let show = |v: Option<&Value>| v.map_or_else(|| "nothing".to_string(), Value::to_string);
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().find_map(|k| match (x.get(k), y.get(k)) {
                (Some(p), Some(q)) => first_difference(p, q, &join(k)),
                (p, q) => Some((join(k), show(p), show(q))),
            })
        }
        (Value::Array(x), Value::Array(y)) => {
            (0..x.len().max(y.len())).find_map(|i| match (x.get(i), y.get(i)) {
                (Some(p), Some(q)) => first_difference(p, q, &join(&i.to_string())),
                (p, q) => Some((join(&i.to_string()), show(p), show(q))),
            })
        }
        _ if a == b => None,
        _ => {
            let at = if at.is_empty() { "(all)".to_string() } else { at.to_string() };
            Some((at, a.to_string(), b.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tokens_are_reused_only_for_the_data_that_made_them() {
        let dir = tempfile::tempdir().unwrap();
        let made = json!({"sources": [{"kind": "world", "images": 12000}], "qa_turns": 4,
            "cfg_dropout": 0.1, "text_tokenizer": "ab12"});
        check(dir.path(), &made, None).expect("a folder that records nothing is reused");
        record(dir.path(), &made).unwrap();
        check(dir.path(), &made, None).expect("the same data reuses the tokens");

        let mut more = made.clone();
        more["sources"][0]["images"] = json!(24000);
        let err = format!("{:#}", check(dir.path(), &more, None).unwrap_err());
        assert!(err.contains("`sources.0.images` was 12000"), "{err}");
        assert!(err.contains("would now be 24000"), "{err}");
        assert!(err.contains(FILE) && err.contains("delete"), "{err}");

        let mut two = made.clone();
        two["sources"].as_array_mut().unwrap().push(json!({"kind": "video_folder"}));
        let err = format!("{:#}", check(dir.path(), &two, None).unwrap_err());
        assert!(err.contains("`sources.1` was nothing"), "{err}");

        let mut retrained = made.clone();
        retrained["text_tokenizer"] = json!("cd34");
        let err = format!("{:#}", check(dir.path(), &retrained, None).unwrap_err());
        assert!(err.contains("`text_tokenizer` was \"ab12\""), "{err}");
    }

    #[test]
    fn folders_without_a_record_are_judged_by_the_old_config() {
        let dir = tempfile::tempdir().unwrap();
        let old = json!({"sources": [{"kind": "world", "images": 12000}], "qa_turns": 4});
        let now = json!({"sources": [{"kind": "world", "images": 12000}], "qa_turns": 4,
            "text_tokenizer": "ab12"});
        check(dir.path(), &now, Some(&old)).expect("the old config made the same data");
        let mut more = now.clone();
        more["sources"][0]["images"] = json!(24000);
        let err = format!("{:#}", check(dir.path(), &more, Some(&old)).unwrap_err());
        assert!(err.contains("`sources.0.images` was 12000 (by the run's previous"), "{err}");
    }
}
