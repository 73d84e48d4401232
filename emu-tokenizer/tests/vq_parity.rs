//! The VQ tokenizer against transformers' reference outputs, in both checkpoint layouts.

use emu_tokenizer::parity::{Fixture, table, vq_checks};
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/fixtures").join(name)
}

#[test]
fn vq_matches_the_reference_in_both_layouts() {
    for name in ["emu3-tiny", "emu3-deep"] {
        let fx = Fixture::open(&fixture(name)).unwrap();
        let rows = vq_checks(&fx);
        println!("{name}:\n{}", table(&rows));
        assert_eq!(rows.len(), 10, "5 tensors in 2 layouts");
        assert!(rows.iter().all(|r| r.pass), "{name}: parity failures:\n{}", table(&rows));
    }
}
