//! Every check of both fixtures passes, in every layout, optimizer steps included.

use std::path::PathBuf;

#[test]
fn both_fixtures_pass_every_check() {
    for name in ["emu3-tiny", "emu3-deep"] {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/fixtures").join(name);
        let report = emu_train::parity::run(&dir).unwrap();
        println!("{name}:\n{}", emu_tokenizer::parity::table(&report.rows));
        // 5 VQ and 5 LM tensors per layout, plus the losses and the parameters after the steps.
        assert_eq!(report.rows.len(), 2 * (5 + 5 + 2), "{name}");
        assert!(report.passed, "{name}:\n{}", emu_tokenizer::parity::table(&report.rows));
    }
}

#[test]
fn a_fixture_whose_weights_differ_fails_loudly() {
    // The shared fixture as it came: its original/llm held the weights *after* the AdamW steps.
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/fixtures/emu3-tiny");
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "model.safetensors", "expected.safetensors", "fixture.json"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    std::fs::create_dir_all(dir.path().join("original/llm")).unwrap();
    std::fs::copy(
        src.join("original/llm/config.json"),
        dir.path().join("original/llm/config.json"),
    )
    .unwrap();
    std::fs::copy(
        src.join("adamw_5_steps/model.safetensors"),
        dir.path().join("original/llm/model.safetensors"),
    )
    .unwrap();
    let report = emu_train::parity::run(dir.path()).unwrap();
    assert!(!report.passed);
    let logits =
        report.rows.iter().find(|r| r.layout == "original" && r.tensor == "logits").unwrap();
    assert!(!logits.pass && logits.max_abs_diff > 1e-2, "{logits:?}");
    assert!(report.rows.iter().filter(|r| r.layout == "transformers").all(|r| r.pass));
}
