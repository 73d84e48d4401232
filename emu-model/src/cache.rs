//! A preallocated key/value cache, one buffer pair per layer, for batches with left padding.
//!
//! Slots `[0, len)` are filled. `valid[b, j]` says whether slot j of row b holds a real token
//! (false for left padding), which gives both the attention's key mask and the RoPE positions
//! (`cumsum(valid) - 1`), so a left-padded row computes exactly what it would alone.
//!
//! Shapes: B batch, Hkv key/value heads, S capacity (max tokens), Dh head dim.

use tch::{Device, Kind, Tensor};

pub struct KvCache {
    /// Per layer, `[B,Hkv,S,Dh]`.
    pub(crate) k: Vec<Tensor>,
    pub(crate) v: Vec<Tensor>,
    /// `[B,S]` bool.
    pub(crate) valid: Tensor,
    /// `[B]` i64: how many real tokens each row has seen (the next position).
    pub(crate) next_pos: Tensor,
    pub(crate) len: i64,
    capacity: i64,
}

impl KvCache {
    pub fn new(
        layers: i64,
        batch: i64,
        kv_heads: i64,
        head_dim: i64,
        capacity: i64,
        kind: Kind,
        device: Device,
    ) -> Self {
        let buf = || Tensor::zeros([batch, kv_heads, capacity, head_dim], (kind, device));
        KvCache {
            k: (0..layers).map(|_| buf()).collect(),
            v: (0..layers).map(|_| buf()).collect(),
            valid: Tensor::zeros([batch, capacity], (Kind::Bool, device)),
            next_pos: Tensor::zeros([batch], (Kind::Int64, device)),
            len: 0,
            capacity,
        }
    }

    /// Tokens stored so far (padding included).
    pub fn len(&self) -> i64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> i64 {
        self.capacity
    }

    pub fn batch(&self) -> i64 {
        self.valid.size()[0]
    }

    /// Registers `l` new slots with their validity `[B,l]`; returns their RoPE positions `[B,l]`.
    pub(crate) fn reserve(&mut self, new_valid: &Tensor) -> Tensor {
        let l = new_valid.size()[1];
        assert!(
            self.len + l <= self.capacity,
            "KV cache full: {} + {l} tokens exceed its capacity of {}",
            self.len,
            self.capacity
        );
        self.valid.narrow(1, self.len, l).copy_(new_valid);
        let steps = new_valid.to_kind(Kind::Int64).cumsum(1, Kind::Int64);
        let positions = (&steps - 1 + self.next_pos.unsqueeze(1)).clamp_min(0);
        self.next_pos += steps.select(1, l - 1);
        positions
    }

    /// Stores layer `i`'s new keys/values `[B,Hkv,l,Dh]` at slots `[len, len+l)` and returns the
    /// filled prefix `[B,Hkv,len+l,Dh]` of each.
    pub(crate) fn store(&mut self, i: usize, k: &Tensor, v: &Tensor) -> (Tensor, Tensor) {
        let l = k.size()[2];
        self.k[i].narrow(2, self.len, l).copy_(k);
        self.v[i].narrow(2, self.len, l).copy_(v);
        (self.k[i].narrow(2, 0, self.len + l), self.v[i].narrow(2, 0, self.len + l))
    }

    /// Commits `l` slots after every layer has stored them.
    pub(crate) fn advance(&mut self, l: i64) {
        self.len += l;
    }

    /// Validity of the slots `[0, len)`: `[B,len]`.
    pub(crate) fn valid_prefix(&self, upto: i64) -> Tensor {
        self.valid.narrow(1, 0, upto)
    }

    /// Keeps only the given rows (e.g. finished sequences dropped), `rows: [B']` i64.
    pub fn select_rows(&mut self, rows: &Tensor) {
        for t in self.k.iter_mut().chain(self.v.iter_mut()) {
            *t = t.index_select(0, rows);
        }
        self.valid = self.valid.index_select(0, rows);
        self.next_pos = self.next_pos.index_select(0, rows);
    }
}
