//! emu-tokenizer: everything that turns pixels and text into Emu3 tokens and back.
//!
//! It owns the VQ vision tokenizer (encoder, quantizer, decoder; both checkpoint layouts), the
//! checkpoint reader every model uses, and the basic named-parameter layers.

pub mod checkpoint;
pub mod files;
pub mod image;
pub mod nn;
pub mod parity;
pub mod sequence;
pub mod text;
pub mod vocab;
pub mod vq;

pub use vq::{VqConfig, VqModel};
