//! Pre-tokenisation: records -> VQ codes (in batches) -> token sequences (in parallel) -> shards.
//!
//! Every image yields a text-to-image sample (its caption replaced by the empty prompt with
//! probability `cfg_dropout`, so the same model learns the unconditional stream for CFG) and
//! understanding samples: its questions in groups of up to `qa_turns` turns, then the description
//! alone; every video yields a text-to-video sample.
//!
//! Shapes: B records per VQ batch, T frames, H/W pixels, h/w code grid.

use super::records::{DESCRIBE, Record};
use super::shards::{Index, ShardWriter, Task};
use anyhow::Result;
use emu_tokenizer::image::to_tensor;
use emu_tokenizer::sequence::{Sample, SequenceFormat, TurnLayout};
use emu_tokenizer::text::TextTokenizer;
use emu_tokenizer::vocab::VocabLayout;
use emu_tokenizer::vq::VqModel;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::path::Path;
use tch::{Device, Tensor};

#[derive(Clone, Debug)]
pub struct TokenizeOptions {
    pub cfg_dropout: f64,
    pub seed: u64,
    pub per_shard: usize,
    /// Records per VQ forward pass.
    pub batch: usize,
    /// Most question/answer turns that share one understanding sample (and so one copy of the
    /// image); 1 gives one sample per question. The description is always a sample of its own,
    /// since its answer would give away the other answers.
    pub qa_turns: usize,
    /// How a sample's later turns are laid out (recorded in the token index, which the training
    /// loop reads to mask them to match).
    pub turn_layout: TurnLayout,
    /// Ask for the description as the last turn of an image's last chat sample instead of in a
    /// sample of its own: one copy of the image fewer per image. Coming last, its answer gives
    /// none of the others away.
    pub describe_last: bool,
}

impl Default for TokenizeOptions {
    fn default() -> Self {
        TokenizeOptions {
            cfg_dropout: 0.1,
            seed: 0,
            per_shard: 4096,
            batch: 32,
            qa_turns: 1,
            turn_layout: TurnLayout::Continued,
            describe_last: false,
        }
    }
}

impl TokenizeOptions {
    /// Refuses options no record could be tokenized with.
    pub fn validate(&self) -> Result<()> {
        anyhow::ensure!(
            self.qa_turns >= 1,
            "qa_turns is 0; expected at least 1 turn per chat sample"
        );
        Ok(())
    }
}

/// Codes of one record: one frame for images, T' for videos; each row-major h·w.
fn encode_batch(vq: &VqModel, batch: &[&Record]) -> Result<Vec<Vec<Vec<i64>>>> {
    let images: Vec<Tensor> = batch
        .par_iter()
        .filter_map(|r| match r {
            Record::Image { image, .. } => Some(to_tensor(image)),
            Record::Video { .. } => None,
        })
        .collect();
    let videos: Vec<Tensor> = batch
        .par_iter()
        .filter_map(|r| match r {
            Record::Video { frames, .. } => {
                Some(Tensor::stack(&frames.iter().map(to_tensor).collect::<Vec<_>>(), 0))
            }
            Record::Image { .. } => None,
        })
        .collect();
    let to_rows = |c: Tensor| -> Result<Vec<Vec<i64>>> {
        let c = c.to_device(Device::Cpu);
        (0..c.size()[0]).map(|i| Ok(Vec::<i64>::try_from(c.get(i).flatten(0, -1))?)).collect()
    };
    let mut img = if images.is_empty() {
        vec![]
    } else {
        to_rows(vq.encode_images(&Tensor::stack(&images, 0).to_device(vq.device())))?
    }
    .into_iter();
    let mut vid: Vec<Vec<Vec<i64>>> = Vec::new();
    if !videos.is_empty() {
        let c = vq
            .encode_video(&Tensor::stack(&videos, 0).to_device(vq.device()))?
            .to_device(Device::Cpu);
        for i in 0..c.size()[0] {
            vid.push(to_rows(c.get(i))?);
        }
    }
    let mut vid = vid.into_iter();
    Ok(batch
        .iter()
        .map(|r| match r {
            Record::Image { .. } => vec![img.next().expect("one code grid per image")],
            Record::Video { .. } => vid.next().expect("one code clip per video"),
        })
        .collect())
}

/// A chat sample's turns with the record's reasoning stated before the answers that cannot see
/// it already: the first turn's, and with [`TurnLayout::Alone`] every turn's, since each then
/// sees only itself.
fn reason_first(
    mut turns: Vec<(String, String)>,
    reasoning: Option<&str>,
    layout: TurnLayout,
) -> Vec<(String, String)> {
    let Some(r) = reasoning else { return turns };
    let reasoned = match layout {
        TurnLayout::Continued => 1,
        TurnLayout::Alone => turns.len(),
    };
    for (_, answer) in turns.iter_mut().take(reasoned) {
        *answer = emu_eval::world::reasoned_answer(r, answer);
    }
    turns
}

/// The samples of one record.
fn samples(
    fmt: &SequenceFormat<'_, TextTokenizer>,
    r: &Record,
    codes: &[Vec<i64>],
    grid: (i64, i64),
    rng: &mut ChaCha8Rng,
    opts: &TokenizeOptions,
) -> Result<Vec<(Sample, Task)>> {
    let (h, w) = grid;
    let p = opts.cfg_dropout;
    Ok(match r {
        Record::Image { caption, qa, reasoning, plan, .. } => {
            let cap = emu_tokenizer::sequence::cfg_dropout(caption, p, rng.random());
            // The unconditional stream drops the plan with the caption: guidance contrasts the
            // image under both with the image under neither.
            let t2i = match plan {
                Some(plan) if !cap.is_empty() => {
                    fmt.t2i_planned_sample(cap, plan, &codes[0], h, w)?
                }
                _ => fmt.t2i_sample(cap, &codes[0], h, w)?,
            };
            let mut v = vec![(t2i, Task::TextToImage)];
            let (describe, questions): (Vec<_>, Vec<_>) =
                qa.iter().cloned().partition(|(q, _)| q == DESCRIBE);
            let mut chats: Vec<Vec<(String, String)>> = questions
                .chunks(opts.qa_turns)
                .map(|turns| reason_first(turns.to_vec(), reasoning.as_deref(), opts.turn_layout))
                .collect();
            match chats.last_mut() {
                Some(last) if opts.describe_last => last.extend(describe),
                _ => chats.extend(describe.chunks(1).map(<[_]>::to_vec)),
            }
            for turns in chats {
                let sample = fmt.chat_turns_sample(&codes[0], h, w, &turns, opts.turn_layout)?;
                v.push((sample, Task::Understanding));
            }
            v
        }
        Record::Video { caption, fps, .. } => {
            let cap = emu_tokenizer::sequence::cfg_dropout(caption, p, rng.random());
            vec![(fmt.t2v_sample(cap, codes, h, w, *fps)?, Task::TextToVideo)]
        }
    })
}

/// Tokenizes `records` into shards under `out`.
pub fn tokenize(
    records: &[Record],
    vq: &VqModel,
    text: &TextTokenizer,
    vocab: &VocabLayout,
    out: &Path,
    opts: &TokenizeOptions,
) -> Result<Index> {
    opts.validate()?;
    let fmt = SequenceFormat::new(vocab, text);
    let f = vq.config.spatial_factor() as u32;
    let reasoning = records.iter().any(|r| matches!(r, Record::Image { reasoning: Some(_), .. }));
    let mut writer = ShardWriter::new(out, opts.per_shard)?
        .with_turn_layout(opts.turn_layout)
        .with_reasoning(reasoning);
    let refs: Vec<&Record> = records.iter().collect();
    for (b, chunk) in refs.chunks(opts.batch.max(1)).enumerate() {
        let codes = encode_batch(vq, chunk)?;
        let built: Vec<Result<Vec<(Sample, Task)>>> = chunk
            .par_iter()
            .zip(&codes)
            .enumerate()
            .map(|(i, (r, c))| {
                let (hh, ww) = match r {
                    Record::Image { image, .. } => (image.height(), image.width()),
                    Record::Video { frames, .. } => (frames[0].height(), frames[0].width()),
                };
                let mut rng = ChaCha8Rng::seed_from_u64(
                    opts.seed.wrapping_mul(1_000_003).wrapping_add((b * opts.batch + i) as u64),
                );
                samples(&fmt, r, c, ((hh / f) as i64, (ww / f) as i64), &mut rng, opts)
            })
            .collect();
        for s in built {
            match s {
                Ok(v) => {
                    for (sample, task) in v {
                        writer.push(sample, task)?;
                    }
                }
                Err(e) => {
                    eprintln!("skipping a record: {e:#}");
                    writer.skip();
                }
            }
        }
    }
    writer.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasoning_opens_the_answers_that_cannot_see_it() {
        let turns = || vec![("q1".to_string(), "a1".to_string()), ("q2".into(), "a2".into())];
        let answers = |t: Vec<(String, String)>| t.into_iter().map(|(_, a)| a).collect::<Vec<_>>();
        assert_eq!(answers(reason_first(turns(), None, TurnLayout::Continued)), ["a1", "a2"]);
        assert_eq!(
            answers(reason_first(turns(), Some("red circle top left"), TurnLayout::Continued)),
            ["red circle top left: a1", "a2"]
        );
        assert_eq!(
            answers(reason_first(turns(), Some("red circle top left"), TurnLayout::Alone)),
            ["red circle top left: a1", "red circle top left: a2"]
        );
    }
}
