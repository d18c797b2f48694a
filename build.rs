//! Compiles the protos in `proto/` with protox (no system `protoc` needed) and
//! writes the descriptor set that reflection serves.
//!
//! Two passes: the ordinary one (every message, client and server), then the servers of the
//! RPCs whose streamed responses are framed from bytes encoded once (see
//! `src/api/framing.rs`), into `OUT_DIR/framed`, with those responses mapped to `Framed` and
//! every other type to the first pass's.

use prost::Message;

/// Services generated again with framed responses, and the responses framed.
const FRAMED_SERVICES: [&str; 2] = ["AssignmentService", "CallRecordService"];
const FRAMED_RESPONSES: [&str; 3] = [
    ".opconnect.v1.WatchNumbersResponse",
    ".opconnect.v1.StreamCallRecordsResponse",
    ".opconnect.v1.StreamQualityRecordsResponse",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let files = [
        "proto/opconnect/v1/numbers.proto",
        "proto/opconnect/v1/assignment_service.proto",
        "proto/opconnect/v1/platform_service.proto",
        "proto/opconnect/v1/records.proto",
        "proto/opconnect/v1/call_record_service.proto",
        "proto/opconnect/v1/call_duration_service.proto",
    ];
    let fds = protox::compile(files, ["proto"])?;
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("opconnect_descriptor.bin"),
        fds.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds.clone())?;

    let mut framed = fds;
    for file in &mut framed.file {
        file.service.retain(|s| FRAMED_SERVICES.contains(&s.name()));
    }
    let framed_dir = out_dir.join("framed");
    std::fs::create_dir_all(&framed_dir)?;
    let mut builder = tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .out_dir(&framed_dir)
        .codec_path("crate::api::framing::FramedCodec");
    for response in FRAMED_RESPONSES {
        builder = builder.extern_path(response, "crate::api::framing::Framed");
    }
    builder
        .extern_path(".opconnect.v1", "crate::pb::v1")
        .compile_fds(framed)?;
    Ok(())
}
