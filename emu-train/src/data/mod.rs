//! Training data: sources (the built-in world, image folders, video folders), pre-tokenisation
//! into sharded token files, packing, and the resumable loader.

pub mod pack;
pub mod provenance;
pub mod records;
pub mod shards;
pub mod tokenize;
