//! emu-eval: the built-in synthetic world, its detector, and the benchmark suite.
//!
//! The world is the default training data; the detector turns pixels back into scene objects so
//! that generation, understanding and video can be scored without downloaded weights.

pub mod bench;
pub mod world;
