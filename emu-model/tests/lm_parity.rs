//! The language model against transformers' reference outputs, in every layout a fixture ships.

use emu_model::parity::lm_checks;
use emu_tokenizer::parity::{Fixture, table};
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/fixtures").join(name)
}

#[test]
fn lm_matches_the_reference_in_every_layout() {
    for name in ["emu3-tiny", "emu3-deep"] {
        let fx = Fixture::open(&fixture(name)).unwrap();
        let rows = lm_checks(&fx);
        println!("{name}:\n{}", table(&rows));
        assert_eq!(rows.len(), 10, "5 tensors in 2 layouts");
        assert!(rows.iter().all(|r| r.pass), "{name}: parity failures:\n{}", table(&rows));
    }
}
