//! Training records and where they come from: the built-in world (default), an image folder with
//! a captions JSONL, or a folder of videos (one sub-folder of frames each, caption in
//! `caption.txt`). Bad records (unreadable image, empty caption) are counted and skipped with a
//! message, never fatal and never silent.
//!
//! Shapes: H/W pixels, T frames.

use anyhow::{Context, Result, ensure};
use emu_eval::world::{self, CaptionTemplate, Category, Scene, VideoScene, text::Detail};
use image::RgbImage;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The question whose answer is a description of the whole image.
pub const DESCRIBE: &str = "describe the image";

/// One unit of training data.
pub enum Record {
    /// An image with a caption (for generation) and question/answer pairs (for understanding).
    /// With `reasoning`, the first answer of each chat sample states it before answering
    /// ([`world::reasoned_answer`]); with `plan`, generation writes it between caption and image
    /// ([`emu_tokenizer::sequence::PLAN_MARK`]).
    Image {
        image: RgbImage,
        caption: String,
        qa: Vec<(String, String)>,
        reasoning: Option<String>,
        plan: Option<String>,
    },
    /// A clip with a caption.
    Video { frames: Vec<RgbImage>, caption: String, fps: i64 },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorldData {
    pub images: usize,
    pub videos: usize,
    /// Pixels per side.
    pub size: u32,
    /// Frames per video (a multiple of the tokenizer's temporal factor).
    pub frames: usize,
    pub fps: i64,
    /// Distinct question/answer pairs per image, besides the description: beyond one of each
    /// kind the scene supports, further subjects and relations (a lone object runs out sooner).
    pub qa_per_image: usize,
    /// Share of images drawn from GenEval-style prompts (their example scenes) rather than random
    /// scenes, so that every prompt form of the benchmark's language is seen in training.
    pub prompt_share: f64,
    /// Most distractors (objects of shapes the prompt does not name) in a scene drawn from a
    /// prompt. 0: the prompt names everything in its image, so that, as in the captions that
    /// list every object, nothing in the image is left to chance.
    pub prompt_distractors: usize,
    /// Share of the random scenes (those not drawn from prompts) captioned by an inventory of all
    /// their objects at a random [`Detail`], rather than by a template drawn from all those the
    /// scene supports (most of which name only some of its objects). Guidance amplifies whatever
    /// a caption leaves to chance: trained on partial captions, "two circles" often came out as
    /// three or four.
    pub complete_caption_share: f64,
    /// Whether the chat samples reason before they answer: the first answer of each states the
    /// scene's layout ([`world::layout`]), "red circle top left, blue star bottom right: red",
    /// so that the model reads its answer off text it wrote rather than off the image codes.
    /// Off in the presets: two layers read their answers back poorly (README, "Plans").
    pub reasoning: bool,
    /// Whether text-to-image samples plan: the scene's layout follows the caption, "two circles:
    /// red circle top left, blue circle bottom right", and the image follows that. Generation
    /// then writes the layout first, where counting objects and placing them are decisions over
    /// a few words rather than over the image's codes.
    pub plan: bool,
    /// Whether questions that search the image are answered after what they search for is
    /// placed ([`world::placed_first`]): "is the red circle above the blue star?" "red circle top
    /// left, blue star bottom right: no"; "how many circles are there?" "red circle top left,
    /// blue circle bottom right: two"; "what color is the star?" "star top right: red". The
    /// model then compares or counts places it wrote rather than objects it must find among the
    /// codes in one step.
    pub place_first: bool,
    pub seed: u64,
}

impl Default for WorldData {
    fn default() -> Self {
        WorldData {
            images: 4000,
            videos: 400,
            size: 64,
            frames: 8,
            fps: 8,
            qa_per_image: 2,
            prompt_share: 0.5,
            prompt_distractors: 0,
            complete_caption_share: 0.5,
            reasoning: false,
            plan: false,
            place_first: false,
            seed: 1,
        }
    }
}

impl WorldData {
    /// Rejects fields no world can honour, naming the field.
    pub fn validate(&self) -> Result<()> {
        ensure!(
            (0.0..=1.0).contains(&self.prompt_share),
            "world source: `prompt_share` is {}; expected a share between 0 and 1",
            self.prompt_share
        );
        ensure!(
            (0.0..=1.0).contains(&self.complete_caption_share),
            "world source: `complete_caption_share` is {}; expected a share between 0 and 1",
            self.complete_caption_share
        );
        let room = world::scene::MAX_OBJECTS - 1;
        ensure!(
            self.prompt_distractors <= room,
            "world source: `prompt_distractors` is {}; a scene has room for at most {room} beside \
             a prompt's one object",
            self.prompt_distractors
        );
        Ok(())
    }
}

/// Seeds used for training data live far from the benchmark's (which use small seeds).
const TRAIN_SEED_BASE: u64 = 1 << 40;

/// A scene and its caption: from a random GenEval-style prompt or a random scene.
fn world_image(cfg: &WorldData, i: usize) -> (Scene, String) {
    let seed = TRAIN_SEED_BASE + cfg.seed * 10_000_000 + i as u64;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    if rng.random::<f64>() < cfg.prompt_share {
        let cat = Category::ALL[rng.random_range(0..Category::ALL.len())];
        let prompt = world::prompts(cat, 1, seed).remove(0);
        let scene = prompt.scene_with_distractors(seed, cfg.prompt_distractors);
        let text = prompt.in_reading_order(&scene).text;
        (scene, text)
    } else {
        let scene = Scene::random(seed);
        let caption = if rng.random::<f64>() < cfg.complete_caption_share {
            let detail = Detail::ALL[rng.random_range(0..Detail::ALL.len())];
            world::caption_with(&scene, CaptionTemplate::Inventory(detail), seed)
                .expect("every scene has an inventory")
        } else {
            world::caption(&scene, seed)
        };
        (scene, caption)
    }
}

/// The world's records, rendered in parallel and deterministic from `cfg`.
pub fn world_records(cfg: &WorldData) -> Vec<Record> {
    let mut out: Vec<Record> = (0..cfg.images)
        .into_par_iter()
        .map(|i| {
            let (scene, caption) = world_image(cfg, i);
            let seed = TRAIN_SEED_BASE + cfg.seed * 10_000_000 + i as u64;
            let describe =
                world::caption_with(&scene, CaptionTemplate::Inventory(Detail::ColorShape), seed)
                    .unwrap_or_else(|| caption.clone());
            let mut qa = image_questions(&scene, seed, cfg.qa_per_image);
            if cfg.place_first {
                for (q, a) in &mut qa {
                    if let Some(places) = world::placed_first(q, &scene.objects) {
                        *a = world::reasoned_answer(&places, a);
                    }
                }
            }
            qa.push((DESCRIBE.to_string(), describe));
            let layout = (cfg.reasoning || cfg.plan).then(|| world::layout(&scene));
            let reasoning = layout.clone().filter(|_| cfg.reasoning);
            let plan = layout.filter(|_| cfg.plan);
            Record::Image { image: world::render(&scene, cfg.size), caption, qa, reasoning, plan }
        })
        .collect();
    out.extend((0..cfg.videos).into_par_iter().map(|i| video_record(cfg, i)).collect::<Vec<_>>());
    out
}

/// Up to `n` distinct questions about `scene`. scene_questions asks one of each kind the scene
/// supports, in a fixed order (colour, shape, count, relation), so each of its draws is shuffled:
/// the first few alone would never teach relations. Past one draw, further draws (other subjects,
/// other relations) follow until `n` distinct questions are found or the scene runs out.
fn image_questions(scene: &Scene, seed: u64, n: usize) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::with_capacity(n);
    for draw in 0..4 * n as u64 {
        if out.len() >= n {
            break;
        }
        // The first draw keeps the seeds the single draw had, so a scene's first questions
        // are the ones it was asked before further draws.
        let qseed = if draw == 0 { seed } else { seed ^ (draw << 48) };
        let mut questions = world::scene_questions(scene, qseed);
        questions.shuffle(&mut ChaCha8Rng::seed_from_u64(qseed ^ 0x005e_ed0a));
        for q in questions {
            if out.len() < n && !out.iter().any(|(asked, _)| *asked == q.question) {
                out.push((q.question, q.answer));
            }
        }
    }
    out
}

fn video_record(cfg: &WorldData, i: usize) -> Record {
    let seed = TRAIN_SEED_BASE + cfg.seed * 10_000_000 + 5_000_000 + i as u64;
    let v = VideoScene::random(seed);
    let mut frames = world::render_video(&v, cfg.size);
    frames.truncate(cfg.frames);
    while frames.len() < cfg.frames {
        frames.push(frames.last().expect("videos have frames").clone());
    }
    Record::Video { frames, caption: world::video_caption(&v, seed), fps: cfg.fps }
}

/// One line of a captions JSONL: `{"file": "a.png", "caption": "..."}`; optional `"qa"`:
/// `[["question", "answer"], ...]`, and `"reasoning"`: text the first answer of each chat
/// sample states before it answers.
#[derive(Deserialize)]
struct CaptionLine {
    file: String,
    caption: String,
    #[serde(default)]
    qa: Vec<(String, String)>,
    #[serde(default)]
    reasoning: Option<String>,
}

/// Records of an image folder described by `captions` (JSONL); images resized to `size`.
/// Returns the records and how many lines were skipped.
pub fn image_folder_records(
    dir: &Path,
    captions: &Path,
    size: u32,
) -> Result<(Vec<Record>, usize)> {
    let text = std::fs::read_to_string(captions)
        .with_context(|| format!("reading {}", captions.display()))?;
    let mut out = Vec::new();
    let mut skipped = 0;
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let rec = match serde_json::from_str::<CaptionLine>(line) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("skipping {}:{}: not a caption record ({e})", captions.display(), n + 1);
                skipped += 1;
                continue;
            }
        };
        if rec.caption.trim().is_empty() {
            eprintln!("skipping {}:{}: empty caption for {}", captions.display(), n + 1, rec.file);
            skipped += 1;
            continue;
        }
        let path = dir.join(&rec.file);
        match emu_tokenizer::image::load_image(&path) {
            Ok(img) => {
                let image = emu_tokenizer::image::resize(&img, size, size);
                let mut qa = rec.qa;
                qa.push((DESCRIBE.into(), rec.caption.clone()));
                let reasoning = rec.reasoning.filter(|r| !r.trim().is_empty());
                out.push(Record::Image { image, caption: rec.caption, qa, reasoning, plan: None });
            }
            Err(e) => {
                eprintln!("skipping {}:{}: {e:#}", captions.display(), n + 1);
                skipped += 1;
            }
        }
    }
    ensure!(!out.is_empty(), "{}: no usable records ({skipped} skipped)", captions.display());
    Ok((out, skipped))
}

/// Records of a video folder: each sub-folder holds frames and a `caption.txt`.
pub fn video_folder_records(
    dir: &Path,
    size: u32,
    frames: usize,
    fps: i64,
) -> Result<(Vec<Record>, usize)> {
    let mut subs: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    subs.sort();
    let mut out = Vec::new();
    let mut skipped = 0;
    for sub in subs {
        let caption =
            std::fs::read_to_string(sub.join("caption.txt")).unwrap_or_default().trim().to_string();
        if caption.is_empty() {
            eprintln!("skipping video {}: no caption.txt (or it is empty)", sub.display());
            skipped += 1;
            continue;
        }
        let tmp: Vec<RgbImage> = match emu_tokenizer::files::load_video(&sub) {
            Ok(f) => f.iter().map(|f| emu_tokenizer::image::resize(f, size, size)).collect(),
            Err(e) => {
                eprintln!("skipping video {}: {e:#}", sub.display());
                skipped += 1;
                continue;
            }
        };
        if tmp.len() < frames {
            eprintln!("skipping video {}: {} frames, need {frames}", sub.display(), tmp.len());
            skipped += 1;
            continue;
        }
        out.push(Record::Video { frames: tmp[..frames].to_vec(), caption, fps });
    }
    Ok((out, skipped))
}

/// Every text the tokenizer must know well, for BPE training: captions, and the chat samples'
/// text as often as the samples hold it, so that the template costs a few tokens rather than
/// one per character.
pub fn corpus(records: &[Record]) -> Vec<String> {
    use emu_tokenizer::sequence::{CHAT_PREFIX, CHAT_SUFFIX, PLAN_MARK};
    let mut out = Vec::new();
    for r in records {
        match r {
            Record::Image { caption, qa, reasoning, plan, .. } => {
                out.push(caption.clone());
                if let Some(p) = plan {
                    out.push(format!("{PLAN_MARK} {p}"));
                }
                out.push(CHAT_PREFIX.to_string());
                for (q, a) in qa {
                    // A first turn follows the image, a later one an answer.
                    out.push(format!("{q}{CHAT_SUFFIX}"));
                    out.push(format!(" USER: {q}{CHAT_SUFFIX}"));
                    out.push(format!(" {a}"));
                }
                if let Some(r) = reasoning {
                    out.push(format!(" {}", world::reasoned_answer(r, "")));
                }
            }
            Record::Video { caption, .. } => out.push(caption.clone()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_questions_than_kinds_come_from_further_draws() {
        let scene = Scene::random_with(3, 4);
        let one_draw = world::scene_questions(&scene, 3).len();
        let many = image_questions(&scene, 3, 10);
        assert_eq!(many.len(), 10, "a four-object scene supports ten questions: {many:?}");
        let distinct: std::collections::BTreeSet<_> = many.iter().map(|q| &q.0).collect();
        assert_eq!(distinct.len(), 10, "{many:?}");
        // Up to one draw's worth, the questions are that draw's (shuffled): what four asked before.
        let few = image_questions(&scene, 3, one_draw);
        assert_eq!(few[..], many[..one_draw]);
        // Every answer is the truth about the scene.
        let views: Vec<world::ObjectView> = scene.objects.iter().map(Into::into).collect();
        for (q, a) in &many {
            assert_eq!(world::answer_question(q, &views).as_deref(), Some(a.as_str()), "{q}");
        }
        // A lone object runs out: one shape, one colour, three ways to count it.
        let lone = image_questions(&Scene::random_with(5, 1), 5, 10);
        assert_eq!(lone.len(), 5, "{lone:?}");
    }

    #[test]
    fn searching_answers_place_first_only_when_asked() {
        let answers = |place_first: bool| -> Vec<(String, String)> {
            let cfg = WorldData {
                images: 60,
                videos: 0,
                qa_per_image: 6,
                place_first,
                ..WorldData::default()
            };
            world_records(&cfg)
                .into_iter()
                .flat_map(|r| match r {
                    Record::Image { qa, .. } => qa,
                    Record::Video { .. } => panic!("images only"),
                })
                .collect()
        };
        let (plain, placed) = (answers(false), answers(true));
        assert_eq!(plain.len(), placed.len());
        let mut searched = [0; 3];
        for ((q, p), (q2, r)) in plain.iter().zip(&placed) {
            assert_eq!(q, q2);
            let searches = q.starts_with("is the ")
                || q.starts_with("what color is the ")
                || (q.starts_with("how many ") && q != "how many objects are there?");
            if searches {
                // "red circle top left, blue star bottom right: no", judged after the colon.
                assert!(r.ends_with(&format!(": {p}")) && r.len() > p.len() + 10, "{q} {r}");
                assert_eq!(world::metrics::normalize_answer(r), *p);
                let kind =
                    ["is the ", "how many ", "what color "].iter().position(|k| q.starts_with(k));
                searched[kind.expect("a searching question")] += 1;
            } else {
                assert_eq!(p, r, "{q}");
            }
        }
        assert!(searched.iter().all(|&n| n >= 10), "relations, counts, colours: {searched:?}");
    }

    #[test]
    fn world_questions_cover_every_kind() {
        let cfg = WorldData { images: 300, videos: 0, ..WorldData::default() };
        let mut kinds = std::collections::BTreeMap::new();
        for r in world_records(&cfg) {
            let Record::Image { qa, .. } = r else { panic!("images only") };
            // Up to qa_per_image questions (a lone object supports fewer), then the description.
            assert!((2..=cfg.qa_per_image + 1).contains(&qa.len()), "{qa:?}");
            assert_eq!(qa.last().map(|q| q.0.as_str()), Some(DESCRIBE));
            for (q, _) in &qa[..qa.len() - 1] {
                let kind = ["what color", "what shape", "how many", "is the"]
                    .iter()
                    .position(|p| q.starts_with(p))
                    .unwrap_or_else(|| panic!("unknown question form: {q}"));
                *kinds.entry(kind).or_insert(0usize) += 1;
            }
        }
        // Each of the four kinds gets a fair share of the ~600 questions (relations need two
        // distinct objects, so they are the rarest).
        assert_eq!(kinds.len(), 4, "{kinds:?}");
        assert!(kinds.values().all(|&n| n >= 60), "{kinds:?}");
    }

    #[test]
    fn world_fields_out_of_range_are_refused_by_name() {
        assert!(WorldData::default().validate().is_ok());
        let err = |w: WorldData| format!("{:#}", w.validate().unwrap_err());
        let e = err(WorldData { prompt_distractors: 4, ..WorldData::default() });
        assert!(e.contains("`prompt_distractors` is 4") && e.contains("at most 3"), "{e}");
        let e = err(WorldData { prompt_share: 1.5, ..WorldData::default() });
        assert!(e.contains("`prompt_share` is 1.5"), "{e}");
        let e = err(WorldData { complete_caption_share: -0.1, ..WorldData::default() });
        assert!(e.contains("`complete_caption_share` is -0.1"), "{e}");
    }

    #[test]
    fn complete_captions_name_every_object_of_their_random_scene() {
        // How many of 200 random scenes' captions leave a shape of their scene unnamed; every
        // caption must be true of its scene either way.
        let partial = |share: f64| -> usize {
            let cfg = WorldData {
                prompt_share: 0.0,
                complete_caption_share: share,
                ..Default::default()
            };
            (0..200)
                .filter(|&i| {
                    let (scene, caption) = world_image(&cfg, i);
                    let views: Vec<_> =
                        scene.objects.iter().map(world::parse::ObjectView::from).collect();
                    assert!(world::parse::text_holds(&caption, &views), "{caption:?} of {scene:?}");
                    let named = |o: &world::scene::Object| {
                        caption.contains(o.shape.name()) || caption.contains(o.shape.plural())
                    };
                    !scene.objects.iter().all(named)
                })
                .count()
        };
        assert_eq!(partial(1.0), 0);
        let (none, half) = (partial(0.0), partial(0.5));
        assert!(half < none && half > 0, "{half} of 200 partial at share 0.5, {none} at 0");
    }

    #[test]
    fn prompt_drawn_scenes_hold_what_their_caption_names_plus_the_distractors_allowed() {
        let objects = |most: usize| -> Vec<usize> {
            let cfg =
                WorldData { prompt_share: 1.0, prompt_distractors: most, ..Default::default() };
            (0..200).map(|i| world_image(&cfg, i).0.objects.len()).collect()
        };
        // Each scene's caption, its prompt, is true of it (geneval.rs checks it names everything).
        let cfg = WorldData { prompt_share: 1.0, ..Default::default() };
        for i in 0..200 {
            let (scene, caption) = world_image(&cfg, i);
            let views: Vec<_> = scene.objects.iter().map(world::parse::ObjectView::from).collect();
            assert!(world::parse::text_holds(&caption, &views), "{caption:?} of {scene:?}");
        }
        let (exact, loose) = (objects(0), objects(2));
        assert!(exact.iter().zip(&loose).all(|(e, l)| e <= l));
        assert!(exact.iter().sum::<usize>() < loose.iter().sum::<usize>());
    }

    #[test]
    fn the_bpe_learns_the_chat_template_it_will_see() {
        use emu_tokenizer::sequence::CHAT_PREFIX;
        let cfg = WorldData { images: 200, videos: 0, ..WorldData::default() };
        let bpe =
            emu_tokenizer::text::TextTokenizer::train_bpe(&corpus(&world_records(&cfg)), 512, &[])
                .unwrap();
        // One token per word and punctuation mark. Said once in the corpus, the template's 35
        // characters stayed 23 to 27 tokens.
        let prefix = bpe.encode(CHAT_PREFIX).unwrap();
        assert!(prefix.len() <= 9, "{CHAT_PREFIX:?} costs {} tokens", prefix.len());
        let turn = bpe.encode(" USER: what color is the circle. ASSISTANT:").unwrap();
        assert!(turn.len() <= 10, "a later turn costs {} tokens", turn.len());
    }

    #[test]
    fn plans_and_reasoning_are_the_scene_layout_and_the_bpe_learns_them() {
        let cfg =
            WorldData { images: 200, videos: 0, plan: true, reasoning: true, ..Default::default() };
        let recs = world_records(&cfg);
        for (i, r) in recs.iter().enumerate() {
            let Record::Image { plan, reasoning, .. } = r else { panic!("images only") };
            let (scene, _) = world_image(&cfg, i);
            assert_eq!(plan.as_deref(), Some(world::layout(&scene).as_str()));
            assert_eq!(reasoning, plan);
        }
        let bpe = emu_tokenizer::text::TextTokenizer::train_bpe(&corpus(&recs), 512, &[]).unwrap();
        // About a token a word: the plan is paid for in every text-to-image sample.
        let plan = ": red circle top left, blue star bottom right";
        let n = bpe.encode(plan).unwrap().len();
        assert!(n <= 10, "{plan:?} costs {n} tokens");
        let off = WorldData { images: 20, videos: 0, ..Default::default() };
        for r in world_records(&off) {
            let Record::Image { plan, reasoning, .. } = r else { panic!("images only") };
            assert_eq!((plan, reasoning), (None, None));
        }
    }
}
