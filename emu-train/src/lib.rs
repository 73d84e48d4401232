//! emu-train: data pipeline, optimizer, the training loop, checkpoints and distributed training.

pub mod checkpoint;
pub mod data;
pub mod ddp;
pub mod dist;
pub mod lm;
pub mod metrics;
pub mod optim;
pub mod parity;
pub mod pipeline;
pub mod plot;
pub mod presets;
pub mod summary;
pub mod toy;
pub mod vq_train;
