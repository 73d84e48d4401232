//! Helpers shared by the model's integration tests.

// Every test crate compiles this module and uses only some of it.
#![allow(dead_code)]

use emu_model::{Emu3Config, Emu3ForCausalLM};
use emu_tokenizer::vocab::{SpecialIds, VocabLayout};
use std::path::PathBuf;
use tch::{Device, Kind};

/// The tiny reference fixture (transformers' Emu3 code made it), loaded in f32.
pub fn fixture_lm() -> Emu3ForCausalLM {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/fixtures/emu3-tiny");
    Emu3ForCausalLM::load(&dir, Device::Cpu, Kind::Float).unwrap()
}

/// The tiny fixture's layout: visual tokens 336..400 (64 codes).
pub fn fixture_vocab() -> VocabLayout {
    let s = SpecialIds { bos: 1, eos: 2, pad: 0, eol: 328, eof: 332, img: 329, boi: 330, eoi: 331 };
    VocabLayout { special: s, visual_base: 336, codebook_size: 64, vocab_size: 400 }
}

/// A 2-layer tiny model seeded with `seed`, its matrices scaled far above the 0.02 init so that
/// attention patterns are far from uniform and a token attending where it should not would show.
pub fn sharp_tiny_model(seed: i64) -> Emu3ForCausalLM {
    tch::manual_seed(seed);
    let cfg = Emu3Config { num_hidden_layers: 2, ..Emu3Config::tiny() };
    let lm = Emu3ForCausalLM::new(&cfg, Device::Cpu, Kind::Float).unwrap();
    tch::no_grad(|| {
        for (_, mut t) in lm.vs.variables() {
            if t.dim() == 2 {
                let _ = t.f_mul_scalar_(10.0).unwrap();
            }
        }
    });
    lm
}
