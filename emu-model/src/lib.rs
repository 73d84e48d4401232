//! emu-model: the Emu3 decoder-only transformer on libtorch.
//!
//! It owns the model config, weight loading (both checkpoint layouts), the KV cache, and the
//! generation engine (sampling, classifier-free guidance, structural constraints).
