//! Reconciliation shared by `CallDurationService` (a carrier's own view) and
//! `PlatformService` (any carrier): request validation, the report, and the discrepancy
//! stream's source.

use std::collections::VecDeque;
use std::time::Duration;

use super::stream::{Source, Step};
use crate::domain::Violations;
use crate::domain::calendar::Window;
use crate::domain::ids::CarrierId;
use crate::domain::reconcile::{self, DEFAULT_TOLERANCE_MS, ReconClass, ReconRow, ReconTotals};
use crate::error::ApiResult;
use crate::feed::CarrierSignal;
use crate::pb::v1 as pb;
use crate::store::Store;
use crate::wire::time::{duration_from_ms, required_time_ms, timestamp};

/// Calls read from the database per reconciliation page.
const RECON_PAGE: u64 = 5_000;
/// Discrepancies per response message.
const DISCREPANCIES_PER_MESSAGE: usize = 1_000;
/// Longest reconciliation window.
const MAX_RECON_DAYS: i64 = 92;
/// Largest tolerance.
const MAX_TOLERANCE_MS: i64 = 3_600_000;

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
    v.check(
        format!("{prefix}end_time"),
        Window::new(from_ms, to_ms, max_days),
    )
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
            (Some(p), Some(c)) => Some(duration_from_ms(c.saturating_sub(p))),
            _ => None,
        },
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

/// The discrepancies of one carrier in call-id order, `wrap`ped in batches.
pub(crate) struct DiscrepancySource<R> {
    store: Store,
    carrier: CarrierId,
    plan: ReconPlan,
    classes: Vec<ReconClass>,
    wrap: fn(Vec<pb::Discrepancy>) -> R,
    /// The last call id read.
    after: String,
    /// Every call of the window was read.
    exhausted: bool,
    /// Discrepancies read but not yet sent.
    pending: VecDeque<pb::Discrepancy>,
}

impl<R> DiscrepancySource<R> {
    /// The discrepancies of `carrier` under `plan` in `classes`.
    pub(crate) fn new(
        store: Store,
        carrier: CarrierId,
        plan: ReconPlan,
        classes: Vec<ReconClass>,
        wrap: fn(Vec<pb::Discrepancy>) -> R,
    ) -> Self {
        Self {
            store,
            carrier,
            plan,
            classes,
            wrap,
            after: String::new(),
            exhausted: false,
            pending: VecDeque::new(),
        }
    }
}

impl<R: prost::Message + Send + 'static> Source for DiscrepancySource<R> {
    type Message = R;
    const KIND: &'static str = "discrepancies";

    async fn next(&mut self, _known: &CarrierSignal) -> ApiResult<Step<R>> {
        while self.pending.len() < DISCREPANCIES_PER_MESSAGE && !self.exhausted {
            let rows = self
                .store
                .reconciliation_page(&self.carrier, self.plan.window, &self.after, RECON_PAGE)
                .await?;
            for row in &rows {
                if let Some(class) = classify_row(row, self.plan.tolerance_ms)
                    && self.classes.contains(&class)
                {
                    self.pending.push_back(discrepancy(row, class));
                }
            }
            match rows.last() {
                Some(last) if rows.len() as u64 == RECON_PAGE => {
                    self.after.clone_from(&last.call_id);
                }
                _ => self.exhausted = true,
            }
        }
        if self.pending.is_empty() {
            return Ok(Step::End);
        }
        let take = self.pending.len().min(DISCREPANCIES_PER_MESSAGE);
        Ok(Step::Send((self.wrap)(
            self.pending.drain(..take).collect(),
        )))
    }

    fn idle_after(&self) -> Duration {
        // Never caught up: a listing reads to its end and stops.
        Duration::from_secs(3600)
    }
}
