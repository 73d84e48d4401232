//! Trains a GPT-2-style byte-level BPE for our own models with `tokenizers`' BpeTrainer.
//!
//! Specials are not handed to the trainer (it would number them first); the caller appends them
//! after the learned vocabulary. Their occurrences in the corpus are cut out before training so
//! that no merge learns pieces of them and their raw characters never enter the alphabet.

use std::collections::HashSet;

use anyhow::{Result, ensure};
use tokenizers::Tokenizer;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::TrainerWrapper;
use tokenizers::models::bpe::{BPE, BpeTrainer};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;

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
    use crate::text::TextTokenizer;
    use tokenizers::Model;

    const SPECIALS: [&str; 3] = ["<|image start|>", "<|image token|>", "<|image end|>"];

    fn corpus() -> Vec<String> {
        let lines = [
            "A picture of the cat on the mat. The cat sleeps in the picture.",
            "Generate a picture of the sea at night; the sea is calm and the night is dark.",
            "<|image start|>4*4<|image token|><|image end|> the picture ends here.",
            "Numbers like 2024 and 3.14 appear in the text, with unicode: café, 中文, 🙂.",
            "def picture(x):\n    return the(x)  # the picture of x\n",
        ];
        (0..20).flat_map(|_| lines.map(String::from)).collect()
    }

    fn trained() -> TextTokenizer {
        let specials = SPECIALS.map(String::from);
        TextTokenizer::train_bpe(&corpus(), 400, &specials).unwrap()
    }

    /// Deterministic pseudo-random strings over a mixed alphabet (no RNG crate needed).
    fn random_texts(n: usize) -> Vec<String> {
        let pool: Vec<char> =
            "ab xyZ09\n\t\r.,'!?<>|*éüß中文🙂\u{301}\u{0}\u{7f}\u{a0}\u{10FFFF}".chars().collect();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        (0..n)
            .map(|_| {
                let len = (next() % 30) as usize;
                (0..len).map(|_| pool[(next() % pool.len() as u64) as usize]).collect()
            })
            .collect()
    }

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
    fn encode_decode_round_trips() {
        let tok = trained();
        let mut texts = random_texts(500);
        texts.extend(corpus().into_iter().take(5));
        texts.extend(
            ["", " ", "  leading", "trailing  ", "\n\n", "e\u{301} vs é", "👩‍👩‍👧"].map(String::from),
        );
        for text in &texts {
            let ids = tok.encode(text).unwrap();
            assert_eq!(&tok.decode(&ids, false).unwrap(), text, "{ids:?}");
        }
    }

    #[test]
    fn specials_follow_the_learned_vocabulary_and_stay_whole() {
        let tok = trained();
        let learned = tok.inner().get_model().get_vocab_size() as u32;
        assert!(learned > MIN_VOCAB as u32 && learned <= 400);
        let ids: Vec<u32> = SPECIALS.iter().map(|s| tok.token_to_id(s).unwrap()).collect();
        assert_eq!(ids, [learned, learned + 1, learned + 2]);
        assert_eq!(tok.vocab_size(), learned as usize + 3);
        let encoded = tok.encode("<|image start|>4*4<|image token|>").unwrap();
        assert_eq!(encoded.first(), Some(&learned));
        assert_eq!(encoded.last(), Some(&(learned + 1)));
        assert_eq!(encoded.len(), 2 + tok.encode("4*4").unwrap().len());
        assert_eq!(tok.encode("x<|image end|><|image end|>").unwrap()[1..], [learned + 2; 2]);
    }

    #[test]
    fn common_words_become_single_tokens() {
        let tok = trained();
        for word in [" the", " picture", " cat", " sea", "Generate"] {
            assert_eq!(tok.encode(word).unwrap().len(), 1, "{word:?}");
        }
    }

    #[test]
    fn specials_in_the_corpus_leave_no_trace_in_the_model() {
        let tok = trained();
        let alphabet = ByteLevel::alphabet();
        let vocab = tok.inner().get_model().get_vocab();
        for token in vocab.keys() {
            assert!(token.chars().all(|c| alphabet.contains(&c)), "{token:?}");
            assert!(!token.contains("image"), "{token:?}");
        }
    }

    #[test]
    fn training_is_deterministic() {
        let a = trained().inner().to_string(false).unwrap();
        let b = trained().inner().to_string(false).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn too_small_vocab_is_refused() {
        let err = train(&["a b".into()], 100, &[]).unwrap_err().to_string();
        assert!(err.contains("256"), "{err}");
    }
}
