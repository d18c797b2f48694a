//! Wire mapping: protobuf messages to and from domain types, one file per thing mapped.

pub(crate) mod numbers;
pub(crate) mod records;
pub(crate) mod summary;
pub(crate) mod time;
pub(crate) mod usage;
