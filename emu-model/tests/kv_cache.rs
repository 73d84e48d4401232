//! Incremental decoding through the KV cache equals the full masked forward, left padding included.

mod common;

use proptest::prelude::*;
use tch::{Device, Kind, Tensor};

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    #[test]
    fn cache_equals_full_forward(
        lens in prop::collection::vec(1i64..12, 1..4),
        chunks in prop::collection::vec(1i64..4, 12),
        seed in 0i64..1000,
    ) {
        let lm = common::sharp_tiny_model(7);
        tch::manual_seed(seed);
        let b = lens.len() as i64;
        let l = *lens.iter().max().unwrap();
        let ids = Tensor::randint_low(3, 400, [b, l], (Kind::Int64, Device::Cpu));
        // Row r has lens[r] real tokens on the right, padding (id 0) on the left.
        let mask = Tensor::stack(
            &lens.iter().map(|&n| Tensor::arange(l, (Kind::Int64, Device::Cpu)).ge(l - n)).collect::<Vec<_>>(),
            0,
        );
        let ids = ids.where_self(&mask, &ids.zeros_like());
        let full = tch::no_grad(|| lm.forward(&ids, Some(&mask)));

        let mut cache = lm.new_cache(b, l);
        let mut parts = Vec::new();
        let (mut start, mut k) = (0, 0);
        while start < l {
            let n = chunks[k % chunks.len()].min(l - start);
            let part = tch::no_grad(|| lm.forward_cached_all(&ids.narrow(1, start, n), &mask.narrow(1, start, n), &mut cache));
            parts.push(part);
            start += n;
            k += 1;
        }
        let incremental = Tensor::cat(&parts, 1);
        let m = mask.unsqueeze(-1).expand_as(&full);
        let diff = (&full - &incremental).abs().masked_select(&m).max().double_value(&[]);
        prop_assert!(diff < 1e-4, "cache vs full: max diff {diff}");

        // Each padded row computes what it computes alone.
        for (r, &n) in lens.iter().enumerate() {
            let row = ids.get(r as i64).narrow(0, l - n, n).unsqueeze(0);
            let alone = tch::no_grad(|| lm.forward(&row, None)).squeeze_dim(0);
            let padded = full.get(r as i64).narrow(0, l - n, n);
            let diff = (alone - padded).abs().max().double_value(&[]);
            prop_assert!(diff < 1e-4, "row {r}: padded vs alone: max diff {diff}");
        }
    }
}
