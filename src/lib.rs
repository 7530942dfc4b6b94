//! slotbridge: a Redis Cluster proxy that lets single-node clients use a
//! cluster. The request path, top to bottom: [`server`] accepts,
//! [`client::session`] reads and orders, [`command::route`] decides,
//! [`split`] splits, [`backend`] sends, [`merge`] merges, the session writes.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod acl;
pub mod admin;
pub mod backend;
pub mod client;
pub mod cluster;
pub mod colocate;
pub mod command;
pub mod config;
pub mod geo;
pub mod hll;
pub mod info;
pub mod introspection;
pub mod lcs;
pub mod merge;
pub mod metrics;
pub mod migrate;
pub mod monitor;
pub mod node_settings;
pub mod nodes;
pub mod protocol;
pub mod scripts;
pub mod server;
pub mod split;
pub mod tls;
pub mod tracking;
pub mod zset;
