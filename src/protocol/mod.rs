//! RESP wire handling: client request parsing, reply framing and encoding.

pub mod reply;
pub mod request;
pub mod scan;

pub use reply::Proto;
