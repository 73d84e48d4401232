//! The built-in synthetic world.
pub mod render;
pub mod scene;
