//! Properties of the VQ tokenizer: the fast image paths equal the reference's 4-frame paths,
//! decoding codes equals decoding the quantized latent, and bad inputs fail clearly.

use emu_tokenizer::checkpoint::Checkpoint;
use emu_tokenizer::vq::{VqConfig, VqModel, pad_frames};
use proptest::prelude::*;
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/fixtures/emu3-tiny")
}

fn vq() -> VqModel {
    VqModel::load(&fixture().join("original/vision_tokenizer"), Device::Cpu, Kind::Float).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, .. ProptestConfig::default() })]

    #[test]
    fn fast_image_paths_equal_the_four_frame_paths(b in 1i64..3, gh in 1i64..4, gw in 1i64..4, seed in 0i64..10_000) {
        let vq = &vq();
        tch::manual_seed(seed);
        let x = Tensor::rand([b, 3, gh * 8, gw * 8], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
        let fast = vq.encode_images(&x);
        let clip = vq.encode_images_clip(&x);
        prop_assert!(fast.equal(&clip), "codes differ: {fast:?} vs {clip:?}");
        let a = vq.decode_images(&fast);
        let c = vq.decode_images_clip(&fast);
        // Same arithmetic; libtorch's conv kernels just sum in a batch-size-dependent order (the
        // same clip decoded alone or in a batch of 4 differs by up to ~1e-4 too).
        let diff = (a - c).abs().max().double_value(&[]);
        prop_assert!(diff < 5e-4, "decoded images differ by {diff}");
    }

    #[test]
    fn decoding_codes_equals_decoding_the_quantized_latent(gh in 1i64..4, gw in 1i64..4, seed in 0i64..10_000) {
        let vq = &vq();
        tch::manual_seed(seed);
        let x = Tensor::rand([1, 3, gh * 8, gw * 8], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
        let codes = vq.encode_images(&x);
        // The quantized latent, built without codes: the nearest codebook vector of each latent.
        let z = vq.image_latents(&x);
        let zq = tch::no_grad(|| {
            let z = vq.quant_conv.forward(&z.permute([0, 2, 1, 3, 4])).permute([0, 2, 1, 3, 4]);
            let flat = z.permute([0, 1, 3, 4, 2]).reshape([-1, 4]);
            let d = flat.unsqueeze(1) - vq.quantize.embedding.weight.unsqueeze(0);
            let nearest = d.square().sum_dim_intlist(-1, false, Kind::Float).argmin(1, false);
            vq.quantize.embedding.weight.index_select(0, &nearest).reshape([1, 1, gh, gw, 4]).permute([0, 1, 4, 2, 3])
        });
        let from_latent = vq.decode_latents(&zq, true).squeeze_dim(1);
        let from_codes = vq.decode_images(&codes);
        let diff = (from_latent - from_codes).abs().max().double_value(&[]);
        prop_assert!(diff < 1e-5, "{diff}");
    }
}

#[test]
fn videos_need_a_multiple_of_four_frames_and_padding_provides_one() {
    let vq = &vq();
    let x = Tensor::rand([1, 6, 3, 16, 16], (Kind::Float, Device::Cpu));
    let e = format!("{:#}", vq.encode_video(&x).unwrap_err());
    assert!(e.contains("multiple of 4") && e.contains("got 6"), "{e}");
    let padded = pad_frames(&x, 4);
    assert_eq!(padded.size(), [1, 8, 3, 16, 16]);
    assert!(padded.select(1, 7).equal(&x.select(1, 5)));
    assert_eq!(vq.encode_video(&padded).unwrap().size(), [1, 2, 2, 2]);
}

#[test]
fn batches_larger_than_the_chunk_size_give_the_same_codes() {
    let mut vq =
        VqModel::load(&fixture().join("original/vision_tokenizer"), Device::Cpu, Kind::Float)
            .unwrap();
    let x = Tensor::rand([5, 3, 16, 16], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
    let whole = vq.encode_images(&x);
    vq.batch_size = 2;
    assert!(vq.encode_images(&x).equal(&whole));
}

#[test]
fn save_then_load_round_trips_in_the_original_layout() {
    let dir = tempfile::tempdir().unwrap();
    let vq = VqModel::new(VqConfig::tiny(), Device::Cpu, Kind::Float).unwrap();
    vq.save(dir.path()).unwrap();
    let back = VqModel::load(dir.path(), Device::Cpu, Kind::Float).unwrap();
    let ckpt = Checkpoint::open(dir.path()).unwrap();
    assert!(ckpt.names().all(|n| !n.starts_with("vqmodel.")));
    for (name, t) in vq.vs.variables() {
        assert!(t.equal(&back.vs.variables()[&name]), "{name}");
    }
}

fn rewrite(dir: &std::path::Path, edit: impl Fn(&mut Vec<(String, Tensor)>)) {
    let src = Checkpoint::open(&fixture().join("original/vision_tokenizer")).unwrap();
    let mut all: Vec<(String, Tensor)> =
        src.names().map(|n| (n.to_string(), src.tensor(n, Device::Cpu).unwrap())).collect();
    edit(&mut all);
    Tensor::write_safetensors(&all, dir.join("model.safetensors")).unwrap();
    std::fs::copy(fixture().join("original/vision_tokenizer/config.json"), dir.join("config.json"))
        .unwrap();
}

fn load_err(dir: &std::path::Path) -> String {
    match VqModel::load(dir, Device::Cpu, Kind::Float) {
        Ok(_) => panic!("loading should fail"),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn missing_extra_and_misshaped_tensors_are_named() {
    let dir = tempfile::tempdir().unwrap();
    rewrite(dir.path(), |all| all.retain(|(n, _)| n != "decoder.mid.attn_1.q.weight"));
    let e = load_err(dir.path());
    assert!(e.contains("missing") && e.contains("decoder.mid.attn_1.q.weight"), "{e}");

    let dir = tempfile::tempdir().unwrap();
    rewrite(dir.path(), |all| {
        all.push((
            "encoder.down.9.block.0.conv1.weight".into(),
            Tensor::ones([1], (Kind::Float, Device::Cpu)),
        ))
    });
    let e = load_err(dir.path());
    assert!(e.contains("unexpected") && e.contains("encoder.down.9.block.0.conv1.weight"), "{e}");

    let dir = tempfile::tempdir().unwrap();
    rewrite(dir.path(), |all| {
        for (n, t) in all.iter_mut() {
            if n == "quantize.embedding.weight" {
                *t = Tensor::ones([32, 4], (Kind::Float, Device::Cpu));
            }
        }
    });
    let e = load_err(dir.path());
    assert!(
        e.contains("quantize.embedding.weight") && e.contains("[32, 4]") && e.contains("[64, 4]"),
        "{e}"
    );
}
