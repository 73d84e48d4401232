//! Document-masked packing: each document packed into a training row computes exactly what it
//! computes alone, whatever precedes it in the row.

mod common;

use proptest::prelude::*;
use tch::{Device, Kind, Tensor};

const BOS: i64 = 1;

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, .. ProptestConfig::default() })]

    #[test]
    fn packed_documents_compute_what_they_compute_alone(
        lens in prop::collection::vec(2usize..10, 2..5),
        seed in 0i64..1000,
    ) {
        let lm = common::sharp_tiny_model(11);
        tch::manual_seed(seed);
        let docs: Vec<Vec<i64>> = lens
            .iter()
            .map(|&n| {
                let body = Tensor::randint_low(3, 400, [n as i64 - 1], (Kind::Int64, Device::Cpu));
                [vec![BOS], Vec::<i64>::try_from(&body).unwrap()].concat()
            })
            .collect();
        let row: Vec<i64> = docs.concat();
        let ids = Tensor::from_slice(&row).unsqueeze(0);
        let packed = tch::no_grad(|| lm.forward_train(&ids, &ids, None, Some(BOS), false, true))
            .logits
            .unwrap()
            .squeeze_dim(0);
        let causal = tch::no_grad(|| lm.forward(&ids, None)).squeeze_dim(0);

        let mut start = 0i64;
        for (d, doc) in docs.iter().enumerate() {
            let n = doc.len() as i64;
            let alone = tch::no_grad(|| lm.forward(&Tensor::from_slice(doc).unsqueeze(0), None))
                .squeeze_dim(0);
            let diff = (&alone - packed.narrow(0, start, n)).abs().max().double_value(&[]);
            prop_assert!(diff < 1e-4, "document {d}: packed vs alone: max diff {diff}");
            if d > 0 {
                // Without the document mask a later document sees the earlier ones.
                let leak = (&alone - causal.narrow(0, start, n)).abs().max().double_value(&[]);
                prop_assert!(leak > 1e-3, "document {d}: plain causal equals alone ({leak})");
            }
            start += n;
        }
    }
}
