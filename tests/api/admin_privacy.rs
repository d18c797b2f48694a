//! The operations tool's data-protection commands against a real server process:
//! `export-tenant`, `erase-tenant`, `audit` and `retention`.

use opconnect::pki::Subject;

use crate::admin::admin;
use crate::helpers::*;

/// `export-tenant` writes one JSON object per item; `erase-tenant` prints the rows redacted;
/// `audit --json` lists both as JSON Lines, `audit` as a table; `retention` shows every class.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_erase_audit_and_retention_from_the_command_line() {
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
    let app = TestApp::attach(tempfile::tempdir().unwrap(), ca, addr, &database_url);
    app.create_carrier("contoso").await;
    app.provision("contoso", TENANT_A, &["+14255550100"]).await;
    app.ingest_calls(call_records("contoso", 0..3), 3).await;

    let out_file = d.join("a.jsonl");
    let (code, out, err) = admin(
        d,
        addr,
        &[
            "export-tenant",
            TENANT_A,
            "--out",
            out_file.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&out_file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let types: Vec<&str> = lines.iter().map(|l| l["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "number",
            "number_event",
            "call_record",
            "call_record",
            "call_record"
        ]
    );
    assert_eq!(lines[2]["record"]["callee_number"], "+12065550000");
    assert_eq!(lines[2]["carrier_id"], "contoso");

    let (code, out, err) = admin(d, addr, &["erase-tenant", TENANT_A, "--reason", "ticket 9"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("call records") && out.contains(" 3\n"),
        "{out}"
    );

    let (code, out, err) = admin(d, addr, &["audit", "--json", "--tenant", TENANT_A]);
    assert_eq!(code, 0, "{out}{err}");
    let actions: Vec<String> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("JSON line")["action"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        actions,
        ["ProvisionNumbers", "ExportTenantData", "EraseTenantData"]
    );
    let (code, out, err) = admin(
        d,
        addr,
        &["audit", "--carrier", "contoso", "--since", "2020-01-01"],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.starts_with("TIME") && out.contains("CreateCarrier"),
        "{out}"
    );

    let (code, out, err) = admin(d, addr, &["retention"]);
    assert_eq!(code, 0, "{out}{err}");
    for class in [
        "number_events",
        "call_records",
        "quality_records",
        "call_durations",
        "audit_events",
    ] {
        assert!(out.contains(class), "{out}");
    }
    assert!(out.contains("400 days") && out.contains("(never)"), "{out}");
    let _ = server.child.kill();
    let _ = server.child.wait();
}
