//! `AssignmentService`: a carrier lists, reads and watches its own numbers.

use std::time::Duration;

use tonic::{Request, Response, Status};

use super::Authorizer;
use super::framing::Framed;
use super::framing::servers::assignment_service_server::AssignmentService;
use super::page_token::{decode_page_token, encode_page_token, page_size};
use super::stream::{ServerStream, Streams};
use super::watch::{Start, WatchPlan, WatchSource};
use crate::domain::Violations;
use crate::domain::ids::{E164, TenantId};
use crate::domain::number::{NumberFilter, NumberStatus};
use crate::error::{ApiError, ApiResult};
use crate::pb::v1 as pb;
use crate::store::Store;
use crate::wire::numbers::status_filter_from_pb;

const DEFAULT_PROGRESS: Duration = Duration::from_secs(30);

/// Implementation of `opconnect.v1.AssignmentService`.
#[derive(Debug, Clone)]
pub(crate) struct AssignmentApi {
    store: Store,
    auth: Authorizer,
    streams: Streams,
}

impl AssignmentApi {
    /// The service over `store`; watches run on `streams`.
    pub(crate) fn new(store: Store, auth: Authorizer, streams: Streams) -> Self {
        Self {
            store,
            auth,
            streams,
        }
    }
}

fn parse_tenant_filter(v: &mut Violations, raw: &str) -> Option<TenantId> {
    if raw.is_empty() {
        None
    } else {
        v.check("tenant_id", TenantId::parse(raw))
    }
}

fn parse_status_filter(v: &mut Violations, raw: i32) -> Option<NumberStatus> {
    v.check("status", status_filter_from_pb(raw)).flatten()
}

fn plan_watch(req: &pb::WatchNumbersRequest) -> ApiResult<WatchPlan> {
    let mut v = Violations::default();
    let tenant_id = parse_tenant_filter(&mut v, &req.tenant_id);
    let start = match (req.start_revision, req.include_snapshot) {
        (Some(_), true) => {
            v.push("include_snapshot", "cannot be combined with start_revision");
            Start::Now
        }
        (Some(r), false) if r < 0 => {
            v.push("start_revision", "must not be negative");
            Start::Now
        }
        (Some(r), false) => Start::After(r),
        (None, true) => Start::Snapshot,
        (None, false) => Start::Now,
    };
    let progress = match &req.progress_interval {
        None => DEFAULT_PROGRESS,
        Some(d) if d.nanos == 0 && (1..=3600).contains(&d.seconds) => {
            Duration::from_secs(d.seconds.unsigned_abs())
        }
        Some(d) if d.seconds >= 1 && d.seconds < 3600 && (0..1_000_000_000).contains(&d.nanos) => {
            Duration::new(d.seconds.unsigned_abs(), d.nanos.unsigned_abs())
        }
        Some(_) => {
            v.push("progress_interval", "must be between 1 s and 1 h");
            DEFAULT_PROGRESS
        }
    };
    v.finish()?;
    Ok(WatchPlan {
        start,
        filter: NumberFilter {
            tenant_id,
            status: None,
        },
        progress,
    })
}

#[tonic::async_trait]
impl AssignmentService for AssignmentApi {
    async fn list_numbers(
        &self,
        request: Request<pb::ListNumbersRequest>,
    ) -> Result<Response<pb::ListNumbersResponse>, Status> {
        let carrier = self.auth.carrier(&request).await?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let limit = v.check(
            "page_size",
            page_size(req.page_size, 100, 1000).map_err(|e| e.description),
        );
        let tenant_id = parse_tenant_filter(&mut v, &req.tenant_id);
        let status = parse_status_filter(&mut v, req.status);
        let filters = format!("numbers|{}|{}", req.tenant_id, req.status);
        let after = v
            .check(
                "page_token",
                decode_page_token(&req.page_token, &filters).map_err(|e| e.description),
            )
            .flatten();
        let after = match after.map(|a| E164::parse(&a)) {
            Some(Err(_)) => {
                v.push("page_token", "is not a token from this listing");
                None
            }
            Some(Ok(a)) => Some(a),
            None => None,
        };
        v.finish().map_err(ApiError::from)?;
        let limit = limit.unwrap_or(100);
        let filter = NumberFilter { tenant_id, status };
        let page = self
            .store
            .list_numbers(&carrier.id, &filter, after.as_ref(), limit)
            .await
            .map_err(ApiError::from)?;
        let next_page_token = match page.numbers.last() {
            Some(last) if page.more => encode_page_token(&filters, last.number.as_str()),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListNumbersResponse {
            numbers: page.numbers.iter().map(Into::into).collect(),
            next_page_token,
            revision: page.revision,
        }))
    }

    async fn get_number(
        &self,
        request: Request<pb::GetNumberRequest>,
    ) -> Result<Response<pb::GetNumberResponse>, Status> {
        let carrier = self.auth.carrier(&request).await?;
        let req = request.into_inner();
        let number = E164::parse(&req.number).map_err(|e| ApiError::invalid("number", e))?;
        // Another carrier's number is indistinguishable from one that does not exist.
        let state = self
            .store
            .get_number(&carrier.id, &number)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::number_not_found(&req.number))?;
        Ok(Response::new(pb::GetNumberResponse {
            telephone_number: Some((&state).into()),
        }))
    }

    type WatchNumbersStream = ServerStream<Framed>;

    async fn watch_numbers(
        &self,
        request: Request<pb::WatchNumbersRequest>,
    ) -> Result<Response<Self::WatchNumbersStream>, Status> {
        let carrier = self.auth.carrier(&request).await?;
        let plan = plan_watch(request.get_ref())?;
        let read = super::audited::watch_read(&carrier.id, request.get_ref());
        let permit = self.auth.stream_permit(&carrier)?;
        let tail = self.streams.tails().numbers.of(&carrier.id);
        let source = WatchSource::new(self.store.clone(), carrier.id.clone(), plan, tail);
        Ok(Response::new(self.streams.open_audited(
            carrier.id,
            Some(permit),
            source,
            read,
        )))
    }
}
