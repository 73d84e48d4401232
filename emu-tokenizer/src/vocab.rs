//! The vocabulary layout: where text, special tokens and visual codes live in the LM's one
//! vocabulary. Derived from the model config (special ids) and the tokenizer (the id of
//! `<|visual token 000000|>`), never hard-coded: for official Emu3 a code k is token 151854 + k,
//! for our own models it is whatever our tokenizer assigned.

use anyhow::{Result, ensure};
use serde::{Deserialize, Serialize};

/// The name of the token of visual code `k`, as Emu3's tokenizer spells it.
pub fn visual_token_name(k: i64) -> String {
    format!("<|visual token {k:06}|>")
}

/// Emu3's special-token names.
pub mod names {
    pub const BOS: &str = "<|extra_203|>";
    pub const EOS: &str = "<|extra_204|>";
    pub const PAD: &str = "<|endoftext|>";
    pub const EOL: &str = "<|extra_200|>";
    pub const EOF: &str = "<|extra_201|>";
    pub const IMG: &str = "<|image token|>";
    pub const BOI: &str = "<|image start|>";
    pub const EOI: &str = "<|image end|>";
}

/// The special token ids a model config names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecialIds {
    pub bos: i64,
    pub eos: i64,
    pub pad: i64,
    pub eol: i64,
    pub eof: i64,
    pub img: i64,
    pub boi: i64,
    pub eoi: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VocabLayout {
    pub special: SpecialIds,
    /// Token id of visual code 0; code k is `visual_base + k`.
    pub visual_base: i64,
    pub codebook_size: i64,
    /// The LM's vocabulary size.
    pub vocab_size: i64,
}

impl VocabLayout {
    /// Builds the layout from the config's special ids and a token-name lookup (the tokenizer or
    /// transformers' `vocabulary_map`); checks that the K visual tokens are contiguous.
    pub fn derive(
        special: SpecialIds,
        codebook_size: i64,
        vocab_size: i64,
        lookup: impl Fn(&str) -> Option<i64>,
    ) -> Result<Self> {
        let first = visual_token_name(0);
        let last = visual_token_name(codebook_size - 1);
        let base = lookup(&first).ok_or_else(|| {
            anyhow::anyhow!("the tokenizer has no `{first}`: it cannot express visual codes\nhint: a model folder needs a tokenizer with the visual tokens of its VQ codebook")
        })?;
        let end = lookup(&last).ok_or_else(|| {
            anyhow::anyhow!(
                "the tokenizer has no `{last}`, but the VQ codebook has {codebook_size} codes"
            )
        })?;
        ensure!(
            end == base + codebook_size - 1,
            "visual tokens are not contiguous: `{first}` is {base} but `{last}` is {end} (expected {})",
            base + codebook_size - 1
        );
        let layout = VocabLayout { special, visual_base: base, codebook_size, vocab_size };
        layout.validate()?;
        Ok(layout)
    }

    pub fn validate(&self) -> Result<()> {
        ensure!(
            self.visual_base >= 0 && self.visual_base + self.codebook_size <= self.vocab_size,
            "visual tokens [{}, {}) do not fit the vocabulary of {}",
            self.visual_base,
            self.visual_base + self.codebook_size,
            self.vocab_size
        );
        let s = &self.special;
        for (name, id) in [
            ("bos", s.bos),
            ("eos", s.eos),
            ("pad", s.pad),
            ("eol", s.eol),
            ("eof", s.eof),
            ("img", s.img),
            ("boi", s.boi),
            ("eoi", s.eoi),
        ] {
            ensure!(
                (0..self.vocab_size).contains(&id),
                "{name} token id {id} is outside the vocabulary of {}",
                self.vocab_size
            );
            ensure!(!self.is_visual(id), "{name} token id {id} lies inside the visual-code range");
        }
        Ok(())
    }

    pub fn is_visual(&self, token: i64) -> bool {
        (self.visual_base..self.visual_base + self.codebook_size).contains(&token)
    }

    pub fn code_to_token(&self, code: i64) -> i64 {
        assert!(
            (0..self.codebook_size).contains(&code),
            "code {code} outside the codebook of {}",
            self.codebook_size
        );
        self.visual_base + code
    }

    pub fn token_to_code(&self, token: i64) -> Option<i64> {
        self.is_visual(token).then(|| token - self.visual_base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    pub fn emu3_specials() -> SpecialIds {
        SpecialIds {
            bos: 151849,
            eos: 151850,
            pad: 151643,
            eol: 151846,
            eof: 151847,
            img: 151851,
            boi: 151852,
            eoi: 151853,
        }
    }

    #[test]
    fn official_emu3_codes_start_at_151854() {
        let lookup = |name: &str| {
            name.strip_prefix("<|visual token ")
                .and_then(|r| r.strip_suffix("|>"))
                .and_then(|k| k.parse::<i64>().ok())
                .map(|k| 151854 + k)
        };
        let v = VocabLayout::derive(emu3_specials(), 32768, 184622, lookup).unwrap();
        assert_eq!(v.code_to_token(0), 151854);
        assert_eq!(v.code_to_token(32767), 184621);
        assert_eq!(v.token_to_code(184621), Some(32767));
        assert_eq!(v.token_to_code(151853), None);
    }

    #[test]
    fn gaps_and_missing_tokens_are_errors() {
        let mut m: HashMap<String, i64> = (0..8).map(|k| (visual_token_name(k), 100 + k)).collect();
        let s = SpecialIds { bos: 1, eos: 2, pad: 0, eol: 3, eof: 4, img: 5, boi: 6, eoi: 7 };
        assert!(VocabLayout::derive(s, 8, 200, |n| m.get(n).copied()).is_ok());
        let e =
            format!("{:#}", VocabLayout::derive(s, 16, 200, |n| m.get(n).copied()).unwrap_err());
        assert!(e.contains("000015"), "{e}");
        m.insert(visual_token_name(7), 300);
        let e = format!("{:#}", VocabLayout::derive(s, 8, 400, |n| m.get(n).copied()).unwrap_err());
        assert!(e.contains("not contiguous"), "{e}");
        let bad = SpecialIds { eol: 103, ..s };
        let m: HashMap<String, i64> = (0..8).map(|k| (visual_token_name(k), 100 + k)).collect();
        let e =
            format!("{:#}", VocabLayout::derive(bad, 8, 200, |n| m.get(n).copied()).unwrap_err());
        assert!(e.contains("eol"), "{e}");
    }
}
