//! The built-in synthetic world.
pub mod accuracy;
pub mod degrade;
pub mod detect;
pub mod render;
pub mod scene;
pub mod video;
