//! emu-model: the Emu3 decoder-only transformer on libtorch.
//!
//! It owns the model config, weight loading (every checkpoint layout), the KV cache, the
//! training objective, and the generation engine.

pub mod cache;
pub mod config;
pub mod extensions;
pub mod generate;
pub mod inspect;
pub mod layers;
pub mod layout;
pub mod model;
pub mod objective;
pub mod packing;
pub mod parity;
pub mod pipeline;

pub use cache::KvCache;
pub use config::Emu3Config;
pub use extensions::Extensions;
pub use layout::LmLayout;
pub use model::Emu3ForCausalLM;
pub use packing::Packing;
