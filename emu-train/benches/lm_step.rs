//! One training step of the `default` preset's transformer at its real shapes: forward,
//! next-token loss and backward over 16 packed rows of 256 tokens, each row three documents that
//! see only themselves. Variants differ in attention heads and MLP width only, so their ratios say
//! what those cost.
//!
//! Shapes: B = 16 rows, L = 256 tokens, V = 703 (the default run's vocabulary).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use emu_model::packing::Packing;
use emu_model::{Emu3Config, Emu3ForCausalLM};
use emu_train::presets::PipelineConfig;
use tch::{Device, Kind, Tensor};

fn bench(c: &mut Criterion) {
    let base = Emu3Config { vocab_size: 703, ..PipelineConfig::preset("default").unwrap().model };
    let (b, l) = (16, 256);
    let mut g = c.benchmark_group("lm-step-default");
    g.sample_size(10);
    g.throughput(Throughput::Elements((b * l) as u64));
    for (heads, kv, mlp) in [(4, 2, 344), (4, 4, 344), (8, 4, 344), (8, 8, 344), (8, 8, 240)] {
        tch::manual_seed(0);
        let cfg = Emu3Config {
            num_attention_heads: heads,
            num_key_value_heads: kv,
            intermediate_size: mlp,
            ..base.clone()
        };
        let lm = Emu3ForCausalLM::new(&cfg, Device::Cpu, Kind::Float).unwrap();
        let ids = Tensor::randint(cfg.vocab_size, [b, l], (Kind::Int64, Device::Cpu));
        // A document opens every 90 tokens or so, as text-to-image samples do in packed rows.
        for start in [0, 90, 180] {
            let _ = ids.narrow(1, start, 1).fill_(cfg.bos_token_id);
        }
        let packing = Some(Packing::documents(cfg.bos_token_id));
        g.bench_function(format!("{heads} heads, {kv} kv heads, MLP {mlp}"), |bench| {
            bench.iter(|| {
                let out = lm.forward_train(&ids, &ids, None, packing, true, false);
                out.loss.backward();
                lm.vs.variables().values_mut().for_each(|v| v.zero_grad());
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
