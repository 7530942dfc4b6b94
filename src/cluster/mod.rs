//! The slot map and how it stays true.

pub mod refresh;
pub mod slot;
pub mod topology;

pub use topology::{SlotMap, Topology};
