//! The Emu3 decoder: a Llama-style transformer (RMSNorm, RoPE, GQA attention, SwiGLU), fields
//! named like BAAI's checkpoint keys (`model.layers.N.self_attn.q_proj.weight`, `lm_head.weight`).
//!
//! Shapes: B batch, L new tokens, S keys (cache plus new), D hidden, H query heads, Hkv key/value
//! heads, Dh head dim, V vocabulary.

use crate::cache::KvCache;
use crate::config::Emu3Config;
use crate::layers::{Embedding, Linear, RmsNorm, Rope};
use crate::packing::{Packing, packed_layout};
use anyhow::Result;
use emu_tokenizer::nn::Params;
use tch::{Device, Kind, Tensor, nn::VarStore};

pub struct Attention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub o_proj: Linear,
    heads: i64,
    kv_heads: i64,
}

impl Attention {
    fn new(p: &Params<'_>, c: &Emu3Config) -> Self {
        let (d, dh, std) = (c.hidden_size, c.head_dim(), c.initializer_range);
        Attention {
            q_proj: Linear::new(&p.sub("q_proj"), d, c.num_attention_heads * dh, std),
            k_proj: Linear::new(&p.sub("k_proj"), d, c.num_key_value_heads * dh, std),
            v_proj: Linear::new(&p.sub("v_proj"), d, c.num_key_value_heads * dh, std),
            o_proj: Linear::new(&p.sub("o_proj"), c.num_attention_heads * dh, d, std),
            heads: c.num_attention_heads,
            kv_heads: c.num_key_value_heads,
        }
    }

    /// `x: [B,L,D]`; `mask: [B,1,L,S]` bool (true = attend) or None for plain causal attention.
    fn forward(
        &self,
        x: &Tensor,
        rope: (&Tensor, &Tensor),
        mask: Option<&Tensor>,
        cache: Option<(&mut KvCache, usize)>,
        dropout: f64,
    ) -> Tensor {
        let (b, l, d) = x.size3().expect("attention takes [B,L,D]");
        let split = |t: Tensor, h: i64| t.view([b, l, h, -1]).transpose(1, 2);
        let q = Rope::apply(&split(self.q_proj.forward(x), self.heads), rope.0, rope.1);
        let k = Rope::apply(&split(self.k_proj.forward(x), self.kv_heads), rope.0, rope.1);
        let v = split(self.v_proj.forward(x), self.kv_heads);
        let (k, v) = match cache {
            Some((cache, i)) => cache.store(i, &k, &v),
            None => (k, v),
        };
        let gqa = self.heads != self.kv_heads;
        let a = Tensor::scaled_dot_product_attention(
            &q,
            &k,
            &v,
            mask,
            dropout,
            mask.is_none(),
            None,
            gqa,
        );
        self.o_proj.forward(&a.transpose(1, 2).reshape([b, l, d]))
    }
}

pub struct Mlp {
    pub gate_proj: Linear,
    pub up_proj: Linear,
    pub down_proj: Linear,
}

impl Mlp {
    fn new(p: &Params<'_>, c: &Emu3Config) -> Self {
        let (d, f, std) = (c.hidden_size, c.intermediate_size, c.initializer_range);
        Mlp {
            gate_proj: Linear::new(&p.sub("gate_proj"), d, f, std),
            up_proj: Linear::new(&p.sub("up_proj"), d, f, std),
            down_proj: Linear::new(&p.sub("down_proj"), f, d, std),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        self.down_proj.forward(&(self.gate_proj.forward(x).silu() * self.up_proj.forward(x)))
    }
}

pub struct DecoderLayer {
    pub self_attn: Attention,
    pub mlp: Mlp,
    pub input_layernorm: RmsNorm,
    pub post_attention_layernorm: RmsNorm,
}

impl DecoderLayer {
    fn new(p: &Params<'_>, c: &Emu3Config) -> Self {
        DecoderLayer {
            self_attn: Attention::new(&p.sub("self_attn"), c),
            mlp: Mlp::new(&p.sub("mlp"), c),
            input_layernorm: RmsNorm::new(&p.sub("input_layernorm"), c.hidden_size, c.rms_norm_eps),
            post_attention_layernorm: RmsNorm::new(
                &p.sub("post_attention_layernorm"),
                c.hidden_size,
                c.rms_norm_eps,
            ),
        }
    }
}

/// `model.*`: embeddings, layers, final norm.
pub struct Emu3Model {
    pub embed_tokens: Embedding,
    pub layers: Vec<DecoderLayer>,
    pub norm: RmsNorm,
}

/// The language model with its head.
pub struct Emu3ForCausalLM {
    pub model: Emu3Model,
    pub lm_head: Linear,
    pub config: Emu3Config,
    /// Owns every parameter above.
    pub vs: VarStore,
    rope: Rope,
}

/// Where the keys come from in one forward pass.
enum Keys<'a> {
    /// The new tokens only; `mask` None means plain causal (no padding).
    Fresh {
        mask: Option<Tensor>,
    },
    Cached(&'a mut KvCache),
}

impl Emu3ForCausalLM {
    /// A randomly initialised model (normal(0, `initializer_range`) weights, unit norms) of `kind`
    /// on `device`.
    pub fn new(config: &Emu3Config, device: Device, kind: Kind) -> Result<Self> {
        config.validate()?;
        let vs = VarStore::new(device);
        let m = Self::build(&Params::new(&vs, kind), config);
        Ok(Emu3ForCausalLM { vs, ..m })
    }

    /// The model's structure (names and shapes) with no memory behind it: every parameter is a
    /// zero-stride view of one scalar. Only for inspecting the structure; it cannot run.
    pub fn shape_only(config: &Emu3Config) -> Self {
        let vs = VarStore::new(Device::Cpu);
        let m = Self::build(&Params::shape_only(&vs), config);
        Emu3ForCausalLM { vs, ..m }
    }

    fn build(p: &Params<'_>, config: &Emu3Config) -> Self {
        let c = config;
        let m = p.sub("model");
        Emu3ForCausalLM {
            model: Emu3Model {
                embed_tokens: Embedding::new(
                    &m.sub("embed_tokens"),
                    c.vocab_size,
                    c.hidden_size,
                    c.pad_token_id,
                    c.initializer_range,
                ),
                layers: (0..c.num_hidden_layers)
                    .map(|i| DecoderLayer::new(&m.sub("layers").sub(i), c))
                    .collect(),
                norm: RmsNorm::new(&m.sub("norm"), c.hidden_size, c.rms_norm_eps),
            },
            lm_head: Linear::new(
                &p.sub("lm_head"),
                c.hidden_size,
                c.vocab_size,
                c.initializer_range,
            ),
            config: config.clone(),
            vs: VarStore::new(Device::Cpu),
            rope: Rope::new(c.head_dim(), c.rope_theta, m.device()),
        }
    }

    fn check_ids(&self, ids: &Tensor) {
        assert!(ids.dim() == 2, "token ids must be [B,L], got {:?}", ids.size());
        if ids.numel() > 0 {
            let (lo, hi) = (ids.min().int64_value(&[]), ids.max().int64_value(&[]));
            let v = self.config.vocab_size;
            assert!(
                lo >= 0 && hi < v,
                "token ids must lie in [0, {v}), got values in [{lo}, {hi}]"
            );
        }
    }

    fn run(&self, ids: &Tensor, positions: &Tensor, mut keys: Keys<'_>, train: bool) -> Tensor {
        self.check_ids(ids);
        let p = if train { self.config.attention_dropout } else { 0.0 };
        let mut h = self.model.embed_tokens.forward(ids).dropout(p, train);
        let (cos, sin) = self.rope.cos_sin(positions, h.kind());
        let mask = match &mut keys {
            Keys::Fresh { mask } => mask.as_ref().map(|m| m.shallow_clone()),
            Keys::Cached(cache) => Some(cached_mask(cache, ids.size()[1])),
        };
        for (i, layer) in self.model.layers.iter().enumerate() {
            let cache = match &mut keys {
                Keys::Cached(c) => Some((&mut **c, i)),
                Keys::Fresh { .. } => None,
            };
            let a = layer.self_attn.forward(
                &layer.input_layernorm.forward(&h),
                (&cos, &sin),
                mask.as_ref(),
                cache,
                p,
            );
            // Out of place: `h` is saved for backward, so an in-place add would corrupt autograd.
            h = &h + a.dropout(p, train);
            let f = layer.mlp.forward(&layer.post_attention_layernorm.forward(&h));
            h = &h + f.dropout(p, train);
        }
        if let Keys::Cached(cache) = keys {
            cache.advance(ids.size()[1]);
        }
        self.model.norm.forward(&h)
    }

    /// Hidden states of unpadded sequences `[B,L] -> [B,L,D]` (positions 0..L, causal).
    pub fn hidden(&self, ids: &Tensor, train: bool) -> Tensor {
        let (b, l) = (ids.size()[0], ids.size()[1]);
        let pos = Tensor::arange(l, (Kind::Int64, ids.device())).unsqueeze(0).expand([b, l], false);
        self.run(ids, &pos, Keys::Fresh { mask: None }, train)
    }

    /// Hidden states of packed sequences `[B,L] -> [B,L,D]`: each `doc_start` token opens a
    /// document whose tokens attend only within it and count positions from 0 (and each of its
    /// turns, with `packing.turns`, only its prefix and itself), exactly as it would run alone at
    /// inference.
    pub fn hidden_packed(&self, ids: &Tensor, packing: Packing, train: bool) -> Tensor {
        let (positions, mask) = packed_layout(ids, packing);
        self.run(ids, &positions, Keys::Fresh { mask: Some(mask) }, train)
    }

    /// Logits of whole sequences, `[B,L] -> [B,L,V]`. With `attention_mask` (`[B,L]`, 1 for real
    /// tokens, 0 for left padding), padded rows compute what they would alone.
    pub fn forward(&self, ids: &Tensor, attention_mask: Option<&Tensor>) -> Tensor {
        let Some(am) = attention_mask else {
            return self.lm_head.forward(&self.hidden(ids, false));
        };
        let valid = am.to_kind(Kind::Bool);
        let l = ids.size()[1];
        let positions = (valid.to_kind(Kind::Int64).cumsum(1, Kind::Int64) - 1).clamp_min(0);
        let mask = key_mask(&valid, 0, l);
        self.lm_head.forward(&self.run(ids, &positions, Keys::Fresh { mask: Some(mask) }, false))
    }

    /// Appends `ids` (`[B,l]`, with `valid` `[B,l]` marking real tokens) to `cache` and returns
    /// the logits of the last new position, `[B,V]`.
    pub fn forward_cached(&self, ids: &Tensor, valid: &Tensor, cache: &mut KvCache) -> Tensor {
        assert_eq!(ids.size()[0], cache.batch(), "batch of ids and cache differ");
        let positions = cache.reserve(&valid.to_kind(Kind::Bool));
        let h = self.run(ids, &positions, Keys::Cached(cache), false);
        let l = h.size()[1];
        self.lm_head.forward(&h.narrow(1, l - 1, 1)).squeeze_dim(1)
    }

    /// Like [`forward_cached`](Self::forward_cached) but returns every new position's logits `[B,l,V]`.
    pub fn forward_cached_all(&self, ids: &Tensor, valid: &Tensor, cache: &mut KvCache) -> Tensor {
        let positions = cache.reserve(&valid.to_kind(Kind::Bool));
        self.lm_head.forward(&self.run(ids, &positions, Keys::Cached(cache), false))
    }

    /// An empty cache sized for this model.
    pub fn new_cache(&self, batch: i64, capacity: i64) -> KvCache {
        let c = &self.config;
        let w = &self.lm_head.weight;
        KvCache::new(
            c.num_hidden_layers,
            batch,
            c.num_key_value_heads,
            c.head_dim(),
            capacity,
            w.kind(),
            w.device(),
        )
    }
}

/// `[B,1,L,S]` bool: new token i (slot `start + i`) attends to earlier valid slots and to itself
/// (so a padding query still has one key and stays finite).
fn key_mask(valid: &Tensor, start: i64, l: i64) -> Tensor {
    let s = valid.size()[1];
    let dev = valid.device();
    let q = Tensor::arange_start(start, start + l, (Kind::Int64, dev)).view([l, 1]);
    let k = Tensor::arange(s, (Kind::Int64, dev)).view([1, s]);
    let causal = k.le_tensor(&q);
    let own = k.eq_tensor(&q);
    (valid.view([-1, 1, 1, s]).logical_or(&own)).logical_and(&causal)
}

fn cached_mask(cache: &KvCache, l: i64) -> Tensor {
    let start = cache.len();
    key_mask(&cache.valid_prefix(start + l), start, l)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_start_at_the_configured_initializer_range() {
        for std in [0.02, 0.1] {
            tch::manual_seed(0);
            let cfg = Emu3Config { initializer_range: std, ..Emu3Config::tiny() };
            let lm = Emu3ForCausalLM::new(&cfg, Device::Cpu, Kind::Float).unwrap();
            for (name, w) in lm.vs.variables() {
                if name.ends_with("norm.weight") {
                    let ones = w.eq(1.0).all().int64_value(&[]) == 1;
                    assert!(ones, "{name} must start at one everywhere");
                } else {
                    let got = w.std(true).double_value(&[]);
                    // The smallest matrix (a layer's k_proj, 32x64) puts the sample std within
                    // about 3% of the true one.
                    assert!((got / std - 1.0).abs() < 0.1, "{name}: std {got}, expected {std}");
                }
            }
        }
    }
}
