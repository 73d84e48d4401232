//! emu-train: data pipeline, optimizer, the training loop, checkpoints and distributed training.
