//! SIGTERM on a real `opconnect serve` process with open watch streams.

use std::process::Command;
use std::time::Duration;

use opconnect::pb::v1 as pb;
use opconnect::pb::v1::assignment_service_client::AssignmentServiceClient;
use opconnect::pb::v1::platform_service_client::PlatformServiceClient;
use opconnect::pki::Subject;
use tonic::Code;

use crate::helpers::*;

/// SIGTERM with open watch streams: the streams end with UNAVAILABLE (a status, not a reset),
/// the process exits 0 within its grace period, and the database is intact on restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_streams_with_a_status_and_keeps_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let ca = write_server_pki(dir.path());
    let database_url = fresh_database_url(dir.path()).await;
    let platform_cert = ca
        .issue_client(&Subject::Platform("ops".into()), TRUST_DOMAIN)
        .unwrap();
    let carrier_cert = ca
        .issue_client(&Subject::Carrier("contoso".into()), TRUST_DOMAIN)
        .unwrap();

    let mut server = spawn_server(dir.path(), &database_url);
    let platform_channel = channel_to(server.addr, &ca.cert_pem(), Some(&platform_cert))
        .await
        .unwrap();
    let mut platform = PlatformServiceClient::new(platform_channel);
    platform
        .create_carrier(pb::CreateCarrierRequest {
            carrier_id: "contoso".into(),
            display_name: "Contoso".into(),
            sip_domain: "sip.contoso.example".into(),
        })
        .await
        .unwrap();
    platform
        .provision_numbers(provision_request("contoso", TENANT_A, &["+14255550100"]))
        .await
        .unwrap();

    let carrier_channel = channel_to(server.addr, &ca.cert_pem(), Some(&carrier_cert))
        .await
        .unwrap();
    let mut streams = Vec::new();
    for _ in 0..3 {
        let mut s = AssignmentServiceClient::new(carrier_channel.clone())
            .watch_numbers(pb::WatchNumbersRequest {
                include_snapshot: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        // Snapshot and its checkpoint: the stream is live.
        assert_eq!(s.message().await.unwrap().unwrap().events.len(), 1);
        assert!(s.message().await.unwrap().unwrap().checkpoint.is_some());
        streams.push(s);
    }

    let kill = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    for mut s in streams {
        let status = tokio::time::timeout(Duration::from_secs(5), s.message())
            .await
            .expect("stream ends within the grace period")
            .unwrap_err();
        assert_error(&status, Code::Unavailable, "SERVER_SHUTTING_DOWN");
    }
    let exit = wait_exit(&mut server.child, Duration::from_secs(10));
    assert!(exit.success(), "exit status {exit:?}");

    let mut restarted = spawn_server(dir.path(), &database_url);
    let carrier_channel = channel_to(restarted.addr, &ca.cert_pem(), Some(&carrier_cert))
        .await
        .unwrap();
    let number = AssignmentServiceClient::new(carrier_channel)
        .get_number(pb::GetNumberRequest {
            number: "+14255550100".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .telephone_number
        .unwrap();
    assert_eq!(number.revision, 1);
    restarted.child.kill().unwrap();
    let _ = restarted.child.wait();
}

/// A bad configuration is one clear line and exit code 2, never a panic.
#[test]
fn bad_configuration_is_one_line_and_exit_code_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_opconnect"))
        .args(["serve", "--tls-cert=/nonexistent/server.pem"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/server.pem"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let out = Command::new(env!("CARGO_BIN_EXE_opconnect"))
        .args(["serve", "--config=/nonexistent/opconnect.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
}
