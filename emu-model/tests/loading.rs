//! Loading the language model: every layout, dtypes, the 8B structure, and bad checkpoints.

use emu_model::{Emu3Config, Emu3ForCausalLM, LmLayout};
use emu_tokenizer::checkpoint::Checkpoint;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/fixtures/emu3-tiny")
}

fn expected(name: &str) -> Tensor {
    Checkpoint::open(&fixture().join("expected.safetensors"))
        .unwrap()
        .tensor(name, Device::Cpu)
        .unwrap()
}

/// Writes the fixture's LM under other names into `dir` (config copied).
fn renamed_copy(dir: &Path, rename: impl Fn(&str) -> String) {
    let src = Checkpoint::open(&fixture().join("original/llm")).unwrap();
    let tensors: Vec<(String, Tensor)> =
        src.names().map(|n| (rename(n), src.tensor(n, Device::Cpu).unwrap())).collect();
    Tensor::write_safetensors(&tensors, dir.join("model.safetensors")).unwrap();
    std::fs::copy(fixture().join("original/llm/config.json"), dir.join("config.json")).unwrap();
}

#[test]
fn every_layout_loads_and_computes_the_same_logits() {
    let ids = expected("input_ids");
    let want = expected("logits");
    let cases: [(LmLayout, fn(&str) -> String); 3] = [
        (LmLayout::Original, |n| n.to_string()),
        (LmLayout::TransformersSaved, |n| match n.strip_prefix("model.") {
            Some(r) => format!("text_model.model.{r}"),
            None => format!("text_model.{n}"),
        }),
        (LmLayout::TransformersModel, |n| match n.strip_prefix("model.") {
            Some(r) => format!("model.text_model.{r}"),
            None => n.to_string(),
        }),
    ];
    for (layout, rename) in cases {
        let dir = tempfile::tempdir().unwrap();
        renamed_copy(dir.path(), rename);
        let ckpt = Checkpoint::open(dir.path()).unwrap();
        assert_eq!(LmLayout::detect(&ckpt).unwrap(), layout);
        let lm = Emu3ForCausalLM::load(dir.path(), Device::Cpu, Kind::Float).unwrap();
        let got = tch::no_grad(|| lm.forward(&ids, None));
        assert!(got.allclose(&want, 0.0, 1e-4, false), "{layout:?}");
    }
}

#[test]
fn sharded_checkpoints_load() {
    let dir = tempfile::tempdir().unwrap();
    let src = Checkpoint::open(&fixture().join("original/llm")).unwrap();
    let names: Vec<String> = src.names().map(str::to_string).collect();
    let mut map = serde_json::Map::new();
    for (i, chunk) in names.chunks(8).enumerate() {
        let file = format!("model-{:05}-of-00003.safetensors", i + 1);
        let t: Vec<(String, Tensor)> =
            chunk.iter().map(|n| (n.clone(), src.tensor(n, Device::Cpu).unwrap())).collect();
        Tensor::write_safetensors(&t, dir.path().join(&file)).unwrap();
        for n in chunk {
            map.insert(n.clone(), file.clone().into());
        }
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": map});
    std::fs::write(dir.path().join("model.safetensors.index.json"), index.to_string()).unwrap();
    std::fs::copy(fixture().join("original/llm/config.json"), dir.path().join("config.json"))
        .unwrap();
    let lm = Emu3ForCausalLM::load(dir.path(), Device::Cpu, Kind::Float).unwrap();
    let got = tch::no_grad(|| lm.forward(&expected("input_ids"), None));
    assert!(got.allclose(&expected("logits"), 0.0, 1e-4, false));
}

#[test]
fn loads_in_bf16_and_f16_with_the_dtype_we_ask_for() {
    let want = expected("logits");
    for kind in [Kind::BFloat16, Kind::Half] {
        let lm = Emu3ForCausalLM::load(&fixture(), Device::Cpu, kind).unwrap();
        assert!(lm.vs.variables().values().all(|t| t.kind() == kind));
        let got = tch::no_grad(|| lm.forward(&expected("input_ids"), None)).to_kind(Kind::Float);
        let err = (got - &want).abs().max().double_value(&[]);
        assert!(err < 0.1, "{kind:?}: max error {err}");
    }
}

#[test]
fn emu3_8b_preset_has_the_released_tensor_names_and_shapes() {
    let text = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/emu3-8b-tensors.json"),
    )
    .unwrap();
    let want: BTreeMap<String, Vec<i64>> = serde_json::from_str(&text).unwrap();
    let lm = Emu3ForCausalLM::shape_only(&Emu3Config::emu3_8b());
    let got: BTreeMap<String, Vec<i64>> =
        lm.vs.variables().iter().map(|(n, t)| (n.clone(), t.size())).collect();
    assert_eq!(got.len(), 291);
    assert_eq!(got, want);
    let params: i64 = got.values().map(|s| s.iter().product::<i64>()).sum();
    assert_eq!(params, Emu3Config::emu3_8b().num_parameters());
}

fn load_err(dir: &Path) -> String {
    match Emu3ForCausalLM::load(dir, Device::Cpu, Kind::Float) {
        Ok(_) => panic!("loading {} should fail", dir.display()),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn bad_checkpoints_get_errors_naming_the_tensor_or_field() {
    // Truncated file.
    let dir = tempfile::tempdir().unwrap();
    renamed_copy(dir.path(), str::to_string);
    let file = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() - 100]).unwrap();
    let e = load_err(dir.path());
    assert!(e.contains("model.safetensors") && e.contains("truncated"), "{e}");

    // Missing tensor.
    let dir = tempfile::tempdir().unwrap();
    renamed_copy(dir.path(), str::to_string);
    let src = Checkpoint::open(dir.path()).unwrap();
    let kept: Vec<(String, Tensor)> = src
        .names()
        .filter(|n| *n != "model.layers.1.mlp.up_proj.weight")
        .map(|n| (n.to_string(), src.tensor(n, Device::Cpu).unwrap()))
        .collect();
    drop(src);
    Tensor::write_safetensors(&kept, dir.path().join("model.safetensors")).unwrap();
    let e = load_err(dir.path());
    assert!(e.contains("missing") && e.contains("model.layers.1.mlp.up_proj.weight"), "{e}");

    // Wrong shape.
    let dir = tempfile::tempdir().unwrap();
    renamed_copy(dir.path(), str::to_string);
    let src = Checkpoint::open(dir.path()).unwrap();
    let mut all: Vec<(String, Tensor)> =
        src.names().map(|n| (n.to_string(), src.tensor(n, Device::Cpu).unwrap())).collect();
    drop(src);
    for (n, t) in all.iter_mut() {
        if n == "model.norm.weight" {
            *t = Tensor::ones([63], (Kind::Float, Device::Cpu));
        }
    }
    Tensor::write_safetensors(&all, dir.path().join("model.safetensors")).unwrap();
    let e = load_err(dir.path());
    assert!(e.contains("model.norm.weight") && e.contains("[63]") && e.contains("[64]"), "{e}");

    // A config that does not match the weights: one layer too many.
    let dir = tempfile::tempdir().unwrap();
    renamed_copy(dir.path(), str::to_string);
    let cfg = Emu3Config { num_hidden_layers: 3, ..Emu3Config::tiny() };
    std::fs::write(dir.path().join("config.json"), serde_json::to_string(&cfg).unwrap()).unwrap();
    let e = load_err(dir.path());
    assert!(
        e.contains("missing") && e.contains("model.layers.2.") && e.contains("config.json"),
        "{e}"
    );

    // A config that is itself invalid names the field.
    let dir = tempfile::tempdir().unwrap();
    renamed_copy(dir.path(), str::to_string);
    let cfg = Emu3Config { num_key_value_heads: 3, ..Emu3Config::tiny() };
    std::fs::write(dir.path().join("config.json"), serde_json::to_string(&cfg).unwrap()).unwrap();
    let e = load_err(dir.path());
    assert!(e.contains("num_key_value_heads") && e.contains("config.json"), "{e}");

    // Extra tensors of another model (a VQ) in the same file are fine; unknown LM tensors are not.
    let dir = tempfile::tempdir().unwrap();
    renamed_copy(dir.path(), str::to_string);
    let src = Checkpoint::open(dir.path()).unwrap();
    let mut all: Vec<(String, Tensor)> =
        src.names().map(|n| (n.to_string(), src.tensor(n, Device::Cpu).unwrap())).collect();
    drop(src);
    all.push((
        "model.layers.0.self_attn.rotary_emb.inv_freq".into(),
        Tensor::ones([8], (Kind::Float, Device::Cpu)),
    ));
    Tensor::write_safetensors(&all, dir.path().join("model.safetensors")).unwrap();
    let e = load_err(dir.path());
    assert!(e.contains("unexpected") && e.contains("rotary_emb.inv_freq"), "{e}");
}
