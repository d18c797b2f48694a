//! Who may connect and call what: mutual TLS, SPIFFE identities, carrier registry, roles.

use opconnect::pb::v1 as pb;
use opconnect::pb::v1::assignment_service_client::AssignmentServiceClient;
use opconnect::pb::v1::platform_service_client::PlatformServiceClient;
use opconnect::pki::{CertificateAuthority, Subject};
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::helpers::*;

/// A call that must fail below gRPC: the server refuses the TLS handshake.
async fn assert_handshake_refused(app: &TestApp, client: Option<&opconnect::pki::Issued>) {
    let result = match channel_to(app.addr, &app.ca.cert_pem(), client).await {
        Err(_) => return,
        Ok(channel) => {
            AssignmentServiceClient::new(channel)
                .get_number(pb::GetNumberRequest {
                    number: "+14255550100".into(),
                })
                .await
        }
    };
    let status = result.expect_err("the call must fail");
    // No gRPC status from the application: the connection itself was refused.
    assert!(
        matches!(
            status.code(),
            Code::Unavailable | Code::Unknown | Code::Internal
        ),
        "{status:?}"
    );
    assert_eq!(reason(&status), "");
}

/// Without a client certificate the handshake fails.
#[tokio::test]
async fn no_client_certificate_fails_the_handshake() {
    let app = spawn_app().await;
    assert_handshake_refused(&app, None).await;
}

/// A client certificate from another CA fails the handshake, even with a valid identity.
#[tokio::test]
async fn certificate_from_another_ca_fails_the_handshake() {
    let app = spawn_app().await;
    app.create_carrier("contoso").await;
    let rogue = CertificateAuthority::generate("rogue CA").unwrap();
    let cert = rogue
        .issue_client(&Subject::Carrier("contoso".into()), TRUST_DOMAIN)
        .unwrap();
    assert_handshake_refused(&app, Some(&cert)).await;
}

/// A certificate without a SPIFFE URI, or of another trust domain, is UNAUTHENTICATED on
/// every service, reflection and health included.
#[tokio::test]
async fn certificate_without_usable_identity_is_unauthenticated() {
    let app = spawn_app().await;
    app.create_carrier("contoso").await;
    let cases = [
        app.ca.issue_client_with_uris("no-san", &[]).unwrap(),
        app.ca
            .issue_client_with_uris("web", &["https://contoso.example/".into()])
            .unwrap(),
        app.ca
            .issue_client(&Subject::Carrier("contoso".into()), "other-domain")
            .unwrap(),
        app.ca
            .issue_client_with_uris("weird", &["spiffe://opconnect/robot/contoso".into()])
            .unwrap(),
        app.ca
            .issue_client_with_uris(
                "two",
                &[
                    "spiffe://opconnect/carrier/contoso".into(),
                    "spiffe://opconnect/platform/ops".into(),
                ],
            )
            .unwrap(),
    ];
    for cert in &cases {
        let channel = app.channel(cert).await;
        let status = AssignmentServiceClient::new(channel.clone())
            .get_number(pb::GetNumberRequest {
                number: "+14255550100".into(),
            })
            .await
            .unwrap_err();
        assert_error(&status, Code::Unauthenticated, "IDENTITY_MISSING");
        let status = HealthClient::new(channel)
            .check(HealthCheckRequest::default())
            .await
            .unwrap_err();
        assert_error(&status, Code::Unauthenticated, "IDENTITY_MISSING");
    }
}

/// Health answers any valid identity, carrier or platform.
#[tokio::test]
async fn health_serves_any_valid_identity() {
    let app = spawn_app().await;
    let channel = app.channel(&app.carrier_cert("unregistered")).await;
    let reply = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: "opconnect.v1.AssignmentService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.status, 1, "SERVING");
}

/// An unknown carrier and a suspended one are PERMISSION_DENIED with distinct reasons; a
/// reactivated carrier is let in again.
#[tokio::test]
async fn unknown_and_suspended_carriers_are_denied() {
    let app = spawn_app().await;
    let get = pb::GetNumberRequest {
        number: "+14255550100".into(),
    };
    let status = app
        .carrier("globex")
        .await
        .get_number(get.clone())
        .await
        .unwrap_err();
    assert_error(&status, Code::PermissionDenied, "CARRIER_UNKNOWN");

    app.create_carrier("contoso").await;
    let mut platform = app.platform().await;
    platform
        .set_carrier_status(pb::SetCarrierStatusRequest {
            carrier_id: "contoso".into(),
            status: pb::CarrierStatus::Suspended as i32,
        })
        .await
        .unwrap();
    let mut contoso = app.carrier("contoso").await;
    let status = contoso.get_number(get.clone()).await.unwrap_err();
    assert_error(&status, Code::PermissionDenied, "CARRIER_SUSPENDED");

    platform
        .set_carrier_status(pb::SetCarrierStatusRequest {
            carrier_id: "contoso".into(),
            status: pb::CarrierStatus::Active as i32,
        })
        .await
        .unwrap();
    let status = contoso.get_number(get).await.unwrap_err();
    assert_error(&status, Code::NotFound, "NUMBER_NOT_FOUND");
}

/// A carrier cannot call PlatformService and the platform cannot call AssignmentService.
#[tokio::test]
async fn wrong_role_is_denied() {
    let app = spawn_app().await;
    app.create_carrier("contoso").await;
    let channel = app.channel(&app.carrier_cert("contoso")).await;
    let status = PlatformServiceClient::new(channel)
        .provision_numbers(provision_request("contoso", TENANT_A, &["+14255550100"]))
        .await
        .unwrap_err();
    assert_error(&status, Code::PermissionDenied, "ROLE_DENIED");

    let platform_cert = app
        .ca
        .issue_client(&Subject::Platform("ops".into()), TRUST_DOMAIN)
        .unwrap();
    let status = AssignmentServiceClient::new(app.channel(&platform_cert).await)
        .list_numbers(pb::ListNumbersRequest::default())
        .await
        .unwrap_err();
    assert_error(&status, Code::PermissionDenied, "ROLE_DENIED");
}

/// Suspending a carrier ends its open watch with PERMISSION_DENIED.
#[tokio::test]
async fn suspension_ends_open_watches() {
    let app = spawn_app().await;
    app.create_carrier("contoso").await;
    let mut stream = app
        .carrier("contoso")
        .await
        .watch_numbers(pb::WatchNumbersRequest {
            include_snapshot: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert!(
        first.checkpoint.is_some(),
        "empty snapshot completes at once"
    );
    app.platform()
        .await
        .set_carrier_status(pb::SetCarrierStatusRequest {
            carrier_id: "contoso".into(),
            status: pb::CarrierStatus::Suspended as i32,
        })
        .await
        .unwrap();
    let status = tokio::time::timeout(std::time::Duration::from_secs(5), stream.message())
        .await
        .expect("stream ends promptly")
        .unwrap_err();
    assert_error(&status, Code::PermissionDenied, "CARRIER_SUSPENDED");
}
