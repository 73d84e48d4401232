//! The text tokenizer: Emu3's byte-level BPE (loaded from a HuggingFace `tokenizer.json`, from
//! BAAI's original tiktoken files, or trained for our own models), built on the `tokenizers`
//! crate, which does all the BPE, byte-level and added-token work.
//!
//! Token strings (`token_to_id`, `id_to_token`) are the model's own forms: regular tokens are in
//! GPT-2's byte-level alphabet (`" the"` is `"Ġthe"`), special tokens are their text.

mod convert;
mod tiktoken;
mod train;

use std::collections::HashSet;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail, ensure};
use serde::Deserialize;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::ModelWrapper;
use tokenizers::{AddedToken, Model, Tokenizer};

pub use tiktoken::{QWEN_PATTERN, SPECIAL_START_ID, base_specials};

/// File names `from_dir` looks for, in order of preference.
pub const TOKENIZER_JSON: &str = "tokenizer.json";
pub const TIKTOKEN_RANKS: &str = "emu3.tiktoken";
pub const VISION_TOKENS: &str = "emu3_vision_tokens.txt";

/// A text tokenizer; ids are those of the files it came from.
#[derive(Debug, Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    /// One past the highest id in use (kept, as `tokenizers` only hands out copies of its maps).
    vocab_size: usize,
}

impl TextTokenizer {
    /// A HuggingFace tokenizer.json (the Emu3-*-hf layout; also our own).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "reading tokenizer file {} (expected a HuggingFace tokenizer.json)",
                path.display()
            )
        })?;
        let inner: Tokenizer = text.parse().map_err(|e| {
            anyhow!(
                "{}: not a valid HuggingFace tokenizer.json: {e}; hint: use the tokenizer.json \
                 of an Emu3-*-hf model or one written by TextTokenizer::save",
                path.display()
            )
        })?;
        check_added_ids(&inner, &text).with_context(|| format!("loading {}", path.display()))?;
        Ok(Self::wrap(inner))
    }

    /// BAAI's original files: `emu3.tiktoken` (lines "<base64 token bytes> <rank>") and
    /// `emu3_vision_tokens.txt` (one special token a line). Specials are numbered from
    /// [`SPECIAL_START_ID`]: `<|endoftext|>`, `<|im_start|>`, `<|im_end|>`, `<|extra_0..204|>`,
    /// then the vision tokens in file order.
    pub fn from_tiktoken(ranks: &Path, vision_tokens: &Path) -> Result<Self> {
        let entries = tiktoken::read_ranks(ranks)?;
        let vision = tiktoken::read_vision_tokens(vision_tokens)?;
        let inner = tiktoken::build(&entries, &vision).with_context(|| {
            format!(
                "building the Emu3 tokenizer from {} and {}",
                ranks.display(),
                vision_tokens.display()
            )
        })?;
        Ok(Self::wrap(inner))
    }

    /// Looks in a model folder: tokenizer.json first, else emu3.tiktoken + emu3_vision_tokens.txt.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let json = dir.join(TOKENIZER_JSON);
        if json.is_file() {
            return Self::from_file(&json);
        }
        let (ranks, vision) = (dir.join(TIKTOKEN_RANKS), dir.join(VISION_TOKENS));
        match (ranks.is_file(), vision.is_file()) {
            (true, true) => Self::from_tiktoken(&ranks, &vision),
            (true, false) => bail!(
                "{}: found {TIKTOKEN_RANKS} but not {VISION_TOKENS}, which BAAI ships beside it",
                dir.display()
            ),
            _ => bail!(
                "{}: no text tokenizer found; looked for {TOKENIZER_JSON}, then for \
                 {TIKTOKEN_RANKS} together with {VISION_TOKENS}",
                dir.display()
            ),
        }
    }

    /// Trains a byte-level BPE on a corpus for our own models. `vocab_size` bounds the learned
    /// vocabulary (the 256 byte tokens included); `specials` come on top, with ids right after
    /// the learned vocabulary in the given order, and always encode atomically. The same corpus
    /// gives the same tokenizer.
    pub fn train_bpe(corpus: &[String], vocab_size: usize, specials: &[String]) -> Result<Self> {
        let mut tokenizer = Self::wrap(train::train(corpus, vocab_size, specials)?);
        tokenizer.add_special_tokens(specials);
        Ok(tokenizer)
    }

    /// Writes tokenizer.json (loadable by `from_file` and by HuggingFace `tokenizers`).
    pub fn save(&self, path: &Path) -> Result<()> {
        self.inner
            .save(path, false)
            .map_err(|e| anyhow!("writing tokenizer file {}: {e}", path.display()))
    }

    /// Token ids of `text`. Special tokens written in the text become their ids (like the
    /// reference's `allowed_special="all"`); nothing (no BOS) is added.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .inner
            .encode_fast(text, false)
            .map_err(|e| anyhow!("encoding a text of {} bytes: {e}", text.len()))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Text of `ids`: token bytes joined and read as UTF-8, invalid sequences replaced.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        if let Some(bad) = ids.iter().find(|&&id| self.inner.id_to_token(id).is_none()) {
            bail!("cannot decode id {bad}: it is not in the vocabulary ({} ids)", self.vocab_size);
        }
        if !matches!(self.inner.get_decoder(), Some(DecoderWrapper::ByteLevel(_))) {
            return self.inner.decode(ids, skip_special).map_err(|e| anyhow!("decoding: {e}"));
        }
        // The byte-level decoder would read a special's characters as byte codes when they all
        // happen to be in its alphabet (e.g. "<|café|>"); added tokens are text, so they are
        // spliced in verbatim between byte runs. Skipped ones do not cut a run, so bytes of one
        // character on both sides of them still join, as in the reference.
        let added = self.inner.get_added_vocabulary().get_added_tokens_decoder();
        let mut text = String::new();
        let mut run: Vec<u32> = Vec::new();
        for &id in ids {
            match added.get(&id) {
                None => run.push(id),
                Some(token) if skip_special && token.special => {}
                Some(token) => {
                    text += &self.decode_run(&run)?;
                    run.clear();
                    text += &token.content;
                }
            }
        }
        text += &self.decode_run(&run)?;
        Ok(text)
    }

    fn decode_run(&self, ids: &[u32]) -> Result<String> {
        if ids.is_empty() {
            return Ok(String::new());
        }
        self.inner.decode(ids, false).map_err(|e| anyhow!("decoding: {e}"))
    }

    /// Id of a token in the model's string form (see the module docs).
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Token of an id in the model's string form (see the module docs).
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// One past the highest id, added and special tokens included: the rows an embedding needs.
    /// Equals the token count except where ids leave a hole (a small ranks file, whose specials
    /// still start at 151643).
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// Adds special tokens that are not yet in the vocabulary (ids appended after the highest id,
    /// in order) and returns the id of every given token. A token already in the vocabulary keeps
    /// its id but is made special, so that it too encodes atomically. Empty strings cannot be
    /// tokens and are skipped, so they get no entry in the result.
    pub fn add_special_tokens(&mut self, tokens: &[String]) -> Vec<u32> {
        let tokens: Vec<&String> = tokens.iter().filter(|t| !t.is_empty()).collect();
        let fresh: Vec<&String> = {
            let mut seen = HashSet::new();
            tokens
                .iter()
                .copied()
                .filter(|t| self.inner.token_to_id(t).is_none() && seen.insert(*t))
                .collect()
        };
        if !fresh.is_empty() && self.next_added_id() != self.vocab_size as u32 {
            // `tokenizers` would number them from its model's token count, which lies inside a
            // vocabulary with holes; reserving the ids in the model makes it reuse them instead.
            let first = self.vocab_size as u32;
            let ids = fresh.iter().enumerate().map(|(i, t)| ((*t).clone(), first + i as u32));
            if let Err(e) = self.reserve_in_model(ids.collect()) {
                eprintln!("warning: appending special tokens after the highest id failed: {e}");
            }
        }
        let added: Vec<AddedToken> = tokens.iter().map(|t| AddedToken::from(*t, true)).collect();
        self.inner.add_special_tokens(&added);
        let ids: Vec<u32> = tokens.iter().filter_map(|t| self.inner.token_to_id(t)).collect();
        self.vocab_size =
            self.vocab_size.max(ids.iter().map(|&id| id as usize + 1).max().unwrap_or(0));
        ids
    }

    /// The underlying `tokenizers` tokenizer, for what this wrapper does not expose.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    fn wrap(mut inner: Tokenizer) -> Self {
        // A file may carry padding or truncation settings; ids must never be cut or padded here.
        inner.with_padding(None);
        // Only setting a truncation can fail (a stride too long for it), not clearing one.
        let _ = inner.with_truncation(None);
        let model_max = inner.get_model().get_vocab().into_values().max();
        let added = inner.get_added_vocabulary().get_added_tokens_decoder();
        let max = model_max.into_iter().chain(added.keys().copied()).max();
        let vocab_size = max.map_or(0, |m| m as usize + 1);
        Self { inner, vocab_size }
    }

    /// The id `tokenizers` gives the next new added token (its rule in AddedVocabulary).
    fn next_added_id(&self) -> u32 {
        let model_len = self.inner.get_model().get_vocab_size() as u32;
        let added = self.inner.get_added_vocabulary().get_added_tokens_decoder();
        match added.keys().copied().max() {
            Some(max) if max >= model_len || model_len == 0 => max + 1,
            _ => model_len,
        }
    }

    /// Puts tokens into the model's vocabulary at the given ids, through its JSON form (the
    /// models keep their vocabularies private).
    fn reserve_in_model(&mut self, entries: Vec<(String, u32)>) -> Result<()> {
        let mut json = serde_json::to_value(self.inner.get_model())?;
        let vocab = json
            .get_mut("vocab")
            .and_then(|v| v.as_object_mut())
            .context("this model kind has no token→id vocabulary")?;
        for (token, id) in entries {
            vocab.insert(token, id.into());
        }
        let model: ModelWrapper = serde_json::from_value(json)?;
        self.inner.with_model(model);
        Ok(())
    }
}

/// `tokenizers` renumbers a file's added tokens while loading (and only logs a warning); an id
/// that moved would silently change what every special token means, so it is an error here.
fn check_added_ids(inner: &Tokenizer, text: &str) -> Result<()> {
    #[derive(Deserialize)]
    struct File {
        #[serde(default)]
        added_tokens: Vec<Added>,
    }
    #[derive(Deserialize)]
    struct Added {
        id: u32,
        content: String,
    }
    let file: File = serde_json::from_str(text).context("reading its added_tokens")?;
    let moved: Vec<String> = file
        .added_tokens
        .iter()
        .filter_map(|added| {
            let got = inner.token_to_id(&added.content);
            (got != Some(added.id))
                .then(|| format!("{}: file {}, loaded {got:?}", added.content, added.id))
        })
        .collect();
    ensure!(
        moved.is_empty(),
        "{} added token(s) do not get the id the file gives them, e.g. {}; the ids of \
         added_tokens must follow the model vocabulary without gaps or clashes",
        moved.len(),
        moved[0]
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use serde_json::Value;

    use super::*;

    fn data(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/text").join(name)
    }

    fn mini() -> TextTokenizer {
        TextTokenizer::from_tiktoken(&data("mini.tiktoken"), &data("mini_vision_tokens.txt"))
            .unwrap()
    }

    fn cases(name: &str) -> Vec<Value> {
        let text = std::fs::read_to_string(data(name)).unwrap();
        let json: Value = serde_json::from_str(&text).unwrap();
        json["cases"].as_array().unwrap().clone()
    }

    fn ids_of(case: &Value) -> Vec<u32> {
        case["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect()
    }

    fn tokenizer_json(dir: &Path, edit: impl FnOnce(&mut Value)) -> PathBuf {
        let path = dir.join("tokenizer.json");
        mini().save(&path).unwrap();
        let mut json: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        edit(&mut json);
        std::fs::write(&path, json.to_string()).unwrap();
        path
    }

    #[test]
    fn hf_tokenizer_json_matches_python_tokenizers() {
        // Written by transformers' TikTokenConverter and encoded by Python `tokenizers`.
        let tok = TextTokenizer::from_file(&data("hf_tokenizer.json")).unwrap();
        let hf = cases("hf_goldens.json");
        let reference = cases("tiktoken_goldens.json");
        assert_eq!(hf.len(), reference.len());
        for (case, tiktoken) in hf.iter().zip(&reference) {
            let ids = ids_of(case);
            assert_eq!(tok.encode(case["text"].as_str().unwrap()).unwrap(), ids, "{case}");
            assert_eq!(tok.decode(&ids, false).unwrap(), tiktoken["decoded"], "{case}");
        }
        assert_eq!(tok.token_to_id("<|endoftext|>"), Some(558));
        assert_eq!(tok.vocab_size(), 558 + 8);
    }

    #[test]
    fn from_dir_prefers_tokenizer_json_then_tiktoken_files() {
        let dir = tempfile::tempdir().unwrap();
        let err = format!("{:#}", TextTokenizer::from_dir(dir.path()).unwrap_err());
        for name in [TOKENIZER_JSON, TIKTOKEN_RANKS, VISION_TOKENS] {
            assert!(err.contains(name), "{err}");
        }
        std::fs::copy(data("mini.tiktoken"), dir.path().join(TIKTOKEN_RANKS)).unwrap();
        let err = format!("{:#}", TextTokenizer::from_dir(dir.path()).unwrap_err());
        assert!(err.contains(&format!("not {VISION_TOKENS}")), "{err}");
        std::fs::copy(data("mini_vision_tokens.txt"), dir.path().join(VISION_TOKENS)).unwrap();
        let tok = TextTokenizer::from_dir(dir.path()).unwrap();
        assert_eq!(tok.token_to_id("<|endoftext|>"), Some(SPECIAL_START_ID));
        std::fs::copy(data("hf_tokenizer.json"), dir.path().join(TOKENIZER_JSON)).unwrap();
        let tok = TextTokenizer::from_dir(dir.path()).unwrap();
        assert_eq!(tok.token_to_id("<|endoftext|>"), Some(558));
    }

    #[test]
    fn bad_tokenizer_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.json");
        let err = format!("{:#}", TextTokenizer::from_file(&missing).unwrap_err());
        assert!(err.contains("missing.json") && err.contains("tokenizer.json"), "{err}");
        let garbage = dir.path().join("garbage.json");
        std::fs::write(&garbage, "{\"model\": 3").unwrap();
        let err = format!("{:#}", TextTokenizer::from_file(&garbage).unwrap_err());
        assert!(err.contains("garbage.json") && err.contains("not a valid"), "{err}");
    }

    #[test]
    fn moved_added_token_ids_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = tokenizer_json(dir.path(), |json| {
            json["added_tokens"][0]["id"] = 7.into();
        });
        let err = format!("{:#}", TextTokenizer::from_file(&path).unwrap_err());
        assert!(err.contains("<|endoftext|>: file 7, loaded Some(151643)"), "{err}");
    }

    #[test]
    fn file_padding_and_truncation_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = tokenizer_json(dir.path(), |json| {
            json["truncation"] = serde_json::json!({"direction": "Right", "max_length": 2,
                "strategy": "LongestFirst", "stride": 0});
        });
        let tok = TextTokenizer::from_file(&path).unwrap();
        assert_eq!(
            tok.encode("one two three four").unwrap(),
            mini().encode("one two three four").unwrap()
        );
    }

    #[test]
    fn added_specials_are_appended_and_atomic() {
        let mut tok = mini();
        let top = tok.vocab_size() as u32;
        let names = ["<|new a|>", "<|endoftext|>", "", "<|café|>", "<|new a|>"].map(String::from);
        let ids = tok.add_special_tokens(&names);
        assert_eq!(ids, [top, SPECIAL_START_ID, top + 1, top]);
        assert_eq!(tok.vocab_size(), top as usize + 2);
        let text = "x<|café|>y<|new a|>";
        let ids = tok.encode(text).unwrap();
        assert_eq!(ids[1], top + 1);
        assert_eq!(tok.decode(&ids, false).unwrap(), text);
        assert_eq!(tok.decode(&ids, true).unwrap(), "xy");
    }

    #[test]
    fn specials_added_to_a_vocabulary_with_holes_do_not_clash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        let json = serde_json::json!({"version": "1.0", "added_tokens": [],
            "model": {"type": "WordLevel", "vocab": {"a": 0, "b": 1, "c": 3}, "unk_token": "a"},
            "pre_tokenizer": {"type": "Whitespace"}});
        std::fs::write(&path, json.to_string()).unwrap();
        let mut tok = TextTokenizer::from_file(&path).unwrap();
        assert_eq!(tok.vocab_size(), 4);
        assert_eq!(tok.add_special_tokens(&["<s>".into(), "<t>".into()]), [4, 5]);
        assert_eq!(tok.encode("c <s> b<t>").unwrap(), [3, 4, 1, 5]);
        assert_eq!(tok.id_to_token(3).as_deref(), Some("c"));
    }

    #[test]
    fn skipped_specials_do_not_split_a_character() {
        let tok = mini();
        // 你 is e4 bd a0; single bytes have rank = byte value in these files.
        let ids = [0xe4, 0xbd, SPECIAL_START_ID, 0xa0];
        assert_eq!(tok.decode(&ids, true).unwrap(), "你");
        assert_eq!(tok.decode(&ids, false).unwrap(), "\u{fffd}<|endoftext|>\u{fffd}");
        let err = tok.decode(&[5, 151000], false).unwrap_err().to_string();
        assert!(err.contains("151000"), "{err}");
    }
}
