//! Numbers through PlatformService and AssignmentService: state rules, isolation, paging,
//! input validation.

use opconnect::pb::v1 as pb;
use tonic::Code;

use crate::helpers::*;

const N1: &str = "+14255550100";
const N2: &str = "+14255550101";

/// Provision → assign → update → unassign → release, each visible to the carrier with the
/// right status, SIP URI and increasing revision.
#[tokio::test]
async fn number_life_cycle_is_visible_to_its_carrier() {
    let app = spawn_app().await;
    app.create_carrier("contoso").await;
    app.provision("contoso", TENANT_A, &[N1]).await;
    let mut contoso = app.carrier("contoso").await;
    let get = || pb::GetNumberRequest { number: N1.into() };
    let n = contoso
        .get_number(get())
        .await
        .unwrap()
        .into_inner()
        .telephone_number
        .unwrap();
    assert_eq!(n.status, pb::NumberStatus::Provisioned as i32);
    assert_eq!(n.tenant_id, TENANT_A);
    assert_eq!(n.revision, 1);
    assert_eq!(n.sip_uri, "");

    let n = app.assign(N1, "user-1").await;
    assert_eq!(n.status, pb::NumberStatus::Assigned as i32);
    assert_eq!(n.sip_uri, "sip:+14255550100@sip.contoso.example;user=phone");
    assert_eq!(n.revision, 2);

    let mut platform = app.platform().await;
    let mut update = assign_request(N1, "user-2");
    update.sip_uri = "sip:+14255550100@eu.sip.contoso.example:5061;user=phone".into();
    let n = platform
        .assign_number(update.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(n.telephone_number.unwrap().revision, 3);
    // The same assignment again is a no-op: no new revision.
    let n = platform.assign_number(update).await.unwrap().into_inner();
    assert_eq!(n.telephone_number.unwrap().revision, 3);

    let n = platform
        .unassign_number(pb::UnassignNumberRequest { number: N1.into() })
        .await
        .unwrap()
        .into_inner()
        .telephone_number
        .unwrap();
    assert_eq!(n.status, pb::NumberStatus::Provisioned as i32);
    assert_eq!(n.assignment_target_id, "");

    let status = platform
        .unassign_number(pb::UnassignNumberRequest { number: N1.into() })
        .await
        .unwrap_err();
    assert_error(&status, Code::FailedPrecondition, "NUMBER_NOT_ASSIGNED");

    platform
        .release_numbers(pb::ReleaseNumbersRequest {
            numbers: vec![N1.into()],
        })
        .await
        .unwrap();
    let status = platform
        .assign_number(assign_request(N1, "user-3"))
        .await
        .unwrap_err();
    assert_error(&status, Code::FailedPrecondition, "NUMBER_NOT_ASSIGNABLE");

    let n = contoso
        .get_number(get())
        .await
        .unwrap()
        .into_inner()
        .telephone_number
        .unwrap();
    assert_eq!(n.status, pb::NumberStatus::Released as i32);
    assert_eq!(n.revision, 5);
}

/// A number belongs to one carrier for good; provisioning it elsewhere or to another tenant
/// while in service is refused; repeating a provisioning is a no-op.
#[tokio::test]
async fn provisioning_rules() {
    let app = spawn_app().await;
    app.create_carrier("contoso").await;
    app.create_carrier("fabrikam").await;
    app.provision("contoso", TENANT_A, &[N1]).await;
    let mut platform = app.platform().await;

    let again = platform
        .provision_numbers(provision_request("contoso", TENANT_A, &[N1]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.numbers[0].revision, 1, "no-op keeps the revision");

    let status = platform
        .provision_numbers(provision_request("contoso", TENANT_B, &[N2, N1]))
        .await
        .unwrap_err();
    assert_error(
        &status,
        Code::FailedPrecondition,
        "NUMBER_ALREADY_PROVISIONED",
    );
    let status = platform
        .provision_numbers(provision_request("fabrikam", TENANT_A, &[N1]))
        .await
        .unwrap_err();
    assert_error(
        &status,
        Code::FailedPrecondition,
        "NUMBER_OWNED_BY_OTHER_CARRIER",
    );
    let status = platform
        .provision_numbers(provision_request("globex", TENANT_A, &[N2]))
        .await
        .unwrap_err();
    assert_error(&status, Code::NotFound, "CARRIER_NOT_FOUND");

    // All or nothing: N2 of the refused batch was not provisioned.
    let (numbers, revision) = app.list_all("contoso").await;
    assert_eq!(numbers.len(), 1);
    assert_eq!(revision, 1);
    let status = platform
        .assign_number(assign_request(N2, "user"))
        .await
        .unwrap_err();
    assert_error(&status, Code::NotFound, "NUMBER_NOT_FOUND");
}

/// fabrikam never sees contoso's numbers: not in lists, not by Get (NOT_FOUND exactly as
/// for a number that does not exist), not in a watch.
#[tokio::test]
async fn carriers_see_only_their_own_numbers() {
    let app = spawn_app().await;
    app.create_carrier("contoso").await;
    app.create_carrier("fabrikam").await;
    app.provision("contoso", TENANT_A, &[N1]).await;
    app.provision("fabrikam", TENANT_A, &[N2]).await;

    let mut fabrikam = app.carrier("fabrikam").await;
    let mut watch = fabrikam
        .watch_numbers(pb::WatchNumbersRequest {
            start_revision: Some(0),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    app.assign(N1, "contoso-user").await;
    app.assign(N2, "fabrikam-user").await;

    let (numbers, _) = app.list_all("fabrikam").await;
    assert_eq!(
        numbers
            .iter()
            .map(|n| n.number.as_str())
            .collect::<Vec<_>>(),
        [N2]
    );

    let foreign = fabrikam
        .get_number(pb::GetNumberRequest { number: N1.into() })
        .await
        .unwrap_err();
    let missing = fabrikam
        .get_number(pb::GetNumberRequest {
            number: "+14255550199".into(),
        })
        .await
        .unwrap_err();
    assert_error(&foreign, Code::NotFound, "NUMBER_NOT_FOUND");
    assert_error(&missing, Code::NotFound, "NUMBER_NOT_FOUND");
    assert_eq!(
        foreign.message().replace(N1, "X"),
        missing.message().replace("+14255550199", "X")
    );

    // fabrikam's log holds exactly its two events.
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let msg = watch.message().await.unwrap().unwrap();
        seen.extend(msg.events.into_iter().map(|e| e.number.unwrap().number));
    }
    assert_eq!(seen, [N2, N2]);
}

/// Listing pages through every number once, filters by tenant and status, and rejects a
/// token reused with other filters.
#[tokio::test]
async fn list_numbers_pages_and_filters() {
    let app = spawn_app().await;
    app.create_carrier("contoso").await;
    let a: Vec<String> = (0..25).map(|i| format!("+1425555{:04}", i)).collect();
    let b: Vec<String> = (0..5).map(|i| format!("+1206555{:04}", i)).collect();
    app.provision(
        "contoso",
        TENANT_A,
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await;
    app.provision(
        "contoso",
        TENANT_B,
        &b.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await;
    app.assign(&a[3], "user").await;
    let mut contoso = app.carrier("contoso").await;

    let mut token = String::new();
    let mut seen = Vec::new();
    loop {
        let page = contoso
            .list_numbers(pb::ListNumbersRequest {
                page_size: 7,
                page_token: token.clone(),
                tenant_id: TENANT_A.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.numbers.len() <= 7);
        assert_eq!(page.revision, 31);
        seen.extend(page.numbers.into_iter().map(|n| n.number));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
        let misuse = contoso
            .list_numbers(pb::ListNumbersRequest {
                page_size: 7,
                page_token: token.clone(),
                tenant_id: TENANT_B.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(bad_fields(&misuse), ["page_token"]);
    }
    assert_eq!(seen, a);

    let assigned = contoso
        .list_numbers(pb::ListNumbersRequest {
            status: pb::NumberStatus::Assigned as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(assigned.numbers.len(), 1);
    assert_eq!(assigned.numbers[0].number, a[3]);
}

/// Every kind of bad input is INVALID_ARGUMENT naming the field, and changes nothing.
#[tokio::test]
async fn bad_input_is_rejected_field_by_field_and_changes_nothing() {
    let app = spawn_app().await;
    app.create_carrier("contoso").await;
    app.provision("contoso", TENANT_A, &[N1]).await;
    let before = app.assign(N1, "user-1").await;
    let mut platform = app.platform().await;

    let provision_cases: Vec<(pb::ProvisionNumbersRequest, &[&str])> = vec![
        (
            provision_request("contoso", TENANT_A, &["14255550102"]),
            &["numbers[0]"],
        ),
        (
            provision_request("contoso", TENANT_A, &[N2, "+1 425 555"]),
            &["numbers[1]"],
        ),
        (
            provision_request("contoso", TENANT_A, &[N2, N2]),
            &["numbers[1]"],
        ),
        (provision_request("contoso", TENANT_A, &[]), &["numbers"]),
        (provision_request("contoso", "", &[N2]), &["tenant_id"]),
        (
            provision_request("contoso", "not-a-guid", &[N2]),
            &["tenant_id"],
        ),
        (
            provision_request("Contoso!", TENANT_A, &[N2]),
            &["carrier_id"],
        ),
        (
            pb::ProvisionNumbersRequest {
                capabilities: vec![99],
                ..provision_request("contoso", TENANT_A, &[N2])
            },
            &["capabilities[0]"],
        ),
        (
            pb::ProvisionNumbersRequest {
                iso_country_code: "usa".into(),
                ..provision_request("contoso", "", &[N2])
            },
            &["tenant_id", "iso_country_code"],
        ),
    ];
    for (request, fields) in provision_cases {
        let status = platform
            .provision_numbers(request.clone())
            .await
            .unwrap_err();
        assert_error(&status, Code::InvalidArgument, "INVALID_FIELD");
        assert_eq!(bad_fields(&status), fields, "{request:?}");
    }

    let assign_cases: Vec<(pb::AssignNumberRequest, &[&str])> = vec![
        (
            pb::AssignNumberRequest {
                sip_uri: "sip:+14255550999@sip.contoso.example;user=phone".into(),
                ..assign_request(N1, "user-9")
            },
            &["sip_uri"],
        ),
        (
            pb::AssignNumberRequest {
                sip_uri: "sip:+14255550100@sip.fabrikam.example;user=phone".into(),
                ..assign_request(N1, "user-9")
            },
            &["sip_uri"],
        ),
        (
            pb::AssignNumberRequest {
                usage: 42,
                ..assign_request(N1, "user-9")
            },
            &["usage"],
        ),
        (
            pb::AssignNumberRequest {
                usage: 0,
                ..assign_request(N1, "")
            },
            &["usage", "assignment_target_id"],
        ),
        (assign_request("+0", "user-9"), &["number"]),
    ];
    for (request, fields) in assign_cases {
        let status = platform.assign_number(request.clone()).await.unwrap_err();
        assert_error(&status, Code::InvalidArgument, "INVALID_FIELD");
        assert_eq!(bad_fields(&status), fields, "{request:?}");
    }

    let mut contoso = app.carrier("contoso").await;
    for page_size in [-1, 1001] {
        let status = contoso
            .list_numbers(pb::ListNumbersRequest {
                page_size,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(bad_fields(&status), ["page_size"]);
    }
    let status = contoso
        .list_numbers(pb::ListNumbersRequest {
            status: 17,
            tenant_id: "x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&status), ["tenant_id", "status"]);
    let status = contoso
        .watch_numbers(pb::WatchNumbersRequest {
            start_revision: Some(-1),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&status), ["start_revision"]);

    // Nothing changed.
    let (numbers, revision) = app.list_all("contoso").await;
    assert_eq!(numbers, vec![before]);
    assert_eq!(revision, 2);
}

/// Creating a carrier is idempotent; a conflicting one is ALREADY_EXISTS; bad fields named.
#[tokio::test]
async fn create_carrier_rules() {
    let app = spawn_app().await;
    app.create_carrier("contoso").await;
    app.create_carrier("contoso").await;
    let mut platform = app.platform().await;
    let status = platform
        .create_carrier(pb::CreateCarrierRequest {
            carrier_id: "contoso".into(),
            display_name: "Other".into(),
            sip_domain: "sip.contoso.example".into(),
        })
        .await
        .unwrap_err();
    assert_error(&status, Code::AlreadyExists, "CARRIER_EXISTS");
    let status = platform
        .create_carrier(pb::CreateCarrierRequest {
            carrier_id: "x".into(),
            display_name: String::new(),
            sip_domain: "localhost".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        bad_fields(&status),
        ["carrier_id", "display_name", "sip_domain"]
    );
    let list = platform
        .list_carriers(pb::ListCarriersRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.carriers.len(), 1);
    app.stop().await;
}

/// Lookups made together are read together (`store/batched.rs`): hundreds of concurrent
/// `GetNumber` calls by two carriers, each asking for its own numbers and the other's, get
/// exactly their own numbers and NUMBER_NOT_FOUND for every other one; a change committed
/// before a lookup is asked is what that lookup sees.
#[tokio::test]
async fn concurrent_lookups_see_only_their_own_carriers_numbers() {
    let app = spawn_app_with(|s| s.rate_limit_per_carrier = 100_000).await;
    let numbers = |base: u32| -> Vec<String> {
        (0..25)
            .map(|i| format!("+1425555{:04}", base + i))
            .collect()
    };
    let (contoso_numbers, fabrikam_numbers) = (numbers(1000), numbers(2000));
    for (carrier, own) in [
        ("contoso", &contoso_numbers),
        ("fabrikam", &fabrikam_numbers),
    ] {
        app.create_carrier(carrier).await;
        let own: Vec<&str> = own.iter().map(String::as_str).collect();
        app.provision(carrier, TENANT_A, &own).await;
    }
    let clients = [
        ("contoso", app.carrier("contoso").await),
        ("fabrikam", app.carrier("fabrikam").await),
    ];
    let mut calls = Vec::new();
    for round in 0..4 {
        for (carrier, client) in &clients {
            for number in contoso_numbers.iter().chain(&fabrikam_numbers) {
                let mut client = client.clone();
                let (carrier, number) = (*carrier, number.clone());
                calls.push(tokio::spawn(async move {
                    let request = pb::GetNumberRequest {
                        number: number.clone(),
                    };
                    (round, carrier, number, client.get_number(request).await)
                }));
            }
        }
    }
    assert_eq!(calls.len(), 4 * 2 * 50);
    for call in calls {
        let (_, carrier, number, outcome) = call.await.unwrap();
        let own = match carrier {
            "contoso" => &contoso_numbers,
            _ => &fabrikam_numbers,
        };
        if own.contains(&number) {
            let n = outcome.unwrap().into_inner().telephone_number.unwrap();
            assert_eq!(n.number, number);
            assert_eq!(n.status, pb::NumberStatus::Provisioned as i32);
        } else {
            assert_error(&outcome.unwrap_err(), Code::NotFound, "NUMBER_NOT_FOUND");
        }
    }

    // Read-your-writes: a lookup asked after a change commits sees it, even while other
    // lookups are being read.
    let mut contoso = clients[0].1.clone();
    for number in contoso_numbers.iter().take(10) {
        let busy: Vec<_> = (0..32)
            .map(|_| {
                let mut client = clients[1].1.clone();
                let number = fabrikam_numbers[0].clone();
                tokio::spawn(
                    async move { client.get_number(pb::GetNumberRequest { number }).await },
                )
            })
            .collect();
        let assigned = app.assign(number, "user-1").await;
        let seen = contoso
            .get_number(pb::GetNumberRequest {
                number: number.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .telephone_number
            .unwrap();
        assert_eq!(seen.revision, assigned.revision);
        assert_eq!(seen.status, pb::NumberStatus::Assigned as i32);
        for call in busy {
            call.await.unwrap().unwrap();
        }
    }
}
