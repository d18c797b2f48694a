//! The gRPC services: thin translations between the wire and the domain, plus who may call.
//!
//! One file per service (`assignment`, `records`, `durations`, `platform`); the server-stream
//! engine (`stream`), the carriers' shared tails (`tail`), responses framed from encoded bytes
//! (`framing`) and client-stream ingestion (`ingest`) they share; authorization (`auth`) and
//! page tokens (`page_token`). The wire mapping is in `crate::wire`.

pub(crate) mod assignment;
mod audited;
mod auth;
pub(crate) mod durations;
mod export;
pub(crate) mod framing;
mod ingest;
mod limits;
mod page_token;
pub(crate) mod platform;
mod platform_audit;
mod privacy;
mod reconciliation;
pub(crate) mod records;
mod stream;
mod tail;
mod watch;

pub(crate) use auth::Authorizer;
pub(crate) use ingest::StreamBounds;
pub(crate) use limits::Limits;
pub(crate) use stream::Streams;
