//! Turns tiktoken mergeable ranks into the vocabulary and merge list of a `tokenizers` byte-level
//! BPE model that encodes exactly like tiktoken.
//!
//! tiktoken merges, inside one pre-token, the adjacent pair whose *concatenation* has the lowest
//! rank; a `tokenizers` BPE merges the adjacent pair with the lowest *merge index*. The two agree
//! when every token T that merges can build gets exactly one merge `(a, b)`, listed at T's rank,
//! where `a|b` is the last step of tiktoken's own BPE run on T's bytes alone. That is the only
//! way tiktoken ever builds T: while T's span forms inside a longer pre-token no part crosses
//! the span's edges (else T could not form there), so the merges inside the span are always the
//! span's lowest-ranked pair, exactly as in the run on T alone. The run has no rank cut-off: a
//! file need not rank a token after its parts, and tiktoken does not care. Tokens that run does
//! not finish are never built by merges; tiktoken still emits them when a whole pre-token equals
//! them, which the model's `ignore_merges` reproduces.
//!
//! transformers' `TikTokenConverter` instead lists every split whose halves are tokens; that
//! differs from tiktoken where two splits of one token overlap in a pre-token (it then picks by
//! list order, tiktoken the leftmost). Older converters cut the run at T's rank, which is wrong
//! for files that rank a token before its parts.

use std::collections::HashMap;
use std::sync::LazyLock;

use rayon::prelude::*;
use tokenizers::models::bpe::{Merges, Vocab};

/// GPT-2's byte→char table (what `tokenizers`' ByteLevel uses; it keeps its own copy private):
/// printable Latin-1 bytes map to themselves, the rest to U+0100 onwards in byte order.
static BYTE_CHARS: LazyLock<[char; 256]> = LazyLock::new(|| {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut table = ['\0'; 256];
    let mut next_shifted = 256u32;
    for b in 0..=255u8 {
        table[b as usize] = if printable(b) {
            char::from(b)
        } else {
            next_shifted += 1;
            char::from_u32(next_shifted - 1).unwrap_or(char::REPLACEMENT_CHARACTER)
        };
    }
    table
});

/// The string `tokenizers`' ByteLevel pre-tokenizer produces for these bytes.
pub fn byte_level(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| BYTE_CHARS[b as usize]).collect()
}

/// A byte-level BPE vocabulary and its merges, in merge-priority order.
#[derive(Debug, Default)]
pub struct ByteLevelBpe {
    pub vocab: Vocab,
    pub merges: Merges,
}

/// Converts ranks (token bytes → rank, ranks unique) into vocabulary and merges.
pub fn ranks_to_bpe(ranks: &[(Vec<u8>, u32)]) -> ByteLevelBpe {
    let lookup: HashMap<&[u8], u32> = ranks.iter().map(|(t, r)| (t.as_slice(), *r)).collect();
    let mut by_rank: Vec<&(Vec<u8>, u32)> = ranks.iter().collect();
    by_rank.sort_unstable_by_key(|(_, r)| *r);
    // The big files have ~150k tokens; the splits are independent, so spread them over cores.
    let merges = by_rank
        .par_iter()
        .filter(|(token, _)| token.len() > 1)
        .filter_map(|(token, _)| {
            let at = last_split(token, &lookup)?;
            Some((byte_level(&token[..at]), byte_level(&token[at..])))
        })
        .collect();
    let vocab = ranks.iter().map(|(t, r)| (byte_level(t), *r)).collect();
    ByteLevelBpe { vocab, merges }
}

/// Runs tiktoken's BPE on `token`'s bytes alone; if it ends in the whole token, returns the
/// byte offset where its last merge joined two parts.
fn last_split(token: &[u8], ranks: &HashMap<&[u8], u32>) -> Option<usize> {
    // Part i covers token[starts[i]..starts[i + 1]] (the last one runs to the end).
    let mut starts: Vec<usize> = (0..token.len()).collect();
    let end_of = |starts: &[usize], i: usize| starts.get(i + 1).copied().unwrap_or(token.len());
    // With two parts left the only pair is the token itself, which is ranked: that is the merge.
    while starts.len() > 2 {
        let mut best: Option<(u32, usize)> = None;
        for i in 0..starts.len() - 1 {
            let pair = &token[starts[i]..end_of(&starts, i + 1)];
            if let Some(&r) = ranks.get(pair) {
                // Strict `<` keeps the leftmost of equal ranks, as tiktoken does.
                if best.is_none_or(|(b, _)| r < b) {
                    best = Some((r, i));
                }
            }
        }
        let (_, i) = best?;
        starts.remove(i + 1);
    }
    starts.get(1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    use tokenizers::{OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer};

    fn bytes_then(extra: &[&[u8]]) -> Vec<(Vec<u8>, u32)> {
        let mut ranks: Vec<(Vec<u8>, u32)> = (0..=255u8).map(|b| (vec![b], b as u32)).collect();
        for (i, t) in extra.iter().enumerate() {
            ranks.push((t.to_vec(), 256 + i as u32));
        }
        ranks
    }

    #[test]
    fn byte_table_matches_tokenizers_byte_level() {
        let alphabet = ByteLevel::alphabet();
        assert_eq!(alphabet.len(), 256);
        assert!(BYTE_CHARS.iter().all(|c| alphabet.contains(c)));
        // Every byte that can occur in UTF-8, through the crate's own pre-tokenizer.
        let text: String =
            ['\0', '\n', ' ', 'A', '~', '\u{7f}', 'é', 'ÿ', '中', '🙂', '\u{10FFFF}']
                .iter()
                .chain(['\u{80}', '\u{7FF}', '\u{800}', '\u{FFFF}', '\u{10000}'].iter())
                .collect::<String>()
                + &(0x80u32..0x800).step_by(7).filter_map(char::from_u32).collect::<String>();
        let mut pre = PreTokenizedString::from(text.as_str());
        ByteLevel::new(false, false, false).pre_tokenize(&mut pre).unwrap();
        let mapped: String = pre
            .get_splits(OffsetReferential::Original, OffsetType::Byte)
            .into_iter()
            .map(|(s, _, _)| s)
            .collect();
        assert_eq!(mapped, byte_level(text.as_bytes()));
    }

    #[test]
    fn merge_is_the_split_tiktoken_reaches() {
        // "abc": 'ab' ranks below 'bc', so tiktoken builds ab|c and never a|bc.
        let ranks = bytes_then(&[b"ab", b"bc", b"abc"]);
        let bpe = ranks_to_bpe(&ranks);
        let merges: Vec<(&str, &str)> =
            bpe.merges.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        assert_eq!(merges, [("a", "b"), ("b", "c"), ("ab", "c")]);
        assert_eq!(bpe.vocab["abc"], 258);
        assert_eq!(bpe.vocab.len(), 259);
    }

    #[test]
    fn unreachable_tokens_get_no_merge() {
        // 'xyz' cannot come from x,y,z merges (no 'xy' or 'yz' token) → only whole-piece lookup.
        let ranks = bytes_then(&[b"ab", b"xyz", b" \xc3"]);
        let bpe = ranks_to_bpe(&ranks);
        assert_eq!(bpe.merges, [("a".into(), "b".into()), ("Ġ".into(), "Ã".into())]);
        assert_eq!(bpe.vocab["xyz"], 257);
    }

    #[test]
    fn tokens_may_rank_before_their_parts() {
        // tiktoken on "abc": only 'ab' is a pair at first; then 'abc' (ranked lower) completes it.
        let ranks = bytes_then(&[b"abc", b"ab"]);
        let bpe = ranks_to_bpe(&ranks);
        assert_eq!(bpe.merges, [("ab".into(), "c".into()), ("a".into(), "b".into())]);
    }

    #[test]
    fn equal_ranks_merge_leftmost_first() {
        // "aaa" with 'aa' below 'aaa': tiktoken merges the left pair first → aa|a.
        let ranks = bytes_then(&[b"aa", b"aaa"]);
        let bpe = ranks_to_bpe(&ranks);
        assert_eq!(bpe.merges[1], ("aa".into(), "a".into()));
    }
}
