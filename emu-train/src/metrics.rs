//! `metrics.jsonl`: one JSON object per line, appended by the main rank, and PNG plots of it.

use anyhow::{Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

pub struct Metrics {
    path: PathBuf,
    file: Option<std::fs::File>,
}

impl Metrics {
    /// Appends to `run/metrics.jsonl` when `enabled` (the main rank); otherwise does nothing.
    pub fn open(run: &Path, enabled: bool) -> Result<Self> {
        let path = run.join("metrics.jsonl");
        let file = if enabled {
            std::fs::create_dir_all(run)?;
            Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .with_context(|| format!("opening {}", path.display()))?,
            )
        } else {
            None
        };
        Ok(Metrics { path, file })
    }

    pub fn log(&mut self, record: serde_json::Value) -> Result<()> {
        if let Some(f) = &mut self.file {
            writeln!(f, "{record}").with_context(|| format!("writing {}", self.path.display()))?;
        }
        Ok(())
    }
}

/// Reads every record of a metrics file.
pub fn read(path: &Path) -> Result<Vec<serde_json::Value>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).with_context(|| format!("{}: bad line", path.display())))
        .collect()
}
