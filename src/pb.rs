//! Code generated from `proto/opconnect/v1` and the descriptor set reflection serves.
#![allow(missing_docs, clippy::all, clippy::pedantic)]

/// Package `opconnect.v1`.
pub mod v1 {
    tonic::include_proto!("opconnect.v1");
}

/// Encoded `FileDescriptorSet` of the opconnect protos and their imports.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/opconnect_descriptor.bin"));
