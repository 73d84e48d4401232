//! Document-masked packing: each document packed into a training row computes exactly what it
//! computes alone, whatever precedes it in the row.

mod common;

use emu_model::Packing;
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
        let documents = Some(Packing::documents(BOS));
        let packed = tch::no_grad(|| lm.forward_train(&ids, &ids, None, documents, false, true))
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

const EOS: i64 = 2;
const EOI: i64 = 9;

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, .. ProptestConfig::default() })]

    #[test]
    fn each_turn_laid_out_alone_computes_what_it_computes_right_after_the_prefix(
        prefix_len in 1usize..6,
        turn_lens in prop::collection::vec(1usize..6, 1..4),
        seed in 0i64..1000,
    ) {
        let lm = common::sharp_tiny_model(11);
        tch::manual_seed(seed);
        // Body tokens avoid the markers, as a chat sample's text and codes do.
        let body = |n: usize| -> Vec<i64> {
            let t = Tensor::randint_low(10, 400, [n as i64], (Kind::Int64, Device::Cpu));
            Vec::<i64>::try_from(&t).unwrap()
        };
        let prefix = [vec![BOS], body(prefix_len), vec![EOI]].concat();
        let turns: Vec<Vec<i64>> =
            turn_lens.iter().map(|&n| [body(n), vec![EOS]].concat()).collect();
        // A generation document first, so the chat document does not open the row.
        let lead = [vec![BOS], body(3), vec![EOI, EOS]].concat();
        let row = [lead.clone(), prefix.clone(), turns.concat()].concat();
        let ids = Tensor::from_slice(&row).unsqueeze(0);
        let packing = Packing { doc_start: BOS, turns: Some((EOI, EOS)) };
        let packed = tch::no_grad(|| lm.forward_train(&ids, &ids, None, Some(packing), false, true))
            .logits
            .unwrap()
            .squeeze_dim(0);

        let mut start = (lead.len() + prefix.len()) as i64;
        for (k, turn) in turns.iter().enumerate() {
            let alone_ids = [prefix.clone(), turn.clone()].concat();
            let alone_ids = Tensor::from_slice(&alone_ids).unsqueeze(0);
            let alone = tch::no_grad(|| lm.forward(&alone_ids, None)).squeeze_dim(0);
            let n = turn.len() as i64;
            let want = alone.narrow(0, prefix.len() as i64, n);
            let diff = (&want - packed.narrow(0, start, n)).abs().max().double_value(&[]);
            prop_assert!(diff < 1e-4, "turn {k}: packed vs alone after the prefix: diff {diff}");
            start += n;
        }
    }
}
