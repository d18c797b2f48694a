//! Integration tests: a real gateway on 127.0.0.1 port 0, real mutual TLS with certificates
//! made for each test, a real SQLite database in a temporary directory.

mod helpers;

mod admin;
mod admin_privacy;
mod audit;
mod client;
mod collation;
mod contention;
mod durations;
mod erasure;
mod fanout;
mod identity;
mod limits;
mod metrics;
mod multi;
mod numbers;
mod operations;
mod records;
mod retention;
mod rotation;
mod shutdown;
mod streams;
mod tls;
mod upgrade;
mod watch;
