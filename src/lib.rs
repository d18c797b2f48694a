//! opconnect: the gRPC gateway between the Teams Operator Connect platform and carriers.
//!
//! The public surface is what a user of the library needs: the generated protocol (`pb`), the
//! server (`server`, configured by `config`), retention (`retention`, over a [`Store`]
//! handle), certificates (`pki`), logging (`telemetry`), stream accounting (`metrics`) and the
//! command line (`cli`). Everything else is internal: `identity` (client certificate →
//! caller), `domain` (validated types and pure rules), `store` (sea-orm persistence), `feed`
//! (change notification), `wire` (protobuf ↔ domain, for the api and the stored encoding),
//! `api` (gRPC services), `error` (errors → `Status`), `rpc_log` (the per-RPC log line).
//! Carriers' own collectors use `client`: a resuming watcher, a committing record follower and
//! a safe duration uploader over mutual TLS.
#![forbid(unsafe_code)]

mod api;
mod audit;
pub mod cli;
pub mod client;
pub mod config;
mod domain;
mod error;
mod feed;
mod identity;
pub mod metrics;
pub mod pb;
pub mod pki;
pub mod retention;
mod rpc_log;
pub mod server;
mod store;
pub mod telemetry;
mod wire;

pub use store::{Store, StoreOptions};
