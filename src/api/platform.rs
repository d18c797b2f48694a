//! `PlatformService`: the platform registers carriers and reports what happens to numbers.

use std::collections::BTreeSet;
use std::sync::Arc;

use tonic::{Request, Response, Status, Streaming};

use super::Authorizer;
use super::audited::{self, platform_identity};
use super::ingest::{Ingestion, StreamBounds, ingest_detached, parse_carrier_batch};
use super::page_token::{decode_page_token, encode_page_token, page_size};
use super::platform_audit;
use super::reconciliation::{
    DiscrepancySource, ReconPlan, parse_classes, parse_recon, parse_window, reconciliation_report,
};
use super::stream::{ServerStream, Streams};
use super::{export, privacy};
use crate::domain::Violations;
use crate::domain::audit::AuditEvent;
use crate::domain::durations::Tally;
use crate::domain::ids::{
    self, CarrierId, E164, SipDomain, SipUri, TenantId, parse_display_name, parse_opaque_id,
    parse_optional_opaque_id,
};
use crate::domain::number::{Assignment, Provisioning};
use crate::domain::reconcile::ReconClass;
use crate::domain::usage::UsageAggregator;
use crate::error::{ApiError, ApiResult};
use crate::metrics::StreamMetrics;
use crate::pb::v1 as pb;
use crate::pb::v1::platform_service_server::PlatformService;
use crate::retention::RetentionPolicy;
use crate::store::{Encoded, Store};
use crate::wire::numbers::{carrier_status_from_pb, parse_capabilities, usage_from_pb};
use crate::wire::records::{call_record_from_pb, quality_record_from_pb};
use crate::wire::summary::ingestion_summary;
use crate::wire::usage::{granularity_from_pb, usage_figure_to_pb};

/// Most numbers one provisioning or release may name.
const MAX_BATCH: usize = 1_000;

/// Implementation of `opconnect.v1.PlatformService`.
#[derive(Debug, Clone)]
pub(crate) struct PlatformApi {
    store: Store,
    auth: Authorizer,
    /// Discrepancy streams run here.
    streams: Streams,
    metrics: Arc<StreamMetrics>,
    bounds: StreamBounds,
    /// The retention policy `GetRetentionStatus` reports.
    retention: RetentionPolicy,
}

impl PlatformApi {
    /// The service over `store`, counting ingestion in `metrics`.
    pub(crate) fn new(
        store: Store,
        auth: Authorizer,
        streams: Streams,
        metrics: Arc<StreamMetrics>,
        bounds: StreamBounds,
    ) -> Self {
        Self {
            store,
            auth,
            streams,
            metrics,
            bounds,
            retention: RetentionPolicy::from_settings(&crate::config::Settings::default()),
        }
    }

    /// The service reporting `retention` as its retention policy.
    pub(crate) fn with_retention(mut self, retention: RetentionPolicy) -> Self {
        self.retention = retention;
        self
    }

    /// How the platform's ingestion streams run: bounded, not counted against any carrier.
    fn ingestion(&self) -> Ingestion {
        Ingestion {
            metrics: self.metrics.clone(),
            bounds: self.bounds,
            permit: None,
            guard: None,
            scope: String::new(),
        }
    }
}

/// Longest usage window.
const MAX_USAGE_DAYS: i64 = 366;
/// Calls read per usage page.
const USAGE_PAGE: u64 = 5_000;

impl PlatformApi {
    async fn usage(
        &self,
        req: pb::GetUsageSummaryRequest,
    ) -> ApiResult<pb::GetUsageSummaryResponse> {
        let mut v = Violations::default();
        let tenant = v.check("tenant_id", TenantId::parse(&req.tenant_id));
        let window = parse_window(
            &mut v,
            "",
            req.start_time.as_ref(),
            req.end_time.as_ref(),
            MAX_USAGE_DAYS,
        );
        let granularity = v.check("granularity", granularity_from_pb(req.granularity));
        let (tenant, window, granularity) = v
            .finish_with(|| Some((tenant?, window?, granularity?)))
            .map_err(ApiError::from)?;
        let mut aggregator = UsageAggregator::new(granularity);
        let mut after = String::new();
        loop {
            let page = self
                .store
                .usage_page(&tenant, window, &after, USAGE_PAGE)
                .await?;
            for (_, call) in &page {
                aggregator.add(call);
            }
            match page.last() {
                Some((call_id, _)) if page.len() as u64 == USAGE_PAGE => after = call_id.clone(),
                _ => break,
            }
        }
        let figures = aggregator.finish();
        Ok(pb::GetUsageSummaryResponse {
            total_calls: figures.iter().map(|f| f.calls).sum(),
            total_minutes: figures.iter().map(|f| f.total_ms).sum::<i64>() as f64 / 60_000.0,
            figures: figures.iter().map(usage_figure_to_pb).collect(),
        })
    }

    async fn reconciliation_target(
        &self,
        carrier_id: &str,
        window: Option<&pb::ReconciliationWindow>,
        classes: &[i32],
    ) -> ApiResult<(CarrierId, ReconPlan, Vec<ReconClass>)> {
        let mut v = Violations::default();
        let carrier = v.check("carrier_id", CarrierId::parse(carrier_id));
        let plan = parse_recon(&mut v, window);
        let classes = parse_classes(&mut v, classes);
        let (carrier, plan) = v
            .finish_with(|| Some((carrier?, plan?)))
            .map_err(ApiError::from)?;
        if self.store.carrier(carrier.as_str()).await?.is_none() {
            return Err(ApiError::carrier_not_found(carrier.as_str()));
        }
        Ok((carrier, plan, classes))
    }
}

impl PlatformApi {
    /// Records a write's audit event with the outcome of `result`, and returns `result`.
    async fn audited<T>(&self, event: AuditEvent, result: Result<T, Status>) -> Result<T, Status> {
        self.streams
            .audit(platform_audit::finish(event, &result))
            .await;
        result
    }

    /// Records an ingestion stream's audit event (its counts, or how it failed).
    async fn audit_ingestion(
        &self,
        name: &str,
        action: &str,
        tally: Result<Tally, Status>,
    ) -> Result<Tally, Status> {
        let event = match &tally {
            Ok(t) => audited::upload(platform_identity(name), action, "OK", t),
            Err(status) => audited::upload(
                platform_identity(name),
                action,
                crate::rpc_log::code_name(status.code()),
                &Tally::default(),
            ),
        };
        self.streams.audit(event).await;
        tally
    }
}

fn parse_numbers(v: &mut Violations, field: &str, raw: &[String]) -> Vec<E164> {
    if raw.is_empty() || raw.len() > MAX_BATCH {
        v.push(field, format!("must name 1 to {MAX_BATCH} numbers"));
        return Vec::new();
    }
    let mut seen = BTreeSet::new();
    let mut numbers = Vec::with_capacity(raw.len());
    for (i, n) in raw.iter().enumerate() {
        if let Some(n) = v.check(format!("{field}[{i}]"), E164::parse(n)) {
            if seen.insert(n.clone()) {
                numbers.push(n);
            } else {
                v.push(format!("{field}[{i}]"), "is named twice");
            }
        }
    }
    numbers
}

impl PlatformApi {
    async fn assign(&self, req: pb::AssignNumberRequest) -> ApiResult<pb::AssignNumberResponse> {
        let mut v = Violations::default();
        let number = v.check("number", E164::parse(&req.number));
        let usage = v.check("usage", usage_from_pb(req.usage));
        let target = v.check(
            "assignment_target_id",
            parse_opaque_id(&req.assignment_target_id),
        );
        let profile = v.check(
            "calling_profile_id",
            parse_optional_opaque_id(&req.calling_profile_id),
        );
        let location = v.check("location_id", parse_optional_opaque_id(&req.location_id));
        let (number, usage, target, profile, location) = v
            .finish_with(|| Some((number?, usage?, target?, profile?, location?)))
            .map_err(ApiError::from)?;
        // The SIP URI is checked against the owning carrier's domain, which never changes.
        let owner = self
            .store
            .number_owner(&number)
            .await?
            .ok_or_else(|| ApiError::number_not_found(number.as_str()))?;
        let sip_uri = if req.sip_uri.is_empty() {
            SipUri::default_for(&number, &owner.sip_domain)
        } else {
            SipUri::parse_for(&req.sip_uri, &number, &owner.sip_domain)
                .map_err(|e| ApiError::invalid("sip_uri", e))?
        };
        let assignment = Assignment {
            usage,
            target_id: target,
            sip_uri,
            calling_profile_id: profile,
            location_id: location,
        };
        let state = self.store.assign_number(&number, assignment).await?;
        Ok(pb::AssignNumberResponse {
            telephone_number: Some((&state).into()),
        })
    }

    async fn provision(
        &self,
        req: pb::ProvisionNumbersRequest,
    ) -> ApiResult<pb::ProvisionNumbersResponse> {
        let mut v = Violations::default();
        let carrier = v.check("carrier_id", CarrierId::parse(&req.carrier_id));
        let tenant = v.check("tenant_id", TenantId::parse(&req.tenant_id));
        let numbers = parse_numbers(&mut v, "numbers", &req.numbers);
        let capabilities = parse_capabilities(&mut v, &req.capabilities);
        let country = v.check(
            "iso_country_code",
            ids::parse_country_code(&req.iso_country_code),
        );
        let (carrier, tenant, country) = v
            .finish_with(|| Some((carrier?, tenant?, country?)))
            .map_err(ApiError::from)?;
        if self.store.carrier(carrier.as_str()).await?.is_none() {
            return Err(ApiError::carrier_not_found(carrier.as_str()));
        }
        let request = Provisioning {
            tenant_id: tenant,
            capabilities,
            iso_country_code: country,
        };
        let stored = self
            .store
            .provision_numbers(&carrier, &numbers, &request)
            .await?;
        Ok(pb::ProvisionNumbersResponse {
            numbers: stored.iter().map(Into::into).collect(),
        })
    }
}

#[tonic::async_trait]
impl PlatformService for PlatformApi {
    async fn create_carrier(
        &self,
        request: Request<pb::CreateCarrierRequest>,
    ) -> Result<Response<pb::CreateCarrierResponse>, Status> {
        let name = self.auth.platform(&request)?;
        let event = platform_audit::create_carrier(&name, request.get_ref());
        let req = request.into_inner();
        let result: Result<_, Status> = async move {
            let mut v = Violations::default();
            let id = v.check("carrier_id", CarrierId::parse(&req.carrier_id));
            let name = v.check("display_name", parse_display_name(&req.display_name));
            let domain = v.check("sip_domain", SipDomain::parse(&req.sip_domain));
            let (id, name, domain) = v
                .finish_with(|| Some((id?, name?, domain?)))
                .map_err(ApiError::from)?;
            let carrier = self
                .store
                .create_carrier(&id, &name, &domain)
                .await
                .map_err(ApiError::from)?;
            tracing::info!(carrier = %id, "carrier registered");
            Ok(Response::new(pb::CreateCarrierResponse {
                carrier: Some((&carrier).into()),
            }))
        }
        .await;
        self.audited(event, result).await
    }

    async fn list_carriers(
        &self,
        request: Request<pb::ListCarriersRequest>,
    ) -> Result<Response<pb::ListCarriersResponse>, Status> {
        self.auth.platform(&request)?;
        let req = request.into_inner();
        let limit = page_size(req.page_size, 100, 1000).map_err(|v| ApiError::from(vec![v]))?;
        let after =
            decode_page_token(&req.page_token, "carriers").map_err(|v| ApiError::from(vec![v]))?;
        let mut carriers = self
            .store
            .list_carriers(after.as_deref(), limit + 1)
            .await
            .map_err(ApiError::from)?;
        let more = carriers.len() as u64 > limit;
        carriers.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        let next_page_token = match carriers.last() {
            Some(last) if more => encode_page_token("carriers", last.id.as_str()),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListCarriersResponse {
            carriers: carriers.iter().map(Into::into).collect(),
            next_page_token,
        }))
    }

    async fn set_carrier_status(
        &self,
        request: Request<pb::SetCarrierStatusRequest>,
    ) -> Result<Response<pb::SetCarrierStatusResponse>, Status> {
        let name = self.auth.platform(&request)?;
        let event = platform_audit::set_carrier_status(&name, request.get_ref());
        let req = request.into_inner();
        let result: Result<_, Status> = async move {
            let mut v = Violations::default();
            let id = v.check("carrier_id", CarrierId::parse(&req.carrier_id));
            let status = v.check("status", carrier_status_from_pb(req.status));
            let (id, status) = v
                .finish_with(|| Some((id?, status?)))
                .map_err(ApiError::from)?;
            let carrier = self
                .store
                .set_carrier_status(&id, status)
                .await
                .map_err(ApiError::from)?;
            tracing::info!(carrier = %id, ?status, "carrier status set");
            Ok(Response::new(pb::SetCarrierStatusResponse {
                carrier: Some((&carrier).into()),
            }))
        }
        .await;
        self.audited(event, result).await
    }

    async fn provision_numbers(
        &self,
        request: Request<pb::ProvisionNumbersRequest>,
    ) -> Result<Response<pb::ProvisionNumbersResponse>, Status> {
        let name = self.auth.platform(&request)?;
        let event = platform_audit::provision(&name, request.get_ref());
        let result = self.provision(request.into_inner()).await;
        self.audited(event, result.map(Response::new).map_err(Status::from))
            .await
    }

    async fn assign_number(
        &self,
        request: Request<pb::AssignNumberRequest>,
    ) -> Result<Response<pb::AssignNumberResponse>, Status> {
        let name = self.auth.platform(&request)?;
        let event = platform_audit::assign(&name, request.get_ref());
        let result = self.assign(request.into_inner()).await;
        let event = platform_audit::about(
            event,
            result
                .as_ref()
                .ok()
                .and_then(|r| r.telephone_number.as_ref()),
        );
        self.audited(event, result.map(Response::new).map_err(Status::from))
            .await
    }

    async fn unassign_number(
        &self,
        request: Request<pb::UnassignNumberRequest>,
    ) -> Result<Response<pb::UnassignNumberResponse>, Status> {
        let name = self.auth.platform(&request)?;
        let event = platform_audit::unassign(&name, request.get_ref());
        let req = request.into_inner();
        let result: Result<_, Status> = async move {
            let number = E164::parse(&req.number).map_err(|e| ApiError::invalid("number", e))?;
            let state = self
                .store
                .unassign_number(&number)
                .await
                .map_err(ApiError::from)?;
            Ok(pb::UnassignNumberResponse {
                telephone_number: Some((&state).into()),
            })
        }
        .await;
        let event = platform_audit::about(
            event,
            result
                .as_ref()
                .ok()
                .and_then(|r| r.telephone_number.as_ref()),
        );
        self.audited(event, result.map(Response::new)).await
    }

    async fn release_numbers(
        &self,
        request: Request<pb::ReleaseNumbersRequest>,
    ) -> Result<Response<pb::ReleaseNumbersResponse>, Status> {
        let name = self.auth.platform(&request)?;
        let event = platform_audit::release(&name, request.get_ref());
        let req = request.into_inner();
        let result: Result<_, Status> = async move {
            let mut v = Violations::default();
            let numbers = parse_numbers(&mut v, "numbers", &req.numbers);
            v.finish().map_err(ApiError::from)?;
            let stored = self
                .store
                .release_numbers(&numbers)
                .await
                .map_err(ApiError::from)?;
            Ok(Response::new(pb::ReleaseNumbersResponse {
                numbers: stored.iter().map(Into::into).collect(),
            }))
        }
        .await;
        self.audited(event, result).await
    }

    async fn ingest_call_records(
        &self,
        request: Request<Streaming<pb::IngestCallRecordsRequest>>,
    ) -> Result<Response<pb::IngestCallRecordsResponse>, Status> {
        let name = self.auth.platform(&request)?;
        let tally = ingest_detached(
            self.store.clone(),
            self.ingestion(),
            request.into_inner(),
            |message: pb::IngestCallRecordsRequest| {
                let records = message
                    .records
                    .into_iter()
                    .map(|r| (r.carrier_id, r.record));
                parse_carrier_batch(
                    records,
                    |r| &r.call_id,
                    |r| call_record_from_pb(r).map(Encoded::new),
                )
            },
        )
        .await;
        let tally = self
            .audit_ingestion(&name, "IngestCallRecords", tally)
            .await?;
        Ok(Response::new(pb::IngestCallRecordsResponse {
            summary: Some(ingestion_summary(&tally)),
        }))
    }

    async fn ingest_quality_records(
        &self,
        request: Request<Streaming<pb::IngestQualityRecordsRequest>>,
    ) -> Result<Response<pb::IngestQualityRecordsResponse>, Status> {
        let name = self.auth.platform(&request)?;
        let tally = ingest_detached(
            self.store.clone(),
            self.ingestion(),
            request.into_inner(),
            |message: pb::IngestQualityRecordsRequest| {
                let records = message
                    .records
                    .into_iter()
                    .map(|r| (r.carrier_id, r.record));
                parse_carrier_batch(
                    records,
                    |r| &r.call_id,
                    |r| quality_record_from_pb(r).map(Encoded::new),
                )
            },
        )
        .await;
        let tally = self
            .audit_ingestion(&name, "IngestQualityRecords", tally)
            .await?;
        Ok(Response::new(pb::IngestQualityRecordsResponse {
            summary: Some(ingestion_summary(&tally)),
        }))
    }

    async fn get_usage_summary(
        &self,
        request: Request<pb::GetUsageSummaryRequest>,
    ) -> Result<Response<pb::GetUsageSummaryResponse>, Status> {
        self.auth.platform(&request)?;
        Ok(Response::new(self.usage(request.into_inner()).await?))
    }

    async fn get_reconciliation_report(
        &self,
        request: Request<pb::GetReconciliationReportRequest>,
    ) -> Result<Response<pb::GetReconciliationReportResponse>, Status> {
        self.auth.platform(&request)?;
        let req = request.into_inner();
        let (carrier, plan, _) = self
            .reconciliation_target(&req.carrier_id, req.window.as_ref(), &[])
            .await?;
        let report = reconciliation_report(&self.store, &carrier, plan).await?;
        Ok(Response::new(report))
    }

    type ListDiscrepanciesStream = ServerStream<pb::PlatformServiceListDiscrepanciesResponse>;

    async fn list_discrepancies(
        &self,
        request: Request<pb::PlatformServiceListDiscrepanciesRequest>,
    ) -> Result<Response<Self::ListDiscrepanciesStream>, Status> {
        self.auth.platform(&request)?;
        let req = request.into_inner();
        let (carrier, plan, classes) = self
            .reconciliation_target(&req.carrier_id, req.window.as_ref(), &req.classes)
            .await?;
        let source = DiscrepancySource::new(
            self.store.clone(),
            carrier.clone(),
            plan,
            classes,
            |discrepancies| pb::PlatformServiceListDiscrepanciesResponse { discrepancies },
        );
        Ok(Response::new(self.streams.open(carrier, None, source)))
    }

    async fn erase_tenant_data(
        &self,
        request: Request<pb::EraseTenantDataRequest>,
    ) -> Result<Response<pb::EraseTenantDataResponse>, Status> {
        let name = self.auth.platform(&request)?;
        let erased = privacy::erase(&self.store, &self.streams, &name, request.into_inner());
        Ok(Response::new(erased.await?))
    }

    type ExportTenantDataStream = ServerStream<pb::ExportTenantDataResponse>;

    async fn export_tenant_data(
        &self,
        request: Request<pb::ExportTenantDataRequest>,
    ) -> Result<Response<Self::ExportTenantDataStream>, Status> {
        let name = self.auth.platform(&request)?;
        let tenant = &request.get_ref().tenant_id;
        let stream = export::export(self.store.clone(), self.streams.clone(), &name, tenant);
        Ok(Response::new(stream.await?))
    }

    async fn list_audit_events(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
        self.auth.platform(&request)?;
        let page = privacy::list_audit(&self.store, &self.streams, request.into_inner());
        Ok(Response::new(page.await?))
    }

    async fn get_retention_status(
        &self,
        request: Request<pb::GetRetentionStatusRequest>,
    ) -> Result<Response<pb::GetRetentionStatusResponse>, Status> {
        self.auth.platform(&request)?;
        let status = privacy::retention_status(&self.store, &self.retention);
        Ok(Response::new(status.await?))
    }
}
