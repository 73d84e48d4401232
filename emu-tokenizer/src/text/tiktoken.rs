//! BAAI's original Emu3 text tokenizer files (`emu3.tiktoken` + `emu3_vision_tokens.txt`) read
//! into a `tokenizers::Tokenizer` that encodes and decodes exactly like the reference
//! (tiktoken with Qwen's regex, NFC first, every special token allowed).
//!
//! Special ids: the reference numbers its specials from [`SPECIAL_START_ID`] whatever the number
//! of ranks, and `tokenizers` can only give an added token a chosen id if the model vocabulary
//! already holds that token. So the specials are placed in the BPE vocabulary at their exact ids
//! *and* registered as special added tokens (which then reuse those ids). No merge produces them
//! and the added-token splitter takes them out before the BPE runs, so they behave purely as
//! atomic specials (nor can the whole-piece lookup hit one: Qwen's regex never yields a pre-token
//! like `<|…|>`). A small ranks file simply leaves a hole of unused ids below 151643; with the
//! real file (151643 ranks) there is no hole and the ids are those of Emu3-*-hf.
//!
//! One known difference: the reference NFC-normalises the whole text before finding specials,
//! `tokenizers` only the text between them, so a combining mark that NFC would fold into a
//! special's closing `>` (U+0338, giving `≯`) keeps the special here and breaks it there.

use std::collections::HashSet;
use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::unicode::NFC;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use super::convert::ranks_to_bpe;

/// Id of `<|endoftext|>`, the first special token of the reference tokenizer.
pub const SPECIAL_START_ID: u32 = 151643;

/// Qwen's pre-tokenisation regex, as used by the reference.
pub const QWEN_PATTERN: &str = concat!(
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*",
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
);

/// The specials every Emu3 tokenizer has before its vision tokens, in id order.
pub fn base_specials() -> Vec<String> {
    let named = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"].map(String::from);
    named.into_iter().chain((0..205).map(|i| format!("<|extra_{i}|>"))).collect()
}

/// Reads a tiktoken ranks file: one `<base64 token bytes> <rank>` a line, blank lines skipped.
/// Returns the entries in file order.
pub fn read_ranks(path: &Path) -> Result<Vec<(Vec<u8>, u32)>> {
    let raw = std::fs::read(path).with_context(|| {
        format!(
            "reading tiktoken ranks file {} (expected lines '<base64 token> <rank>')",
            path.display()
        )
    })?;
    let text = std::str::from_utf8(&raw).map_err(|e| {
        anyhow::anyhow!(
            "{}: not a tiktoken ranks file: not text ({e}); expected lines '<base64 token> <rank>'",
            path.display()
        )
    })?;
    let mut entries = Vec::new();
    let mut seen_tokens = HashSet::new();
    let mut seen_ranks = HashSet::new();
    for (i, line) in text.lines().enumerate() {
        let where_ = || format!("{} line {}", path.display(), i + 1);
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (token, rank) = match fields[..] {
            [] => continue,
            [token, rank] => (token, rank),
            _ => bail!(
                "{}: expected '<base64 token> <rank>', found {} fields in {line:?}",
                where_(),
                fields.len()
            ),
        };
        let bytes = STANDARD
            .decode(token)
            .with_context(|| format!("{}: token {token:?} is not valid base64", where_()))?;
        let rank: u32 = rank.parse().with_context(|| {
            format!("{}: rank {rank:?} is not a non-negative integer", where_())
        })?;
        ensure!(!bytes.is_empty(), "{}: the token decodes to no bytes", where_());
        ensure!(
            rank < SPECIAL_START_ID,
            "{}: rank {rank} collides with the special tokens, which start at {SPECIAL_START_ID}",
            where_()
        );
        ensure!(seen_ranks.insert(rank), "{}: rank {rank} is given twice", where_());
        ensure!(
            seen_tokens.insert(bytes.clone()),
            "{}: token {token:?} appears a second time",
            where_()
        );
        entries.push((bytes, rank));
    }
    let missing: Vec<u8> = (0..=255u8).filter(|b| !seen_tokens.contains(&[*b][..])).collect();
    ensure!(
        missing.is_empty(),
        "{}: no token for the single byte(s) {:02x?}{}; byte-level BPE needs all 256 bytes \
         (real tiktoken files have them)",
        path.display(),
        &missing[..missing.len().min(8)],
        if missing.len() > 8 { " …" } else { "" }
    );
    Ok(entries)
}

/// Reads the vision special tokens: one token a line (ends trimmed), blank lines skipped.
pub fn read_vision_tokens(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "reading vision tokens file {} (expected UTF-8 text, one special token a line)",
            path.display()
        )
    })?;
    Ok(text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect())
}

/// Builds the reference tokenizer from its ranks and the specials after the base ones.
pub fn build(ranks: &[(Vec<u8>, u32)], vision_tokens: &[String]) -> Result<Tokenizer> {
    let specials: Vec<String> =
        base_specials().into_iter().chain(vision_tokens.iter().cloned()).collect();
    let mut bpe = ranks_to_bpe(ranks);
    let mut seen = HashSet::new();
    for (i, special) in specials.iter().enumerate() {
        ensure!(seen.insert(special), "special token {special:?} is listed twice");
        let id = SPECIAL_START_ID + i as u32;
        // A regular token with the same string would make the vocabulary ambiguous.
        ensure!(
            bpe.vocab.insert(special.clone(), id).is_none(),
            "special token {special:?} is also a regular token of the ranks file"
        );
    }
    let model = BPE::builder()
        .vocab_and_merges(bpe.vocab, bpe.merges)
        // tiktoken emits a pre-token that is itself a token without running BPE on it.
        .ignore_merges(true)
        .build()
        .map_err(|e| anyhow::anyhow!("building the BPE model from the ranks: {e}"))?;

    let split = Split::new(
        SplitPattern::Regex(QWEN_PATTERN.into()),
        SplitDelimiterBehavior::Isolated,
        false,
    )
    .map_err(|e| anyhow::anyhow!("compiling Qwen's pre-tokenisation regex: {e}"))?;
    let pre: Vec<PreTokenizerWrapper> =
        vec![split.into(), ByteLevel::new(false, false, false).into()];
    let mut tokenizer = Tokenizer::new(model);
    tokenizer
        .with_normalizer(Some(NFC))
        .with_pre_tokenizer(Some(Sequence::new(pre)))
        .with_post_processor(Some(ByteLevel::new(false, false, false)))
        .with_decoder(Some(DecoderWrapper::ByteLevel(ByteLevel::default())));
    let added: Vec<AddedToken> =
        specials.iter().map(|s| AddedToken::from(s.as_str(), true)).collect();
    tokenizer.add_special_tokens(&added);
    for (i, special) in specials.iter().enumerate() {
        let want = SPECIAL_START_ID + i as u32;
        let got = tokenizer.token_to_id(special);
        ensure!(got == Some(want), "special token {special:?} got id {got:?}, expected {want}");
    }
    Ok(tokenizer)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use serde::Deserialize;

    use super::*;
    use crate::text::TextTokenizer;

    #[derive(Deserialize)]
    struct Goldens {
        #[serde(default)]
        special_start_id: u32,
        cases: Vec<Case>,
    }

    #[derive(Deserialize)]
    struct Case {
        text: String,
        ids: Vec<u32>,
        decoded: String,
    }

    fn data(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/text").join(name)
    }

    fn mini() -> TextTokenizer {
        TextTokenizer::from_tiktoken(&data("mini.tiktoken"), &data("mini_vision_tokens.txt"))
            .unwrap()
    }

    fn check_goldens(tok: &TextTokenizer, goldens: &Goldens) -> usize {
        let mut wrong = 0;
        for case in &goldens.cases {
            let ids = tok.encode(&case.text).unwrap();
            if ids != case.ids {
                wrong += 1;
                if wrong <= 5 {
                    eprintln!("{:?}\n  ours   {ids:?}\n  tiktok {:?}", case.text, case.ids);
                }
            }
            assert_eq!(tok.decode(&case.ids, false).unwrap(), case.decoded, "{:?}", case.text);
        }
        wrong
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn err_of(ranks: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let ranks = write(dir.path(), "r.tiktoken", ranks);
        let vision = write(dir.path(), "v.txt", "<|image start|>\n");
        format!("{:#}", TextTokenizer::from_tiktoken(&ranks, &vision).unwrap_err())
    }

    fn all_bytes() -> String {
        (0..=255u8).map(|b| format!("{} {b}\n", STANDARD.encode([b]))).collect()
    }

    #[test]
    fn matches_tiktoken_goldens() {
        let text = std::fs::read_to_string(data("tiktoken_goldens.json")).unwrap();
        let goldens: Goldens = serde_json::from_str(&text).unwrap();
        assert_eq!(goldens.special_start_id, SPECIAL_START_ID);
        assert!(goldens.cases.len() >= 60);
        assert_eq!(check_goldens(&mini(), &goldens), 0);
    }

    /// `make_goldens.py --many N FILE` writes many random cases for the mini files; with
    /// `EMU3_MANY_GOLDENS=FILE` this checks them all.
    #[test]
    #[ignore = "needs EMU3_MANY_GOLDENS (see make_goldens.py --many)"]
    fn matches_many_tiktoken_goldens() {
        let path = std::env::var("EMU3_MANY_GOLDENS").expect("EMU3_MANY_GOLDENS");
        let goldens: Goldens =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let ranks = std::env::var("EMU3_MANY_RANKS").map(PathBuf::from);
        let tok = match ranks {
            Ok(ranks) => {
                let start = std::time::Instant::now();
                let tok = TextTokenizer::from_tiktoken(&ranks, &data("mini_vision_tokens.txt"));
                eprintln!("loaded {} in {:?}", ranks.display(), start.elapsed());
                tok.unwrap()
            }
            Err(_) => mini(),
        };
        let wrong = check_goldens(&tok, &goldens);
        eprintln!("{} cases, {wrong} differ", goldens.cases.len());
        assert_eq!(wrong, 0);
    }

    /// With `EMU3_TOKENIZER_DIR` holding BAAI's emu3.tiktoken + emu3_vision_tokens.txt.
    #[test]
    #[ignore = "needs EMU3_TOKENIZER_DIR with the real Emu3 tokenizer files"]
    fn real_emu3_files() {
        let dir = PathBuf::from(std::env::var("EMU3_TOKENIZER_DIR").expect("EMU3_TOKENIZER_DIR"));
        let start = std::time::Instant::now();
        let tok = TextTokenizer::from_tiktoken(
            &dir.join("emu3.tiktoken"),
            &dir.join("emu3_vision_tokens.txt"),
        )
        .unwrap();
        eprintln!("loaded in {:?}", start.elapsed());
        assert_eq!(tok.vocab_size(), 184622);
        assert_eq!(tok.token_to_id("<|image start|>"), Some(151852));
        assert_eq!(tok.token_to_id("<|visual token 032767|>"), Some(184621));
        let dir = tempfile::tempdir().unwrap();
        tok.save(&dir.path().join("tokenizer.json")).unwrap();
        let start = std::time::Instant::now();
        let back = TextTokenizer::from_dir(dir.path()).unwrap();
        eprintln!("reloaded tokenizer.json in {:?}", start.elapsed());
        let text = "<|image start|>1*1<|image token|><|visual token 000042|><|image end|> Hi 你";
        assert_eq!(back.encode(text).unwrap(), tok.encode(text).unwrap());
    }

    #[test]
    fn specials_are_numbered_from_151643() {
        let tok = mini();
        let vision = read_vision_tokens(&data("mini_vision_tokens.txt")).unwrap();
        assert_eq!(vision[..3], ["<|image token|>", "<|image start|>", "<|image end|>"]);
        assert_eq!(tok.token_to_id("<|endoftext|>"), Some(SPECIAL_START_ID));
        assert_eq!(tok.token_to_id("<|im_end|>"), Some(SPECIAL_START_ID + 2));
        assert_eq!(tok.token_to_id("<|extra_204|>"), Some(SPECIAL_START_ID + 207));
        assert_eq!(tok.token_to_id("<|image token|>"), Some(SPECIAL_START_ID + 208));
        assert_eq!(tok.id_to_token(SPECIAL_START_ID + 209).as_deref(), Some("<|image start|>"));
        assert_eq!(tok.vocab_size(), (SPECIAL_START_ID + 208) as usize + vision.len());
        // The hole between the ranks and the specials holds nothing.
        assert_eq!(tok.id_to_token(1000), None);
        assert!(tok.decode(&[1000], false).is_err());
        let ids = tok.encode("<|image start|>4*4<|image token|>").unwrap();
        assert_eq!(ids.first(), Some(&(SPECIAL_START_ID + 209)));
        assert_eq!(ids.last(), Some(&(SPECIAL_START_ID + 208)));
        assert_eq!(tok.decode(&ids, true).unwrap(), "4*4");
    }

    #[test]
    fn survives_save_and_reload() {
        let tok = mini();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        tok.save(&path).unwrap();
        let back = TextTokenizer::from_file(&path).unwrap();
        assert_eq!(back.vocab_size(), tok.vocab_size());
        let goldens: Goldens =
            serde_json::from_str(&std::fs::read_to_string(data("tiktoken_goldens.json")).unwrap())
                .unwrap();
        assert_eq!(check_goldens(&back, &goldens), 0);
    }

    #[test]
    fn bad_ranks_files_name_the_line() {
        let bytes = all_bytes();
        let cases = [
            (format!("{bytes}YWI= 256\nYWJj\n"), "line 258: expected '<base64 token> <rank>'"),
            (
                format!("{bytes}YWI= 256\n\nYW!! 257\n"),
                "line 259: token \"YW!!\" is not valid base64",
            ),
            (format!("{bytes}YWI= x\n"), "line 257: rank \"x\" is not a non-negative integer"),
            (format!("{bytes}YWI= 255\n"), "line 257: rank 255 is given twice"),
            (format!("{bytes}YQ== 300\n"), "line 257: token \"YQ==\" appears a second time"),
            (format!("{bytes}YWI= 151643\n"), "line 257: rank 151643 collides"),
            ("YQ== 0\n".to_string(), "no token for the single byte(s) [00, 01"),
        ];
        for (ranks, want) in cases {
            let err = err_of(&ranks);
            assert!(err.contains(want) && err.contains("r.tiktoken"), "{err}\nwanted: {want}");
        }
    }

    #[test]
    fn missing_and_clashing_files_are_explained() {
        let dir = tempfile::tempdir().unwrap();
        let ranks = write(dir.path(), "r.tiktoken", &all_bytes());
        let nowhere = dir.path().join("nope.txt");
        let err = format!("{:#}", TextTokenizer::from_tiktoken(&ranks, &nowhere).unwrap_err());
        assert!(err.contains("nope.txt") && err.contains("one special token a line"), "{err}");
        let err = format!("{:#}", TextTokenizer::from_tiktoken(&nowhere, &ranks).unwrap_err());
        assert!(err.contains("nope.txt") && err.contains("<base64 token> <rank>"), "{err}");
        let twice = write(dir.path(), "v.txt", "<|a|>\r\n\n  <|a|>  \n");
        let err = format!("{:#}", TextTokenizer::from_tiktoken(&ranks, &twice).unwrap_err());
        assert!(err.contains("\"<|a|>\" is listed twice") && err.contains("v.txt"), "{err}");
        let clash = write(dir.path(), "c.txt", "a\n");
        let err = format!("{:#}", TextTokenizer::from_tiktoken(&ranks, &clash).unwrap_err());
        assert!(err.contains("also a regular token"), "{err}");
    }
}
