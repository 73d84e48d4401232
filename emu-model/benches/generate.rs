//! Text-to-image generation throughput on the `small` preset: tokens/s with and without
//! classifier-free guidance (guidance doubles the rows of every forward pass).
//!
//! Shapes: one 8×8 grid per request (75 generated tokens with structure).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use emu_model::generate::{GenerateConfig, Request, SamplingConfig, Structure, generate};
use emu_model::{Emu3Config, Emu3ForCausalLM};
use emu_tokenizer::vocab::{SpecialIds, VocabLayout};
use tch::{Device, Kind};

fn bench(c: &mut Criterion) {
    tch::manual_seed(0);
    let cfg = Emu3Config { vocab_size: 1024, ..Emu3Config::small() };
    let lm = Emu3ForCausalLM::new(&cfg, Device::Cpu, Kind::Float).unwrap();
    let special = SpecialIds { bos: 1, eos: 2, pad: 0, eol: 3, eof: 4, img: 5, boi: 6, eoi: 7 };
    let vocab = VocabLayout { special, visual_base: 512, codebook_size: 512, vocab_size: 1024 };
    let st = Structure::image(8, 8);
    let prompt: Vec<i64> = (10..30).collect();
    let mut g = c.benchmark_group("t2i-small-8x8");
    g.sample_size(10);
    for batch in [1usize, 8] {
        let reqs: Vec<Request> = (0..batch)
            .map(|_| Request {
                prompt: prompt.clone(),
                negative: Some(vec![1, 6, 5]),
                structure: Some(st),
                structure_offset: 0,
                stop: None,
            })
            .collect();
        g.throughput(Throughput::Elements((batch as i64 * st.total_tokens()) as u64));
        for scale in [1.0, 3.0] {
            let gc = GenerateConfig {
                sampling: SamplingConfig { top_k_image: Some(64), ..Default::default() },
                cfg_scale: scale,
                seed: 0,
                max_new_tokens: 100,
                best_of: 1,
            };
            let name = format!("batch {batch}, {}", if scale == 1.0 { "no CFG" } else { "CFG 3" });
            g.bench_function(name, |b| {
                b.iter(|| generate(&lm, &vocab, &reqs, &gc, &mut |_| {}).unwrap())
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
