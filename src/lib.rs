//! opconnect: the gRPC gateway between the Teams Operator Connect platform and carriers.
//!
//! Crate map: `config` (settings), `telemetry` (logs), `pki` (certificates), `identity`
//! (client certificate → caller), `domain` (validated types and pure rules), `store` (sea-orm
//! persistence), `feed` (change notification), `api` (gRPC services), `server` (wiring),
//! `cli` (commands), `pb` (generated code).
#![forbid(unsafe_code)]

pub mod api;
pub mod cli;
pub mod config;
pub mod domain;
pub mod error;
pub mod feed;
pub mod identity;
pub mod metrics;
pub mod pb;
pub mod pki;
pub mod server;
pub mod store;
pub mod telemetry;
