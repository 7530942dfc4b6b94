//! One client connection: the session state machine and local commands.

pub mod local;
pub mod session;
