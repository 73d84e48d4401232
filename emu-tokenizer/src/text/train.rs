//! Trains a GPT-2-style byte-level BPE for our own models with `tokenizers`' BpeTrainer.
//!
//! Specials are not handed to the trainer (it would number them first); the caller appends them
//! after the learned vocabulary. Their occurrences in the corpus are cut out before training so
//! that no merge learns pieces of them and their raw characters never enter the alphabet.

use std::collections::HashSet;

use anyhow::{Result, ensure};
use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::TrainerWrapper;
use tokenizers::models::bpe::{BPE, BpeTrainer};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::Tokenizer;

/// Every byte-level BPE starts from the 256 single bytes.
pub const MIN_VOCAB: usize = 256;

/// Learns a vocabulary of at most `vocab_size` tokens (the 256 bytes included, specials not).
pub fn train(corpus: &[String], vocab_size: usize, specials: &[String]) -> Result<Tokenizer> {
    ensure!(
        vocab_size >= MIN_VOCAB,
        "vocab_size {vocab_size} is below the {MIN_VOCAB} single-byte tokens a byte-level BPE \
         always has; specials come on top of vocab_size"
    );
    let mut tokenizer = Tokenizer::new(BPE::default());
    // No prefix space: " the" and "the" stay different tokens, as in GPT-2 and Qwen.
    tokenizer
        .with_pre_tokenizer(Some(ByteLevel::new(false, true, true)))
        .with_decoder(Some(DecoderWrapper::ByteLevel(ByteLevel::default())));
    let trainer = BpeTrainer::builder()
        .vocab_size(vocab_size)
        // A pair seen once is noise, not a pattern worth a vocabulary slot.
        .min_frequency(2)
        .show_progress(false)
        // All 256 bytes, even those absent from the corpus, so any text stays encodable.
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build();
    let mut trainer = TrainerWrapper::from(trainer);
    let cutter = SpecialCutter::new(specials);
    let pieces = corpus.iter().flat_map(|text| cutter.pieces(text));
    tokenizer
        .train(&mut trainer, pieces)
        .map_err(|e| anyhow::anyhow!("training the byte-level BPE: {e}"))?;
    Ok(tokenizer)
}

/// Splits text around special tokens, longest match first at the leftmost position (the rule
/// `tokenizers` applies when encoding), without building an automaton for tens of thousands of
/// specials: it probes each distinct special length at each position.
struct SpecialCutter<'a> {
    specials: HashSet<&'a str>,
    lengths: Vec<usize>,
}

impl<'a> SpecialCutter<'a> {
    fn new(specials: &'a [String]) -> Self {
        let specials: HashSet<&str> =
            specials.iter().map(String::as_str).filter(|s| !s.is_empty()).collect();
        let mut lengths: Vec<usize> = specials.iter().map(|s| s.len()).collect();
        lengths.sort_unstable_by(|a, b| b.cmp(a));
        lengths.dedup();
        Self { specials, lengths }
    }

    fn pieces<'t>(&self, text: &'t str) -> Vec<&'t str> {
        let mut pieces = Vec::new();
        let (mut start, mut at) = (0, 0);
        while at < text.len() {
            let hit = self.lengths.iter().find(|&&len| {
                text.get(at..at + len).is_some_and(|cand| self.specials.contains(cand))
            });
            match hit {
                Some(&len) => {
                    pieces.push(&text[start..at]);
                    at += len;
                    start = at;
                }
                None => at += text[at..].chars().next().map_or(1, char::len_utf8),
            }
        }
        pieces.push(&text[start..]);
        pieces.retain(|p| !p.is_empty());
        pieces
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cutter_takes_specials_out_longest_first() {
        let specials = ["<|a|>", "<|a|><|b|>", "é"].map(String::from);
        let cutter = SpecialCutter::new(&specials);
        assert_eq!(cutter.pieces("x<|a|><|b|>y<|a|>zéw"), ["x", "y", "z", "w"]);
        assert_eq!(cutter.pieces("<|a|>"), Vec::<&str>::new());
        assert_eq!(cutter.pieces("plain 中文"), ["plain 中文"]);
        assert_eq!(SpecialCutter::new(&[]).pieces("a<|a|>"), ["a<|a|>"]);
    }

    #[test]
    fn too_small_vocab_is_refused() {
        let err = train(&["a b".into()], 100, &[]).unwrap_err().to_string();
        assert!(err.contains("256"), "{err}");
    }
}
