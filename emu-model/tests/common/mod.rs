//! Helpers shared by the model's integration tests.

use emu_model::{Emu3Config, Emu3ForCausalLM};
use tch::{Device, Kind};

/// A 2-layer tiny model seeded with `seed`, its matrices scaled far above the 0.02 init so that
/// attention patterns are far from uniform and a token attending where it should not would show.
pub fn sharp_tiny_model(seed: i64) -> Emu3ForCausalLM {
    tch::manual_seed(seed);
    let cfg = Emu3Config { num_hidden_layers: 2, ..Emu3Config::tiny() };
    let lm = Emu3ForCausalLM::new(&cfg, Device::Cpu, Kind::Float).unwrap();
    tch::no_grad(|| {
        for (_, mut t) in lm.vs.variables() {
            if t.dim() == 2 {
                let _ = t.f_mul_scalar_(10.0).unwrap();
            }
        }
    });
    lm
}
