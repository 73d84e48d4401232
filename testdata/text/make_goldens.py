"""Generates the text-tokenizer golden files in this folder (run once; tests never need Python).

    /work/venv/bin/pip install tiktoken
    /work/venv/bin/python testdata/text/make_goldens.py            # writes the committed files
    /work/venv/bin/python testdata/text/make_goldens.py --many N OUT  # N random cases, not committed
    /work/venv/bin/python testdata/text/make_goldens.py --big DIR      # full-size files, not committed

--many writes N random cases for the mini files; the ignored Rust test
`matches_many_tiktoken_goldens` checks them with EMU3_MANY_GOLDENS=OUT.
--big writes into DIR an adversarial emu3.tiktoken with the real 151643 ranks (random byte
strings in random rank order, so many tokens rank before their parts or cannot be built by
merges), an emu3_vision_tokens.txt shaped like the real one (32771 lines) and many_goldens.json
(5000 random cases); check with EMU3_MANY_GOLDENS=DIR/many_goldens.json
EMU3_MANY_RANKS=DIR/emu3.tiktoken, and time loading with EMU3_TOKENIZER_DIR=DIR (test
`real_emu3_files`).

Files written:
- mini.tiktoken: a tiny tiktoken ranks file ("<base64 bytes> <rank>"), the 256 single bytes first
  (as real tiktoken files have), then merges learnt with tiktoken's own educational trainer on
  the corpus below, then two tokens only a whole-piece lookup can produce.
- mini_vision_tokens.txt: a few Emu3-style vision special tokens, one per line.
- tiktoken_goldens.json: ids from `tiktoken.Encoding` built like BAAI's Emu3 tokenizer (Qwen's
  regex, NFC before encoding, specials numbered from 151643, allowed_special="all").
- hf_tokenizer.json + hf_goldens.json: the same ranks converted by transformers'
  TikTokenConverter (the Emu3-*-hf layout) with a few specials, and ids from the Python
  `tokenizers` library encoding with that file (add_special_tokens=False).
"""

import base64
import json
import random
import sys
import unicodedata
from pathlib import Path

import tiktoken
from tiktoken._educational import bpe_train
from tokenizers import Tokenizer, normalizers
from transformers.convert_slow_tokenizer import TikTokenConverter

HERE = Path(__file__).resolve().parent
PAT = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
SPECIAL_START_ID = 151643
BASE_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + [
    f"<|extra_{i}|>" for i in range(205)
]
VISION = ["<|image token|>", "<|image start|>", "<|image end|>"] + [
    f"<|visual token {i:06d}|>" for i in range(8)
]
HF_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + VISION[:5]

CORPUS = """
The quick brown fox jumps over the lazy dog. The dog sleeps; the fox runs away again and again.
A picture of a cat sitting on the mat, a picture of a dog in the garden, a photo of the sea.
It's what they're saying: we'll see, I'd say you've got it, I'm sure. Isn't it? They've gone.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 100 2024 3.14159 1,000,000 -7 +8 * 4 = 32.
Generate an image of a red apple on a wooden table. Describe the image in detail, please.
def encode(self, text):\n    return [self.vocab[t] for t in text.split()]\n\nif __name__ == "__main__":
Émilie a mangé une crème brûlée à Paris; naïve café déjà vu, señor niño, Straße über schön.
你好，世界！这是一个测试。图像生成与理解。我们的模型可以生成图像。
こんにちは世界。東京は大きい都市です。Привет, мир! Как дела? Всё хорошо.
Emoji: 🙂 🐱 🚀 ✨ — “quotes” ‘single’ … ellipsis, tabs\there, trailing spaces   \n\n\n
""" * 3


def tiktoken_ranks() -> dict[bytes, int]:
    ranks = bpe_train(CORPUS, 256 + 300, PAT, visualise=None)
    # Tokens that BPE merges never build: only tiktoken's whole-piece lookup yields them.
    for extra in [b" qzxv", b"Zyx"]:
        assert extra not in ranks
        ranks[extra] = len(ranks)
    return ranks


def hand_picked() -> list[str]:
    return [
        "",
        "Hello world",
        "The quick brown fox jumps over the lazy dog.",
        "It's I'M they'RE we'll YOU'VE he'd 'S",
        "1234567890 3.14159 1,000,000 -42",
        "line one\nline two\r\nline three\n\n\n  indented\n\t\ttabbed",
        "trailing spaces   ",
        "   leading spaces",
        "multiple     inner    spaces and\u00a0nbsp",
        "你好，世界！这是一个测试。",
        "こんにちは世界。Привет, мир!",
        "Emoji 🙂🐱🚀✨ and ZWJ 👩‍👩‍👧",
        "Decomposed e\u0301 and composed é; A\u030a vs Å; ﬁ ligature",
        "crème brûlée, naïve café, Straße",
        "a qzxv b Zyx c qzxvw",
        "<|endoftext|>",
        "Hello<|endoftext|>world<|im_start|>user\nhi<|im_end|>",
        "<|image start|>4*4<|image token|><|visual token 000001|><|visual token 000007|>"
        "<|extra_200|><|image end|>",
        "<|extra_0|><|extra_204|><|extra_205|> <|visual token 000008|>",
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n",
        "<|endoftext|><|endoftext|>  <|im_end|>\n\n",
        "<|image token|>",
        "<|image",
        "def f(x):\n    return x ** 2  # square\n",
        "!!!??? ... ---- ==== ++ ** // \\\\ ~~~",
        "\r\n\r\n",
        " \n \n ",
        "'s's's",
        "x\u0301\u0302\u0303 stacked marks",
        "\U0001f600" * 5,
        "中文English混合123数字",
    ]


def random_cases(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    pieces = (
        list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
        + list(" \t\n\r.,;:!?'\"()[]{}<>|/\\-_=+*&^%$#@~`")
        + list("éèêüöäßñçøåÉ\u0301\u0308中文图像世界こんにちはПриветмир🙂🐱🚀✨—“”…\u00a0\u3000")
        + ["the", " the", "dog", " fox", "'s", "'LL", "'re", "  ", "\n\n", "123", "image"]
        + BASE_SPECIALS[:4] + VISION[:4] + ["<|", "|>", "<|image", "token|>"]
    )
    return ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 24))) for _ in range(n)]


def tiktoken_encoding(ranks: dict[bytes, int]) -> tiktoken.Encoding:
    specials = {t: SPECIAL_START_ID + i for i, t in enumerate(BASE_SPECIALS + VISION)}
    return tiktoken.Encoding("emu3-mini", pat_str=PAT, mergeable_ranks=ranks, special_tokens=specials)


def tiktoken_case(enc: tiktoken.Encoding, text: str) -> dict:
    # BAAI's Emu3 tokenizer NFC-normalises the whole text, then encodes with every special allowed.
    ids = enc.encode(unicodedata.normalize("NFC", text), allowed_special="all")
    return {"text": text, "ids": ids, "decoded": enc.decode(ids)}


def big_files(out: Path) -> None:
    rng = random.Random(99)
    specials = set(BASE_SPECIALS + VISION)
    blob = "".join(random_cases(20000, seed=5) + [CORPUS]).encode()
    ranks = {bytes([i]): i for i in range(256)}
    tokens = list(ranks)
    while len(ranks) < SPECIAL_START_ID:
        if rng.random() < 0.5:
            at = rng.randrange(len(blob) - 16)
            tok = blob[at : at + rng.randint(2, 12)]
        else:
            tok = rng.choice(tokens[-5000:] if rng.random() < 0.5 else tokens) + rng.choice(tokens)
            if len(tok) > 16:
                continue
        if tok not in ranks and tok.decode("utf-8", "replace") not in specials:
            ranks[tok] = len(ranks)
            tokens.append(tok)
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"{base64.b64encode(tok).decode()} {rank}" for tok, rank in ranks.items()]
    (out / "emu3.tiktoken").write_text("\n".join(lines) + "\n")
    vision = VISION[:3] + [f"<|visual token {i:06d}|>" for i in range(32768)]
    (out / "emu3_vision_tokens.txt").write_text("\n".join(vision) + "\n")
    enc = tiktoken_encoding(ranks)
    cases = [tiktoken_case(enc, t) for t in random_cases(5000, seed=77) + hand_picked()]
    (out / "many_goldens.json").write_text(json.dumps({"cases": cases}, ensure_ascii=False))


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--big":
        big_files(Path(sys.argv[2]))
        return
    ranks = tiktoken_ranks()
    if len(sys.argv) == 4 and sys.argv[1] == "--many":
        enc = tiktoken_encoding(ranks)
        cases = [tiktoken_case(enc, t) for t in random_cases(int(sys.argv[2]), seed=12345)]
        Path(sys.argv[3]).write_text(json.dumps({"cases": cases}, ensure_ascii=False))
        return

    lines = [f"{base64.b64encode(tok).decode()} {rank}" for tok, rank in ranks.items()]
    (HERE / "mini.tiktoken").write_text("\n".join(lines) + "\n")
    (HERE / "mini_vision_tokens.txt").write_text("\n".join(VISION) + "\n")

    texts = hand_picked() + random_cases(40, seed=7)
    enc = tiktoken_encoding(ranks)
    goldens = {
        "special_start_id": SPECIAL_START_ID,
        "ranks": len(ranks),
        "cases": [tiktoken_case(enc, t) for t in texts],
    }
    (HERE / "tiktoken_goldens.json").write_text(one_case_a_line(goldens))

    converter = TikTokenConverter(
        vocab_file=str(HERE / "mini.tiktoken"), pattern=PAT, extra_special_tokens=HF_SPECIALS
    )
    hf = converter.converted()
    hf.normalizer = normalizers.NFC()  # as in Qwen2's and Emu3-*-hf's tokenizer.json
    hf.save(str(HERE / "hf_tokenizer.json"), pretty=False)
    hf = Tokenizer.from_file(str(HERE / "hf_tokenizer.json"))
    hf_cases = []
    for text in texts:
        ids = hf.encode(text, add_special_tokens=False).ids
        hf_cases.append({"text": text, "ids": ids})
    (HERE / "hf_goldens.json").write_text(one_case_a_line({"cases": hf_cases}))
    # The specials differ between the two, so only texts without any can be compared.
    same = [c["ids"] == g["ids"] for c, g in zip(hf_cases, goldens["cases"]) if "<|" not in c["text"]]
    print(f"{len(ranks)} ranks, {len(texts)} cases; HF file agrees with tiktoken on "
          f"{sum(same)}/{len(same)} texts without specials")


def one_case_a_line(obj: dict) -> str:
    head = {k: v for k, v in obj.items() if k != "cases"}
    cases = ",\n".join(json.dumps(c, ensure_ascii=False) for c in obj["cases"])
    head_json = json.dumps(head)[1:-1]
    return "{" + head_json + (", " if head else "") + '"cases": [\n' + cases + "\n]}\n"


if __name__ == "__main__":
    main()
