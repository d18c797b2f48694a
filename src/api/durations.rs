//! `CallDurationService`: a carrier uploads the durations of its calls, exactly once, and reads
//! its own discrepancies.

use std::sync::Arc;

use futures::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use super::Authorizer;
use super::audited::{carrier_identity, upload as upload_event};
use super::ingest::{
    CarrierGuard, DurationSink, Ingestion, Parsed, StreamBounds, discard_rest, first_message,
    ingest_detached,
};
use super::reconciliation::{DiscrepancySource, parse_classes, parse_recon};
use super::stream::{ServerStream, Streams};
use crate::domain::durations::Rejection;
use crate::domain::ids::parse_opaque_id;
use crate::domain::{Violation, Violations};
use crate::error::ApiError;
use crate::metrics::StreamMetrics;
use crate::pb::v1 as pb;
use crate::pb::v1::call_duration_service_server::CallDurationService;
use crate::store::{EncodedDuration, Store};
use crate::wire::records::call_duration_from_pb;
use crate::wire::summary::upload_summary;

/// Implementation of `opconnect.v1.CallDurationService`.
#[derive(Debug, Clone)]
pub(crate) struct CallDurationApi {
    store: Store,
    auth: Authorizer,
    streams: Streams,
    metrics: Arc<StreamMetrics>,
    bounds: StreamBounds,
}

impl CallDurationApi {
    /// The service over `store`; discrepancy streams run on `streams`.
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
        }
    }
}

#[tonic::async_trait]
impl CallDurationService for CallDurationApi {
    async fn report_call_durations(
        &self,
        request: Request<Streaming<pb::ReportCallDurationsRequest>>,
    ) -> Result<Response<pb::ReportCallDurationsResponse>, Status> {
        let carrier = self.auth.carrier(&request).await?;
        let permit = self.auth.stream_permit(&carrier)?;
        let mut stream = request.into_inner();
        let first: pb::ReportCallDurationsRequest = first_message(&mut stream, self.bounds)
            .await?
            .unwrap_or_default();
        let upload_id = first.upload_id.clone();
        if !upload_id.is_empty() {
            parse_opaque_id(&upload_id).map_err(|e| ApiError::invalid("upload_id", e))?;
            if let Some(done) = self
                .store
                .upload(&carrier.id, &upload_id)
                .await
                .map_err(ApiError::from)?
            {
                // Already complete: read the rest of the stream without storing anything.
                discard_rest(&mut stream, self.bounds, |m| m.records.len()).await?;
                tracing::info!(upload_id, "upload already complete; returning its summary");
                let repeat = upload_event(
                    carrier_identity(&carrier.id),
                    "ReportCallDurations",
                    "OK",
                    &Default::default(),
                )
                .carrier(carrier.id.as_str())
                .detail("upload_id", &upload_id)
                .detail("already_complete", true);
                self.streams.audit(repeat).await;
                return Ok(Response::new(pb::ReportCallDurationsResponse {
                    summary: Some(upload_summary(
                        &upload_id,
                        &done.tally,
                        done.complete_time_ms,
                    )),
                }));
            }
        }
        let sink = DurationSink {
            store: self.store.clone(),
            carrier: carrier.id.clone(),
        };
        let messages = futures::stream::iter([Ok(first)]).chain(stream);
        let carrier_id = carrier.id.clone();
        let ingestion = Ingestion {
            metrics: self.metrics.clone(),
            bounds: self.bounds,
            permit: Some(permit),
            guard: Some(CarrierGuard::new(
                self.auth.clone(),
                self.store.feed(),
                carrier.id.clone(),
            )),
            scope: carrier.id.to_string(),
        };
        let tally = ingest_detached(
            sink,
            ingestion,
            messages,
            move |message: pb::ReportCallDurationsRequest| {
                message
                    .records
                    .iter()
                    .map(|r| Parsed {
                        call_id: Rejection::echo(&r.call_id),
                        result: call_duration_from_pb(r).and_then(|d| {
                            let encoded = EncodedDuration::new(d)
                                .map_err(|e| vec![Violation::new("record", e.to_string())])?;
                            Ok((carrier_id.clone(), encoded))
                        }),
                    })
                    .collect()
            },
        )
        .await;
        let audit = |outcome: &str, tally: &crate::domain::durations::Tally| {
            upload_event(
                carrier_identity(&carrier.id),
                "ReportCallDurations",
                outcome,
                tally,
            )
            .carrier(carrier.id.as_str())
            .detail("upload_id", &upload_id)
        };
        let tally = match tally {
            Ok(tally) => tally,
            Err(status) => {
                let outcome = crate::rpc_log::code_name(status.code());
                self.streams
                    .audit(audit(outcome, &Default::default()))
                    .await;
                return Err(status);
            }
        };
        self.streams.audit(audit("OK", &tally)).await;
        let complete_time_ms = if upload_id.is_empty() {
            crate::store::now_ms()
        } else {
            self.store
                .save_upload(&carrier.id, &upload_id, &tally)
                .await
                .map_err(ApiError::from)?
                .complete_time_ms
        };
        Ok(Response::new(pb::ReportCallDurationsResponse {
            summary: Some(upload_summary(&upload_id, &tally, complete_time_ms)),
        }))
    }

    async fn get_upload(
        &self,
        request: Request<pb::GetUploadRequest>,
    ) -> Result<Response<pb::GetUploadResponse>, Status> {
        let carrier = self.auth.carrier(&request).await?;
        let upload_id = request.into_inner().upload_id;
        parse_opaque_id(&upload_id).map_err(|e| ApiError::invalid("upload_id", e))?;
        let done = self
            .store
            .upload(&carrier.id, &upload_id)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::upload_not_found(&upload_id))?;
        Ok(Response::new(pb::GetUploadResponse {
            summary: Some(upload_summary(
                &upload_id,
                &done.tally,
                done.complete_time_ms,
            )),
        }))
    }

    type ListDiscrepanciesStream = ServerStream<pb::ListDiscrepanciesResponse>;

    async fn list_discrepancies(
        &self,
        request: Request<pb::ListDiscrepanciesRequest>,
    ) -> Result<Response<Self::ListDiscrepanciesStream>, Status> {
        let carrier = self.auth.carrier(&request).await?;
        let permit = self.auth.stream_permit(&carrier)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let plan = parse_recon(&mut v, req.window.as_ref());
        let classes = parse_classes(&mut v, &req.classes);
        v.finish().map_err(ApiError::from)?;
        let plan = plan.ok_or_else(|| ApiError::Internal("window accepted without plan".into()))?;
        let read = super::audited::discrepancy_read(&carrier.id, req.window.as_ref());
        let source = DiscrepancySource::new(
            self.store.clone(),
            carrier.id.clone(),
            plan,
            classes,
            |discrepancies| pb::ListDiscrepanciesResponse { discrepancies },
        );
        Ok(Response::new(self.streams.open_audited(
            carrier.id,
            Some(permit),
            source,
            read,
        )))
    }
}
