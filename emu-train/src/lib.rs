//! emu-train: data pipeline, optimizer, the training loop, checkpoints and distributed training.

pub mod data;
pub mod dist;
pub mod optim;
pub mod parity;
