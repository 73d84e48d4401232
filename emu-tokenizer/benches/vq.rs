//! VQ encode/decode throughput: the fast image paths against the reference's 4-frame paths.
//!
//! Shapes: B images of 3×H×W.

use criterion::{Criterion, criterion_group, criterion_main};
use emu_tokenizer::vq::{VqConfig, VqModel};
use tch::{Device, Kind, Tensor};

fn bench(c: &mut Criterion) {
    tch::manual_seed(0);
    for (name, cfg, size) in [("tiny", VqConfig::tiny(), 64), ("small", VqConfig::small(), 64)] {
        let vq = VqModel::new(cfg, Device::Cpu, Kind::Float).unwrap();
        let x = Tensor::rand([4, 3, size, size], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
        let codes = vq.encode_images(&x);
        let mut g = c.benchmark_group(format!("vq-{name}-4x{size}px"));
        g.sample_size(10);
        g.bench_function("encode_images (fast)", |b| b.iter(|| vq.encode_images(&x)));
        g.bench_function("encode_images_clip (4 frames)", |b| b.iter(|| vq.encode_images_clip(&x)));
        g.bench_function("decode_images (fast)", |b| b.iter(|| vq.decode_images(&codes)));
        g.bench_function("decode_images_clip (4 frames)", |b| {
            b.iter(|| vq.decode_images_clip(&codes))
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
