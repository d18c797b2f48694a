//! The operations tool against a real server process: imports, usage and reconciliation.

use std::process::Command;

use opconnect::pb::v1 as pb;
use opconnect::pb::v1::call_record_service_client::CallRecordServiceClient;
use opconnect::pki::Subject;

use crate::helpers::*;

/// Runs `opconnect admin ...` against `addr` with the platform certificate in `dir`.
pub(crate) fn admin(
    dir: &std::path::Path,
    addr: std::net::SocketAddr,
    args: &[&str],
) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_opconnect"))
        .arg("admin")
        .arg(format!("--endpoint=https://localhost:{}", addr.port()))
        .arg(format!("--cert={}", dir.join("ops.pem").display()))
        .arg(format!("--key={}", dir.join("ops.key").display()))
        .arg(format!("--ca={}", dir.join("ca.pem").display()))
        .args(args)
        .output()
        .expect("run admin");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Importing a CSV file with a bad line stores the good records, names the bad line and any
/// rejected record by line number, exits 1; importing it again stores nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_reports_bad_lines_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let ca = write_server_pki(dir.path());
    let database_url = fresh_database_url(dir.path()).await;
    let ops = ca
        .issue_client(&Subject::Platform("ops".into()), TRUST_DOMAIN)
        .unwrap();
    std::fs::write(dir.path().join("ops.pem"), &ops.cert_pem).unwrap();
    std::fs::write(dir.path().join("ops.key"), &ops.key_pem).unwrap();
    let mut server = spawn_server(dir.path(), &database_url);
    let addr = server.addr;
    let d = dir.path();

    let (code, out, err) = admin(
        d,
        addr,
        &[
            "create-carrier",
            "contoso",
            "--name",
            "Contoso",
            "--sip-domain",
            "sip.contoso.example",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");

    let mut csv = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/call_records.csv"
    ))
    .unwrap();
    let good_lines = csv.lines().count() - 1;
    // Line good_lines + 2: unreadable timestamp; + 3: a record the server rejects.
    csv.push_str("contoso,bad-1,,0b7c2a3e-9f7d-4c1e-8a2b-3d4e5f6a7b8c,oc_in,inbound,+14255550100,+14255550123,yesterday,,,,0,false,486,Busy,0,false,\n");
    csv.push_str("contoso,bad-2,,0b7c2a3e-9f7d-4c1e-8a2b-3d4e5f6a7b8c,oc_in,inbound,+14255550100,+14255550123,2026-11-27T10:00:00Z,,2026-11-27T10:01:00Z,,60,true,999,Odd,0,false,\n");
    let file = d.join("calls.csv");
    std::fs::write(&file, csv).unwrap();

    let (code, out, err) = admin(d, addr, &["import-call-records", file.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}{err}");
    let all = format!("{out}{err}");
    assert!(all.contains(&format!("line {}", good_lines + 2)), "{all}");
    assert!(all.contains(&format!("line {}", good_lines + 3)), "{all}");
    assert!(all.contains("final_sip_code"), "{all}");

    let carrier = ca
        .issue_client(&Subject::Carrier("contoso".into()), TRUST_DOMAIN)
        .unwrap();
    let channel = channel_to(addr, &ca.cert_pem(), Some(&carrier))
        .await
        .unwrap();
    let count = |channel: tonic::transport::Channel| async move {
        let mut stream = CallRecordServiceClient::new(channel)
            .stream_call_records(pb::StreamCallRecordsRequest {
                options: Some(stream_options(Some(0))),
            })
            .await
            .unwrap()
            .into_inner();
        let mut n = 0;
        while let Some(msg) = stream.message().await.unwrap() {
            n += msg.records.len();
        }
        n
    };
    // One fixture record belongs to fabrikam, which is not registered: rejected too.
    let stored = count(channel.clone()).await;
    assert!(stored >= 1 && stored <= good_lines, "{stored}");

    let (code, out, err) = admin(d, addr, &["import-call-records", file.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(count(channel).await, stored, "nothing stored twice");

    let (code, out, err) = admin(
        d,
        addr,
        &[
            "reconcile",
            "--carrier",
            "contoso",
            "--from",
            "2026-11-01",
            "--to",
            "2026-11-30",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("MISSING_CARRIER_RECORD"), "{out}");
    let (code, out, err) = admin(
        d,
        addr,
        &[
            "usage",
            "--tenant",
            "0b7c2a3e-9f7d-4c1e-8a2b-3d4e5f6a7b8c",
            "--from",
            "2026-11-01",
            "--to",
            "2026-11-30",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("TOTAL"), "{out}");
    server.child.kill().unwrap();
    let _ = server.child.wait();
}
