//! Compiles the protos in `proto/` with protox (no system `protoc` needed) and
//! writes the descriptor set that reflection serves.

use prost::Message;

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
        .compile_fds(fds)?;
    Ok(())
}
