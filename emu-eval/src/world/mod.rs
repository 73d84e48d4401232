//! The built-in synthetic world: the default training data and its own ground-truth reader.
//!
//! - [`scene`]: still scenes of 1–4 coloured shapes on a 2×2 grid, deterministic from a seed;
//!   [`mod@render`] draws them anti-aliased at any size, [`video`] animates them (move, appear,
//!   change colour).
//! - [`text`] writes captions, [`qa`] question/answer pairs, and [`parse`] reads captions back
//!   and checks them against objects.
//! - [`mod@detect`] turns pixels back into objects, [`track`] does the same for videos,
//!   [`mod@degrade`] imitates tokenizer reconstruction damage and [`accuracy`] measures the
//!   detector, clean and degraded.
//! - [`geneval`] (with [`geneval_json`]) is the GenEval-style generation benchmark and
//!   [`metrics`] scores VQA answers and free-form captions.
//!
//! Pure Rust and CPU only; nothing here needs libtorch.

pub mod accuracy;
pub mod degrade;
pub mod detect;
pub mod geneval;
pub mod geneval_json;
pub mod metrics;
pub mod parse;
pub mod qa;
pub mod render;
pub mod scene;
pub mod text;
pub mod track;
pub mod video;

/// The version of what a world seed makes: bumped whenever rendering or text changes the records
/// a seed gives, so that token folders an older world made are not reused as if they were the
/// same data. 2: captions list objects in reading order. 3: scenes drawn from prompts for
/// training hold no distractors unless asked (`WorldData::prompt_distractors`). 4: half the
/// random scenes are captioned by an inventory of all their objects
/// (`WorldData::complete_caption_share`). 5: small objects are larger (radius 0.17, was 0.14).
pub const VERSION: u32 = 5;

pub use accuracy::{DetectorReport, degradation_report, evaluate_detector};
pub use degrade::{Degradation, degrade};
pub use detect::{DetectedObject, detect};
pub use geneval::{
    Category, GenEvalPrompt, GenEvalReport, benchmark_prompts, chance_level, prompts, score_images,
};
pub use geneval_json::{from_geneval_json, to_geneval_json};
pub use metrics::{AttributeScore, VqaReport, caption_attribute_score, vqa_accuracy};
pub use parse::{ObjectView, parse_caption, scan_caption, text_holds};
pub use qa::{
    QaKind, QaPair, answer_question, placed_first, sample_question, scene_questions,
    video_questions,
};
pub use render::render;
pub use scene::{Background, Cell, Color, Object, ObjectSpec, Relation, Scene, Shape, Size};
pub use text::{
    CaptionTemplate, REASONING_END, caption, caption_with, layout, reasoned_answer, video_caption,
};
pub use track::{TrackedObject, detect_video};
pub use video::{Direction, Event, VideoObject, VideoScene, render_video};
