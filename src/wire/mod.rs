//! Wire mapping: protobuf messages to and from domain types, one file per thing mapped. The
//! api translates requests and responses with it; the store encodes records with it.

pub(crate) mod numbers;
pub(crate) mod records;
pub(crate) mod summary;
pub(crate) mod time;
pub(crate) mod usage;
