//! Structural constraints for image and video generation, as an O(1)-per-step state machine.
//!
//! After `<image token>`, every frame is h rows of (w visual codes, EOL) and then EOF; after the
//! last frame come `<image end>` and EOS, then only padding. The reference recomputes its offset
//! by searching the whole sequence each step; here a counter does it.
//!
//! Shapes: V vocabulary; h/w code grid, t frames.

use emu_tokenizer::vocab::VocabLayout;
use tch::Tensor;

/// The grid to generate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Structure {
    pub h: i64,
    pub w: i64,
    pub frames: i64,
}

impl Structure {
    pub fn image(h: i64, w: i64) -> Self {
        Structure { h, w, frames: 1 }
    }

    /// Tokens of one frame: h rows of w codes and EOL, then EOF.
    pub fn per_frame(&self) -> i64 {
        self.h * (self.w + 1) + 1
    }

    /// Tokens from after `<image token>` to EOS inclusive.
    pub fn total_tokens(&self) -> i64 {
        self.frames * self.per_frame() + 2
    }
}

/// What may come next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Allowed {
    /// Any visual code.
    Visual,
    /// Exactly this token.
    Token(i64),
}

/// Position inside one row's grid.
#[derive(Clone, Debug)]
pub struct GridConstraint {
    pub structure: Structure,
    /// Tokens emitted after `<image token>` so far.
    offset: i64,
    eol: i64,
    eof: i64,
    eoi: i64,
    eos: i64,
    pad: i64,
}

impl GridConstraint {
    /// `offset`: tokens of the body already present in the prompt (continuation), else 0.
    pub fn new(structure: Structure, vocab: &VocabLayout, offset: i64) -> Self {
        let s = &vocab.special;
        GridConstraint {
            structure,
            offset,
            eol: s.eol,
            eof: s.eof,
            eoi: s.eoi,
            eos: s.eos,
            pad: s.pad,
        }
    }

    pub fn offset(&self) -> i64 {
        self.offset
    }

    pub fn allowed(&self) -> Allowed {
        let st = &self.structure;
        let body = st.frames * st.per_frame();
        let o = self.offset;
        if o < body {
            let f = o % st.per_frame();
            if f == st.per_frame() - 1 {
                Allowed::Token(self.eof)
            } else if f % (st.w + 1) == st.w {
                Allowed::Token(self.eol)
            } else {
                Allowed::Visual
            }
        } else if o == body {
            Allowed::Token(self.eoi)
        } else if o == body + 1 {
            Allowed::Token(self.eos)
        } else {
            Allowed::Token(self.pad)
        }
    }

    /// Inside the code grid (so the image top-k applies).
    pub fn in_grid(&self) -> bool {
        self.offset < self.structure.frames * self.structure.per_frame()
    }

    /// Frame and row of the token just emitted, if it closed a row (it was an EOL).
    pub fn closed_row(&self) -> Option<(i64, i64)> {
        let st = &self.structure;
        let o = self.offset - 1;
        if o < 0 || o >= st.frames * st.per_frame() {
            return None;
        }
        let f = o % st.per_frame();
        (f != st.per_frame() - 1 && f % (st.w + 1) == st.w)
            .then(|| (o / st.per_frame(), f / (st.w + 1)))
    }

    pub fn advance(&mut self) {
        self.offset += 1;
    }

    /// Sets every forbidden entry of `logits` (`[V]`) to -inf.
    pub fn apply(&self, logits: &mut Tensor, vocab: &VocabLayout) {
        let v = logits.size()[0];
        match self.allowed() {
            Allowed::Visual => {
                let (lo, hi) = (vocab.visual_base, vocab.visual_base + vocab.codebook_size);
                let _ = logits.narrow(0, 0, lo).fill_(f64::NEG_INFINITY);
                let _ = logits.narrow(0, hi, v - hi).fill_(f64::NEG_INFINITY);
            }
            Allowed::Token(t) => {
                let keep = logits.double_value(&[t]);
                let _ = logits.fill_(f64::NEG_INFINITY);
                // A finite value even where the model said -inf, so sampling stays defined.
                let _ = logits.narrow(0, t, 1).fill_(if keep.is_finite() { keep } else { 0.0 });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use emu_tokenizer::sequence::parse_grid;
    use emu_tokenizer::vocab::SpecialIds;
    use proptest::prelude::*;
    use tch::{Device, Kind};

    fn vocab() -> VocabLayout {
        let s = SpecialIds { bos: 1, eos: 2, pad: 0, eol: 3, eof: 4, img: 5, boi: 6, eoi: 7 };
        VocabLayout { special: s, visual_base: 20, codebook_size: 16, vocab_size: 40 }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

        #[test]
        fn any_logits_yield_a_valid_grid(h in 1i64..5, w in 1i64..5, frames in 1i64..3, seed in 0i64..100_000) {
            tch::manual_seed(seed);
            let v = vocab();
            let st = Structure { h, w, frames };
            let mut c = GridConstraint::new(st, &v, 0);
            let mut out = Vec::new();
            for _ in 0..st.total_tokens() + 3 {
                // Random logits, with -inf sprinkled in, even on the tokens the grid needs.
                let mut l = Tensor::randn([40], (Kind::Float, Device::Cpu)) * 10.0;
                let holes = Tensor::rand([40], (Kind::Float, Device::Cpu)).lt(0.3);
                l = l.masked_fill(&holes, f64::NEG_INFINITY);
                c.apply(&mut l, &v);
                let t = l.argmax(0, false).int64_value(&[]);
                out.push(t);
                c.advance();
            }
            let n = st.total_tokens() as usize;
            let grid = parse_grid(&v, &out, h, w, frames).unwrap();
            prop_assert_eq!(grid.len() as i64, frames);
            prop_assert_eq!(out[n - 2], v.special.eoi);
            prop_assert_eq!(out[n - 1], v.special.eos);
            prop_assert!(out[n..].iter().all(|&t| t == v.special.pad));
        }
    }

    #[test]
    fn rows_close_where_the_grid_says() {
        let v = vocab();
        let mut c = GridConstraint::new(Structure::image(2, 2), &v, 0);
        let mut closed = Vec::new();
        for _ in 0..8 {
            c.advance();
            closed.push(c.closed_row());
        }
        assert_eq!(closed[2], Some((0, 0)));
        assert_eq!(closed[5], Some((0, 1)));
        assert_eq!(closed.iter().flatten().count(), 2);
    }
}
