//! Language-model throughput: prefill tokens/s and per-token decode tokens/s with the KV cache.
//!
//! Shapes: B = 1, P prompt tokens.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use emu_model::{Emu3Config, Emu3ForCausalLM};
use tch::{Device, Kind, Tensor};

fn bench(c: &mut Criterion) {
    tch::manual_seed(0);
    for (name, cfg) in [
        ("tiny", Emu3Config::tiny()),
        ("small", Emu3Config { vocab_size: 2048, ..Emu3Config::small() }),
    ] {
        let lm = Emu3ForCausalLM::new(&cfg, Device::Cpu, Kind::Float).unwrap();
        let p = 128;
        let prompt = Tensor::randint(cfg.vocab_size, [1, p], (Kind::Int64, Device::Cpu));
        let mut g = c.benchmark_group(format!("lm-{name}"));
        g.sample_size(10);
        g.throughput(Throughput::Elements(p as u64));
        g.bench_function("prefill 128 tokens", |b| {
            b.iter(|| {
                let mut cache = lm.new_cache(1, p);
                tch::no_grad(|| lm.forward_cached(&prompt, &prompt.ones_like(), &mut cache))
            })
        });
        let n = 32;
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function("decode 32 tokens after 128", |b| {
            b.iter(|| {
                let mut cache = lm.new_cache(1, p + n);
                let mut logits =
                    tch::no_grad(|| lm.forward_cached(&prompt, &prompt.ones_like(), &mut cache));
                for _ in 0..n {
                    let next = logits.argmax(-1, true);
                    logits =
                        tch::no_grad(|| lm.forward_cached(&next, &next.ones_like(), &mut cache));
                }
                logits
            })
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
