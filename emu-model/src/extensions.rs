//! `extensions.json`: what a model folder's training taught beyond the reference's sequence
//! format, so that generation follows it without being told. A folder without the file (every
//! official checkpoint) gets the reference's behaviour.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Extensions {
    /// Its text-to-image samples held a plan between caption and image
    /// (`emu_tokenizer::sequence::PLAN_MARK`), so text-to-image generation writes a plan first
    /// and draws from caption and plan together.
    pub plan: bool,
    /// Its chat samples stated their reasoning before the answer (`world::reasoned_answer` in
    /// emu-eval), so its answers do too; benchmarks judge the answer after it, and take its
    /// answers' loss in that form.
    pub reasoning: bool,
    /// Its answers to questions that search the image (relations, counts of one shape or
    /// colour, an object's colour) placed what they search for first ("red circle top left, blue
    /// star bottom right: yes"; `world::placed_first` in emu-eval), so benchmarks judge the
    /// answer after that and take those answers' loss in that form.
    pub place_first: bool,
    /// The guidance scale its training run evaluated it with, which `emu generate` and `emu
    /// eval` use unless told otherwise. A planning model's prompt says far more about its image
    /// than a caption alone, and Emu3's scale of 3 then overshoots.
    pub cfg_scale: Option<f64>,
}

impl Extensions {
    pub const FILE: &'static str = "extensions.json";

    /// The folder's extensions, or none when it has no [`Self::FILE`].
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(Self::FILE);
        if !path.exists() {
            return Ok(Self::default());
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a valid extensions file; expected {{\"plan\": true|false, \
                 \"reasoning\": true|false, \"place_first\": true|false, \"cfg_scale\": \
                 a number}}",
                path.display()
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_without_the_file_has_none_and_a_bad_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Extensions::load(dir.path()).unwrap(), Extensions::default());
        std::fs::write(dir.path().join(Extensions::FILE), r#"{"plan": true}"#).unwrap();
        let e = Extensions::load(dir.path()).unwrap();
        assert_eq!(e, Extensions { plan: true, ..Extensions::default() });
        std::fs::write(dir.path().join(Extensions::FILE), r#"{"place_first": true}"#).unwrap();
        assert!(Extensions::load(dir.path()).unwrap().place_first);
        std::fs::write(dir.path().join(Extensions::FILE), r#"{"cfg_scale": 1.5}"#).unwrap();
        assert_eq!(Extensions::load(dir.path()).unwrap().cfg_scale, Some(1.5));
        std::fs::write(dir.path().join(Extensions::FILE), r#"{"plans": 1}"#).unwrap();
        let e = format!("{:#}", Extensions::load(dir.path()).unwrap_err());
        assert!(e.contains("extensions.json is not a valid extensions file"), "{e}");
        assert!(e.contains("unknown field `plans`"), "{e}");
    }
}
