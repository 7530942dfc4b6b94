//! One client connection: the session state machine and local commands.

pub mod acl_admin;
pub mod confirm_order;
pub mod connection;
pub mod durability;
pub mod element_moves;
pub mod filter;
pub mod filter_valkey;
pub mod keyspace;
pub mod local;
pub mod mirrors;
pub mod moves;
pub mod multipop;
pub mod nodecall;
pub mod owed;
pub mod pause;
pub mod pubsub;
pub mod registry;
pub mod retry;
pub mod session;
pub mod sort;
pub mod stream_read;
pub mod subscribing;
pub mod transaction;
pub mod unblock;
