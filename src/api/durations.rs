//! `CallDurationService` (a carrier uploads durations and reads its own discrepancies) and
//! the reconciliation and usage logic PlatformService shares with it.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use super::Authorizer;
use super::convert::timestamp;
use super::ingest::{DurationSink, Parsed, ingest_detached, upload_summary};
use super::records_convert::{call_duration_from_pb, duration_from_ms, required_time_ms};
use crate::domain::Violations;
use crate::domain::ids::{CarrierId, parse_opaque_id};
use crate::domain::reconcile::{self, DEFAULT_TOLERANCE_MS, ReconClass, ReconTotals};
use crate::error::{ApiError, ApiResult};
use crate::metrics::StreamMetrics;
use crate::pb::v1 as pb;
use crate::pb::v1::call_duration_service_server::CallDurationService;
use crate::store::{ReconRow, Store, Window};

/// Calls read from the database per reconciliation page.
const RECON_PAGE: u64 = 5_000;
/// Discrepancies per response message.
const DISCREPANCIES_PER_MESSAGE: usize = 1_000;
/// Longest reconciliation window.
const MAX_RECON_DAYS: i64 = 92;
/// Largest tolerance.
const MAX_TOLERANCE_MS: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;

/// Implementation of `opconnect.v1.CallDurationService`.
#[derive(Debug, Clone)]
pub struct CallDurationApi {
    store: Store,
    auth: Authorizer,
    shutdown: CancellationToken,
    metrics: std::sync::Arc<StreamMetrics>,
}

impl CallDurationApi {
    /// The service over `store`; discrepancy streams end when `shutdown` is cancelled.
    pub fn new(
        store: Store,
        shutdown: CancellationToken,
        metrics: std::sync::Arc<StreamMetrics>,
    ) -> Self {
        Self {
            auth: Authorizer::new(store.clone()),
            store,
            shutdown,
            metrics,
        }
    }
}

/// A validated reconciliation request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReconPlan {
    pub window: Window,
    pub tolerance_ms: i64,
}

/// Validates a time window of at most `max_days` days; fields are prefixed with `prefix`.
pub(crate) fn parse_window(
    v: &mut Violations,
    prefix: &str,
    start: Option<&prost_types::Timestamp>,
    end: Option<&prost_types::Timestamp>,
    max_days: i64,
) -> Option<Window> {
    let from = v.check(format!("{prefix}start_time"), required_time_ms(start));
    let to = v.check(format!("{prefix}end_time"), required_time_ms(end));
    let (from_ms, to_ms) = (from?, to?);
    if to_ms <= from_ms {
        v.push(format!("{prefix}end_time"), "must be after start_time");
        return None;
    }
    if to_ms - from_ms > max_days * DAY_MS {
        v.push(
            format!("{prefix}end_time"),
            format!("must be at most {max_days} days after start_time"),
        );
        return None;
    }
    Some(Window { from_ms, to_ms })
}

pub(crate) fn parse_recon(
    v: &mut Violations,
    window: Option<&pb::ReconciliationWindow>,
) -> Option<ReconPlan> {
    let Some(w) = window else {
        v.push("window", "is required");
        return None;
    };
    let tolerance_ms = match &w.tolerance {
        None => Some(DEFAULT_TOLERANCE_MS),
        Some(d)
            if d.seconds >= 0
                && (0..1_000_000_000).contains(&d.nanos)
                && d.seconds <= MAX_TOLERANCE_MS / 1000 =>
        {
            Some((d.seconds * 1000 + i64::from(d.nanos) / 1_000_000).min(MAX_TOLERANCE_MS))
        }
        Some(_) => {
            v.push("window.tolerance", "must be between 0 and 1 hour");
            None
        }
    };
    let window = parse_window(
        v,
        "window.",
        w.start_time.as_ref(),
        w.end_time.as_ref(),
        MAX_RECON_DAYS,
    );
    Some(ReconPlan {
        window: window?,
        tolerance_ms: tolerance_ms?,
    })
}

pub(crate) fn class_to_pb(c: ReconClass) -> pb::ReconciliationClass {
    match c {
        ReconClass::Exact => pb::ReconciliationClass::Exact,
        ReconClass::WithinTolerance => pb::ReconciliationClass::WithinTolerance,
        ReconClass::Mismatch => pb::ReconciliationClass::Mismatch,
        ReconClass::MissingCarrierRecord => pb::ReconciliationClass::MissingCarrierRecord,
        ReconClass::MissingPlatformRecord => pb::ReconciliationClass::MissingPlatformRecord,
    }
}

/// The classes a discrepancy listing wants; empty means every class except EXACT.
pub(crate) fn parse_classes(v: &mut Violations, raw: &[i32]) -> Vec<ReconClass> {
    if raw.is_empty() {
        return ReconClass::ALL
            .into_iter()
            .filter(|c| *c != ReconClass::Exact)
            .collect();
    }
    let mut classes = Vec::new();
    for (i, r) in raw.iter().enumerate() {
        match ReconClass::ALL
            .into_iter()
            .find(|c| class_to_pb(*c) as i32 == *r)
        {
            Some(c) => classes.push(c),
            None => v.push(format!("classes[{i}]"), format!("unknown class {r}")),
        }
    }
    classes
}

/// Classifies one compared call; `None` when there is nothing to compare.
fn classify_row(row: &ReconRow, tolerance_ms: i64) -> Option<ReconClass> {
    reconcile::classify(row.platform, row.carrier_ms, tolerance_ms)
}

fn discrepancy(row: &ReconRow, class: ReconClass) -> pb::Discrepancy {
    let platform_ms = row.platform.map(|p| p.duration_ms);
    pb::Discrepancy {
        call_id: row.call_id.clone(),
        tenant_id: row.tenant_id.clone(),
        start_time: Some(timestamp(row.start_time_ms)),
        class: class_to_pb(class) as i32,
        platform_duration: platform_ms.map(duration_from_ms),
        carrier_duration: row.carrier_ms.map(duration_from_ms),
        difference: match (platform_ms, row.carrier_ms) {
            (Some(p), Some(c)) => Some(signed_duration(c.saturating_sub(p))),
            _ => None,
        },
    }
}

/// A signed millisecond difference as a protobuf Duration (seconds and nanos share a sign).
fn signed_duration(ms: i64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: ms / 1000,
        nanos: i32::try_from((ms % 1000) * 1_000_000).unwrap_or(0),
    }
}

/// The reconciliation report of `carrier` for a plan, paging through the joined calls.
pub(crate) async fn reconciliation_report(
    store: &Store,
    carrier: &CarrierId,
    plan: ReconPlan,
) -> ApiResult<pb::GetReconciliationReportResponse> {
    let mut totals = ReconTotals::default();
    let mut after = String::new();
    loop {
        let rows = store
            .reconciliation_page(carrier, plan.window, &after, RECON_PAGE)
            .await?;
        for row in &rows {
            if let Some(class) = classify_row(row, plan.tolerance_ms) {
                totals.add(class, row.platform.map(|p| p.duration_ms), row.carrier_ms);
            }
        }
        match rows.last() {
            Some(last) if rows.len() as u64 == RECON_PAGE => after = last.call_id.clone(),
            _ => break,
        }
    }
    Ok(pb::GetReconciliationReportResponse {
        counts: ReconClass::ALL
            .into_iter()
            .map(|c| pb::ReconciliationCount {
                class: class_to_pb(c) as i32,
                calls: totals.count(c),
            })
            .collect(),
        platform_seconds: totals.platform_ms() as f64 / 1000.0,
        carrier_seconds: totals.carrier_ms() as f64 / 1000.0,
        difference_percent: totals.difference_percent(),
        tolerance: Some(duration_from_ms(plan.tolerance_ms)),
    })
}

type DiscrepancyStream<R> = Pin<Box<dyn Stream<Item = Result<R, Status>> + Send>>;

/// Streams the discrepancies of `carrier` in call-id order, `wrap`ping each batch.
pub(crate) fn discrepancy_stream<R: Send + 'static>(
    store: Store,
    carrier: CarrierId,
    plan: ReconPlan,
    classes: Vec<ReconClass>,
    shutdown: CancellationToken,
    wrap: fn(Vec<pb::Discrepancy>) -> R,
) -> DiscrepancyStream<R> {
    let (tx, rx) = mpsc::channel::<Result<R, Status>>(2);
    tokio::spawn(
        async move {
            let mut after = String::new();
            let mut batch = Vec::new();
            loop {
                let rows = match store
                    .reconciliation_page(&carrier, plan.window, &after, RECON_PAGE)
                    .await
                {
                    Ok(rows) => rows,
                    Err(e) => {
                        let _ = tx.send(Err(ApiError::from(e).into())).await;
                        return;
                    }
                };
                for row in &rows {
                    if let Some(class) = classify_row(row, plan.tolerance_ms)
                        && classes.contains(&class)
                    {
                        batch.push(discrepancy(row, class));
                    }
                    if batch.len() >= DISCREPANCIES_PER_MESSAGE {
                        let msg = wrap(std::mem::take(&mut batch));
                        tokio::select! {
                            sent = tx.send(Ok(msg)) => if sent.is_err() { return },
                            () = shutdown.cancelled() => {
                                let _ = tx.try_send(Err(ApiError::ShuttingDown.into()));
                                return;
                            }
                        }
                    }
                }
                match rows.last() {
                    Some(last) if rows.len() as u64 == RECON_PAGE => after = last.call_id.clone(),
                    _ => break,
                }
            }
            if !batch.is_empty() {
                let _ = tx.send(Ok(wrap(batch))).await;
            }
        }
        .instrument(tracing::Span::current()),
    );
    Box::pin(ReceiverStream::new(rx))
}

#[tonic::async_trait]
impl CallDurationService for CallDurationApi {
    async fn report_call_durations(
        &self,
        request: Request<Streaming<pb::ReportCallDurationsRequest>>,
    ) -> Result<Response<pb::ReportCallDurationsResponse>, Status> {
        let carrier = self.auth.carrier(&request).await?;
        let mut stream = request.into_inner();
        let first: pb::ReportCallDurationsRequest = stream.message().await?.unwrap_or_default();
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
                while stream.message().await?.is_some() {}
                tracing::info!(upload_id, "upload already complete; returning its summary");
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
        let tally = ingest_detached(
            sink,
            self.metrics.clone(),
            messages,
            move |message: pb::ReportCallDurationsRequest| {
                message
                    .records
                    .iter()
                    .map(|r| Parsed {
                        call_id: r.call_id.clone(),
                        result: call_duration_from_pb(r).map(|d| (carrier_id.clone(), d)),
                    })
                    .collect()
            },
        )
        .await?;
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
            .ok_or_else(|| ApiError::NotFound {
                reason: "UPLOAD_NOT_FOUND",
                message: format!("no completed upload {upload_id}"),
                metadata: vec![("upload_id", upload_id.clone())],
            })?;
        Ok(Response::new(pb::GetUploadResponse {
            summary: Some(upload_summary(
                &upload_id,
                &done.tally,
                done.complete_time_ms,
            )),
        }))
    }

    type ListDiscrepanciesStream = DiscrepancyStream<pb::ListDiscrepanciesResponse>;

    async fn list_discrepancies(
        &self,
        request: Request<pb::ListDiscrepanciesRequest>,
    ) -> Result<Response<Self::ListDiscrepanciesStream>, Status> {
        let carrier = self.auth.carrier(&request).await?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let plan = parse_recon(&mut v, req.window.as_ref());
        let classes = parse_classes(&mut v, &req.classes);
        v.finish().map_err(ApiError::from)?;
        let plan = plan.ok_or_else(|| ApiError::Internal("window accepted without plan".into()))?;
        Ok(Response::new(discrepancy_stream(
            self.store.clone(),
            carrier.id,
            plan,
            classes,
            self.shutdown.clone(),
            |discrepancies| pb::ListDiscrepanciesResponse { discrepancies },
        )))
    }
}
