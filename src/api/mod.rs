//! The gRPC services: thin translations between the wire and the domain, plus who may call.
//!
//! One file per service (`assignment`, `records`, `durations`, `platform`); the server-stream
//! engine (`stream`) and client-stream ingestion (`ingest`) they share; authorization (`auth`)
//! and page tokens (`page_token`); and the wire mapping, by what it maps (`wire`).

pub(crate) mod assignment;
mod audited;
mod auth;
pub(crate) mod durations;
mod export;
mod ingest;
mod limits;
mod page_token;
pub(crate) mod platform;
mod platform_audit;
mod privacy;
mod reconciliation;
pub(crate) mod records;
mod stream;
mod watch;
mod wire;

pub(crate) use auth::Authorizer;
pub(crate) use ingest::StreamBounds;
pub(crate) use limits::Limits;
pub(crate) use stream::Streams;
