//! The multimodal sequence format of the reference, and the prompt and training-sample builders.
//!
//! An image of h×w codes is one block:
//! `<|image start|>` + meta `"h*w"` (as text) + `<|image token|>` + h rows of (w codes, EOL) + EOF +
//! `<|image end|>`. A video of t latent frames repeats the rows-then-EOF part per frame, and its
//! meta also carries the frame count and fps: `"h*w*t Nfps"`. Text-to-image prompts are
//! `BOS caption <image start> meta <image token>`; understanding prompts follow Emu3-Chat's
//! template `"You are a helpful assistant. USER: {image}{question}. ASSISTANT:"`.
//!
//! Shapes: h/w code grid, t latent frames; codes are row-major.

use crate::vocab::VocabLayout;
use anyhow::{Result, bail, ensure};

/// Anything that turns text into token ids (the text tokenizer; a stub in tests).
pub trait EncodeText {
    fn encode_text(&self, text: &str) -> Result<Vec<i64>>;
}

impl EncodeText for crate::text::TextTokenizer {
    fn encode_text(&self, text: &str) -> Result<Vec<i64>> {
        Ok(self.encode(text)?.into_iter().map(i64::from).collect())
    }
}

/// Opens a plan: text a model trained with plans writes between the caption and the image it
/// draws (`caption ": " plan <image start> ...`), then draws from caption and plan together.
pub const PLAN_MARK: &str = ":";

/// Emu3-Chat's system prefix.
pub const CHAT_PREFIX: &str = "You are a helpful assistant. USER: ";
pub const CHAT_SUFFIX: &str = ". ASSISTANT:";

/// How the later turns of a multi-turn chat sample are laid out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TurnLayout {
    /// Emu3-Chat's conversation: each later turn is `" USER: {question}. ASSISTANT: {answer}"
    /// EOS` and sees every turn before it.
    #[default]
    Continued,
    /// Each later turn is `"{question}. ASSISTANT: {answer}" EOS`, the first turn's own form after
    /// the image, to be trained as if asked alone: with a turn mask (`emu_model::Packing::turns`,
    /// the image's EOI ending the prefix and EOS each turn) it sees only the prompt up to the
    /// image and itself. Earlier answers then cannot give later ones away.
    Alone,
}

/// How a training sample's loss is weighted.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Weighting {
    /// Pretraining: every token, vision tokens (codes, EOL, EOF) at `vision`.
    Full { vision: f32 },
    /// Generation SFT: only what generation writes, the visual code tokens and a plan before
    /// them (see [`PLAN_MARK`]).
    VisionOnly,
    /// Chat SFT: only the answer text (and EOS).
    TextOnly,
}

/// What a token is, for weighting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Prompt text, specials and image framing.
    Context,
    /// Visual code tokens.
    Code,
    /// EOL/EOF inside an image block.
    Structure,
    /// Answer or caption text the model should produce, and the final EOS.
    Target,
    /// A plan between caption and image, and the image start that ends it: text that generation
    /// writes, so it trains with the codes.
    Plan,
}

impl Role {
    pub fn to_u8(self) -> u8 {
        match self {
            Role::Context => 0,
            Role::Code => 1,
            Role::Structure => 2,
            Role::Target => 3,
            Role::Plan => 4,
        }
    }

    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => Role::Context,
            1 => Role::Code,
            2 => Role::Structure,
            3 => Role::Target,
            4 => Role::Plan,
            _ => return None,
        })
    }
}

/// A token sequence with a role per token; weights follow from the roles.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sample {
    pub ids: Vec<i64>,
    pub roles: Vec<Role>,
}

impl Sample {
    pub fn push(&mut self, ids: &[i64], role: Role) {
        self.ids.extend_from_slice(ids);
        self.roles.extend(std::iter::repeat_n(role, ids.len()));
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Per-token loss weights under `w`.
    pub fn weights(&self, w: Weighting) -> Vec<f32> {
        self.roles
            .iter()
            .map(|r| match (w, r) {
                (Weighting::Full { vision }, Role::Code | Role::Structure) => vision,
                (Weighting::Full { .. }, _) => 1.0,
                (Weighting::VisionOnly, Role::Code | Role::Plan) => 1.0,
                (Weighting::VisionOnly, _) => 0.0,
                (Weighting::TextOnly, Role::Target) => 1.0,
                (Weighting::TextOnly, _) => 0.0,
            })
            .collect()
    }
}

/// The reference's `calculate_generate_size`: a `"W:H"` ratio and a pixel area to a code grid
/// (rows, cols), with Python's half-to-even rounding.
pub fn generate_size(ratio: &str, image_area: i64, spatial_factor: i64) -> Result<(i64, i64)> {
    let parse = |s: &str| s.trim().parse::<i64>().ok().filter(|v| *v > 0);
    let Some((w, h)) = ratio.split_once(':').and_then(|(w, h)| Some((parse(w)?, parse(h)?))) else {
        bail!("ratio `{ratio}` is not of the form W:H with positive integers (e.g. 1:1 or 16:9)");
    };
    let target = (image_area as f64 / (h * w) as f64).sqrt();
    let th = (h as f64 * target / spatial_factor as f64).round_ties_even() as i64;
    let tw = (w as f64 * target / spatial_factor as f64).round_ties_even() as i64;
    ensure!(
        th > 0 && tw > 0,
        "ratio {ratio} with image area {image_area} gives an empty {th}x{tw} grid"
    );
    Ok((th, tw))
}

/// Builds sequences for one vocabulary layout and text tokenizer.
pub struct SequenceFormat<'a, E: EncodeText> {
    pub vocab: &'a VocabLayout,
    pub text: &'a E,
}

impl<'a, E: EncodeText> SequenceFormat<'a, E> {
    pub fn new(vocab: &'a VocabLayout, text: &'a E) -> Self {
        SequenceFormat { vocab, text }
    }

    fn header(&self, meta: &str) -> Result<Vec<i64>> {
        let s = &self.vocab.special;
        let mut v = vec![s.boi];
        v.extend(self.text.encode_text(meta)?);
        v.push(s.img);
        Ok(v)
    }

    /// `<image start> "h*w" <image token>`.
    pub fn image_header(&self, h: i64, w: i64) -> Result<Vec<i64>> {
        self.header(&format!("{h}*{w}"))
    }

    /// `<image start> "h*w*t Nfps" <image token>`.
    pub fn video_header(&self, h: i64, w: i64, t: i64, fps: i64) -> Result<Vec<i64>> {
        self.header(&format!("{h}*{w}*{t} {fps}fps"))
    }

    /// One frame's rows, each ending in EOL, then EOF.
    fn frame(&self, out: &mut Sample, codes: &[i64], h: i64, w: i64) {
        assert_eq!(
            codes.len() as i64,
            h * w,
            "a frame of {h}x{w} needs {} codes, got {}",
            h * w,
            codes.len()
        );
        let s = &self.vocab.special;
        for row in codes.chunks(w as usize) {
            let ids: Vec<i64> = row.iter().map(|&c| self.vocab.code_to_token(c)).collect();
            out.push(&ids, Role::Code);
            out.push(&[s.eol], Role::Structure);
        }
        out.push(&[s.eof], Role::Structure);
    }

    /// A whole image block.
    pub fn image_block(&self, codes: &[i64], h: i64, w: i64) -> Result<Sample> {
        let mut out = Sample::default();
        out.push(&self.image_header(h, w)?, Role::Context);
        self.frame(&mut out, codes, h, w);
        out.push(&[self.vocab.special.eoi], Role::Context);
        Ok(out)
    }

    /// A whole video block; `frames` holds t frames of h·w codes.
    pub fn video_block(&self, frames: &[Vec<i64>], h: i64, w: i64, fps: i64) -> Result<Sample> {
        let mut out = Sample::default();
        out.push(&self.video_header(h, w, frames.len() as i64, fps)?, Role::Context);
        for f in frames {
            self.frame(&mut out, f, h, w);
        }
        out.push(&[self.vocab.special.eoi], Role::Context);
        Ok(out)
    }

    fn text(&self, s: &str) -> Result<Vec<i64>> {
        self.text.encode_text(s)
    }

    /// Text-to-image prompt: `BOS caption <image start> "h*w" <image token>`.
    pub fn t2i_prompt(&self, caption: &str, h: i64, w: i64) -> Result<Vec<i64>> {
        let mut v = vec![self.vocab.special.bos];
        v.extend(self.text(caption)?);
        v.extend(self.image_header(h, w)?);
        Ok(v)
    }

    /// What a planning model writes its plan after: `BOS caption`.
    pub fn plan_prompt(&self, caption: &str) -> Result<Vec<i64>> {
        let mut v = vec![self.vocab.special.bos];
        v.extend(self.text(caption)?);
        Ok(v)
    }

    /// Text-to-image prompt after a written plan (its tokens as generated, [`PLAN_MARK`] first,
    /// without the image start that ended it): `BOS caption plan <image start> "h*w" <image
    /// token>`.
    pub fn t2i_prompt_planned(
        &self,
        caption: &str,
        plan: &[i64],
        h: i64,
        w: i64,
    ) -> Result<Vec<i64>> {
        let mut v = self.plan_prompt(caption)?;
        v.extend_from_slice(plan);
        v.extend(self.image_header(h, w)?);
        Ok(v)
    }

    /// Text-to-video prompt.
    pub fn t2v_prompt(&self, caption: &str, h: i64, w: i64, t: i64, fps: i64) -> Result<Vec<i64>> {
        let mut v = vec![self.vocab.special.bos];
        v.extend(self.text(caption)?);
        v.extend(self.video_header(h, w, t, fps)?);
        Ok(v)
    }

    /// Video continuation: the t2v prompt followed by the given first frames; the model writes
    /// the remaining `t - first.len()` frames.
    pub fn continuation_prompt(
        &self,
        caption: &str,
        first: &[Vec<i64>],
        h: i64,
        w: i64,
        t: i64,
        fps: i64,
    ) -> Result<Vec<i64>> {
        ensure!(
            (first.len() as i64) < t,
            "continuation needs fewer given frames ({}) than total frames ({t})",
            first.len()
        );
        let mut s = Sample { ids: self.t2v_prompt(caption, h, w, t, fps)?, roles: vec![] };
        s.roles = vec![Role::Context; s.ids.len()];
        for f in first {
            self.frame(&mut s, f, h, w);
        }
        Ok(s.ids)
    }

    /// Understanding prompt in Emu3-Chat's template, ending at `ASSISTANT:`.
    pub fn chat_prompt(&self, codes: &[i64], h: i64, w: i64, question: &str) -> Result<Sample> {
        let mut out = Sample::default();
        out.push(&[self.vocab.special.bos], Role::Context);
        out.push(&self.text(CHAT_PREFIX)?, Role::Context);
        let img = self.image_block(codes, h, w)?;
        out.ids.extend(img.ids);
        out.roles.extend(img.roles);
        out.push(&self.text(&format!("{question}{CHAT_SUFFIX}"))?, Role::Context);
        Ok(out)
    }

    /// Training sample for generation: `BOS caption <image block> EOS`. Pass `""` as the caption to
    /// train the unconditional (CFG) stream.
    pub fn t2i_sample(&self, caption: &str, codes: &[i64], h: i64, w: i64) -> Result<Sample> {
        self.t2i(caption, None, codes, h, w)
    }

    /// Training sample for planned generation: `BOS caption ": " plan <image block> EOS`, the
    /// plan and the image start that ends it trained as [`Role::Plan`].
    pub fn t2i_planned_sample(
        &self,
        caption: &str,
        plan: &str,
        codes: &[i64],
        h: i64,
        w: i64,
    ) -> Result<Sample> {
        self.t2i(caption, Some(plan), codes, h, w)
    }

    fn t2i(
        &self,
        caption: &str,
        plan: Option<&str>,
        codes: &[i64],
        h: i64,
        w: i64,
    ) -> Result<Sample> {
        let mut out = Sample::default();
        out.push(&[self.vocab.special.bos], Role::Context);
        out.push(&self.text(caption)?, Role::Target);
        if let Some(plan) = plan {
            out.push(&self.text(&format!("{PLAN_MARK} {plan}"))?, Role::Plan);
        }
        let start = out.len();
        let img = self.image_block(codes, h, w)?;
        out.ids.extend(img.ids);
        out.roles.extend(img.roles);
        if plan.is_some() {
            debug_assert_eq!(
                out.ids[start], self.vocab.special.boi,
                "an image block opens with BOI"
            );
            out.roles[start] = Role::Plan;
        }
        out.push(&[self.vocab.special.eos], Role::Context);
        Ok(out)
    }

    /// Training sample for video generation: `BOS caption <video block> EOS`.
    pub fn t2v_sample(
        &self,
        caption: &str,
        frames: &[Vec<i64>],
        h: i64,
        w: i64,
        fps: i64,
    ) -> Result<Sample> {
        let mut out = Sample::default();
        out.push(&[self.vocab.special.bos], Role::Context);
        out.push(&self.text(caption)?, Role::Target);
        let v = self.video_block(frames, h, w, fps)?;
        out.ids.extend(v.ids);
        out.roles.extend(v.roles);
        out.push(&[self.vocab.special.eos], Role::Context);
        Ok(out)
    }

    /// Training sample for understanding: the chat prompt, then `answer EOS` as the target.
    pub fn chat_sample(
        &self,
        codes: &[i64],
        h: i64,
        w: i64,
        question: &str,
        answer: &str,
    ) -> Result<Sample> {
        let turn = [(question.to_string(), answer.to_string())];
        self.chat_turns_sample(codes, h, w, &turn, TurnLayout::Continued)
    }

    /// Several question/answer turns about one image, which then appears once: the first turn is
    /// exactly [`Self::chat_sample`]'s, each later one follows the previous answer's EOS as
    /// `layout` says.
    pub fn chat_turns_sample(
        &self,
        codes: &[i64],
        h: i64,
        w: i64,
        turns: &[(String, String)],
        layout: TurnLayout,
    ) -> Result<Sample> {
        let Some((first, _)) = turns.first() else {
            bail!("a chat sample needs at least one question/answer turn");
        };
        let mut out = self.chat_prompt(codes, h, w, first)?;
        for (i, (question, answer)) in turns.iter().enumerate() {
            if i > 0 {
                let asked = match layout {
                    TurnLayout::Continued => format!(" USER: {question}{CHAT_SUFFIX}"),
                    TurnLayout::Alone => format!("{question}{CHAT_SUFFIX}"),
                };
                out.push(&self.text(&asked)?, Role::Context);
            }
            out.push(&self.text(&format!(" {answer}"))?, Role::Target);
            out.push(&[self.vocab.special.eos], Role::Target);
        }
        Ok(out)
    }
}

/// The caption, or the empty prompt with probability `p` (`u` uniform in [0,1) from the caller's
/// RNG), so one model learns both CFG streams.
pub fn cfg_dropout(caption: &str, p: f64, u: f64) -> &str {
    if u < p { "" } else { caption }
}

/// Reads back the codes of a generated image or video body (the tokens after `<image token>`):
/// `frames` frames of h rows of w codes, each row ending in EOL and each frame in EOF.
pub fn parse_grid(
    vocab: &VocabLayout,
    tokens: &[i64],
    h: i64,
    w: i64,
    frames: i64,
) -> Result<Vec<Vec<i64>>> {
    let s = &vocab.special;
    let per_frame = (h * (w + 1) + 1) as usize;
    ensure!(
        tokens.len() >= per_frame * frames as usize,
        "a {frames}-frame {h}x{w} grid needs {} tokens, got {}",
        per_frame * frames as usize,
        tokens.len()
    );
    let mut out = Vec::with_capacity(frames as usize);
    for f in 0..frames as usize {
        let body = &tokens[f * per_frame..(f + 1) * per_frame];
        let mut codes = Vec::with_capacity((h * w) as usize);
        for r in 0..h as usize {
            let row = &body[r * (w as usize + 1)..(r + 1) * (w as usize + 1)];
            ensure!(row[w as usize] == s.eol, "frame {f} row {r} does not end in EOL");
            for &t in &row[..w as usize] {
                codes.push(vocab.token_to_code(t).ok_or_else(|| {
                    anyhow::anyhow!("frame {f} row {r}: token {t} is not a visual code")
                })?);
            }
        }
        ensure!(body[per_frame - 1] == s.eof, "frame {f} does not end in EOF");
        out.push(codes);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::SpecialIds;

    /// One token per character, id = byte value.
    struct Bytes;
    impl EncodeText for Bytes {
        fn encode_text(&self, t: &str) -> Result<Vec<i64>> {
            Ok(t.bytes().map(i64::from).collect())
        }
    }

    fn vocab() -> VocabLayout {
        let s = SpecialIds {
            bos: 300,
            eos: 301,
            pad: 302,
            eol: 303,
            eof: 304,
            img: 305,
            boi: 306,
            eoi: 307,
        };
        VocabLayout { special: s, visual_base: 400, codebook_size: 64, vocab_size: 464 }
    }

    #[test]
    fn a_planned_sample_is_its_prompt_after_the_written_plan_then_the_image() {
        let v = vocab();
        let fmt = SequenceFormat::new(&v, &Bytes);
        let codes: Vec<i64> = (0..4).collect();
        let s = fmt.t2i_planned_sample("two stars", "red star top left", &codes, 2, 2).unwrap();
        let plan = Bytes.encode_text(": red star top left").unwrap();
        let start = fmt.plan_prompt("two stars").unwrap().len();
        assert_eq!(s.ids[start..start + plan.len()], plan[..]);
        // What generation writes is trained with the codes: the plan and the image start.
        let w = s.weights(Weighting::VisionOnly);
        let trained: Vec<i64> =
            s.ids.iter().zip(&w).filter(|(_, w)| **w > 0.0).map(|(i, _)| *i).collect();
        let expect: Vec<i64> = plan
            .iter()
            .copied()
            .chain([v.special.boi])
            .chain(codes.iter().map(|&c| v.code_to_token(c)))
            .collect();
        assert_eq!(trained, expect);
        assert!(
            s.weights(Weighting::TextOnly)[start..start + plan.len()].iter().all(|&w| w == 0.0)
        );
        // Generation then draws from the prompt the written plan makes: the sample's prefix.
        let prompt = fmt.t2i_prompt_planned("two stars", &plan, 2, 2).unwrap();
        assert_eq!(s.ids[..prompt.len()], prompt[..]);
        assert_eq!(Role::from_u8(Role::Plan.to_u8()), Some(Role::Plan));
    }

    #[test]
    fn the_references_sanity_case() {
        // image_area 1600 at 1:1 gives 5x5; a 21-token prompt ends at 54 tokens; 40x40 pixels.
        assert_eq!(generate_size("1:1", 1600, 8).unwrap(), (5, 5));
        let v = vocab();
        let fmt = SequenceFormat::new(&v, &Bytes);
        let prompt = fmt.t2i_prompt("three red stars", 5, 5).unwrap();
        assert_eq!(prompt.len(), 21);
        let codes: Vec<i64> = (0..25).collect();
        let img = fmt.image_block(&codes, 5, 5).unwrap();
        // prompt + rows (5 * 6) + EOF + EOI + EOS
        let total = prompt.len() + 5 * 6 + 1 + 1 + 1;
        assert_eq!(total, 54);
        assert_eq!(img.ids.len(), 5 + 30 + 1 + 1);
        assert_eq!(5 * 8, 40);
        assert_eq!(generate_size("16:9", 720 * 720, 8).unwrap(), (68, 120));
        assert!(generate_size("16x9", 1600, 8).is_err());
    }

    #[test]
    fn image_blocks_parse_back_and_weights_follow_roles() {
        let v = vocab();
        let fmt = SequenceFormat::new(&v, &Bytes);
        let codes: Vec<i64> = (0..6).map(|k| k * 7 % 64).collect();
        let s = fmt.t2i_sample("ab", &codes, 2, 3).unwrap();
        let img_at = s.ids.iter().position(|&t| t == v.special.img).unwrap();
        let grid = parse_grid(&v, &s.ids[img_at + 1..], 2, 3, 1).unwrap();
        assert_eq!(grid, vec![codes.clone()]);
        let full = s.weights(Weighting::Full { vision: 0.5 });
        assert_eq!(full.iter().filter(|&&w| w == 0.5).count(), 6 + 2 + 1);
        let vis = s.weights(Weighting::VisionOnly);
        assert_eq!(vis.iter().sum::<f32>(), 6.0);
        let chat = fmt.chat_sample(&codes, 2, 3, "what", "red").unwrap();
        let text = chat.weights(Weighting::TextOnly);
        assert_eq!(text.iter().sum::<f32>(), 4.0 + 1.0, "\" red\" and EOS");
        assert_eq!(*chat.ids.last().unwrap(), v.special.eos);
        // Two turns: the first is the one-turn sample; the second adds its own answer and EOS.
        let turns =
            [("what".to_string(), "red".to_string()), ("how".to_string(), "two".to_string())];
        let two = fmt.chat_turns_sample(&codes, 2, 3, &turns, TurnLayout::Continued).unwrap();
        assert_eq!(two.ids[..chat.len()], chat.ids[..]);
        let mut rest: Vec<i64> =
            format!(" USER: how{CHAT_SUFFIX} two").bytes().map(i64::from).collect();
        rest.push(v.special.eos);
        assert_eq!(two.ids[chat.len()..], rest[..]);
        assert_eq!(two.weights(Weighting::TextOnly).iter().sum::<f32>(), 2.0 * (4.0 + 1.0));
        assert_eq!(two.ids.iter().filter(|&&t| t == v.special.img).count(), 1, "one image");
        // Laid out alone, the second turn is asked as the first was, right after the image.
        let alone = fmt.chat_turns_sample(&codes, 2, 3, &turns, TurnLayout::Alone).unwrap();
        let first_question = chat.ids.len() - " red".len() - 1 - format!("what{CHAT_SUFFIX}").len();
        let mut second = chat.ids[..first_question].to_vec();
        second.extend(format!("how{CHAT_SUFFIX} two").bytes().map(i64::from));
        second.push(v.special.eos);
        assert_eq!(alone.ids[..chat.len()], chat.ids[..]);
        assert_eq!(alone.ids[chat.len()..], second[first_question..]);
        assert_eq!(alone.weights(Weighting::TextOnly).iter().sum::<f32>(), 2.0 * (4.0 + 1.0));
        let err = fmt.chat_turns_sample(&codes, 2, 3, &[], TurnLayout::Continued).unwrap_err();
        assert!(err.to_string().contains("at least one"), "{err}");
        let mut broken = s.ids[img_at + 1..].to_vec();
        broken[3] = 5;
        assert!(format!("{:#}", parse_grid(&v, &broken, 2, 3, 1).unwrap_err()).contains("EOL"));
    }

    #[test]
    fn videos_carry_frames_and_fps_and_continuations_extend_prompts() {
        let v = vocab();
        let fmt = SequenceFormat::new(&v, &Bytes);
        let frames: Vec<Vec<i64>> = (0..3).map(|f| vec![f, f + 1, f + 2, f + 3]).collect();
        let s = fmt.video_block(&frames, 2, 2, 8).unwrap();
        let meta: String = s.ids[1..]
            .iter()
            .take_while(|&&t| t != v.special.img)
            .map(|&t| t as u8 as char)
            .collect();
        assert_eq!(meta, "2*2*3 8fps");
        let img_at = s.ids.iter().position(|&t| t == v.special.img).unwrap();
        assert_eq!(parse_grid(&v, &s.ids[img_at + 1..], 2, 2, 3).unwrap(), frames);
        let p = fmt.continuation_prompt("x", &frames[..1], 2, 2, 3, 8).unwrap();
        assert_eq!(p.len(), fmt.t2v_prompt("x", 2, 2, 3, 8).unwrap().len() + 2 * 3 + 1);
        assert_eq!(cfg_dropout("cap", 0.1, 0.05), "");
        assert_eq!(cfg_dropout("cap", 0.1, 0.5), "cap");
    }
}
