//! emu-train: data pipeline, optimizer, the training loop, checkpoints and distributed training.

pub mod checkpoint;
pub mod data;
pub mod ddp;
pub mod dist;
pub mod lm;
pub mod metrics;
pub mod optim;
pub mod parity;
pub mod vq_train;
