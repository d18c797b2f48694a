//! Number repository: the state of each number and each carrier's gapless event log.
//!
//! Every write runs in one transaction that (1) locks the carrier row, (2) re-reads the
//! numbers it changes, (3) takes `n` revisions from the carrier's counter, (4) writes the new
//! states and the `n` events. Readers that resume after revision R therefore never miss a later
//! commit: revisions are handed out under the carrier's lock, in commit order.
//!
//! A number belongs to one carrier for good, and the write itself enforces it: the carrier
//! lock orders only writers of one carrier, so on PostgreSQL two carriers can both read a new
//! number as absent and both provision it. New numbers are therefore inserted with
//! `ON CONFLICT DO NOTHING`, and existing ones updated only where the stored owner is the
//! writer; fewer rows written than changes means another carrier got there first. The
//! transaction then rolls back and runs again ([`retry_write`]); the next read shows the other
//! carrier's number, and the domain rules refuse (`OwnedByOtherCarrier`). Rows are written in
//! number order, so writers that share numbers wait for each other in one order.

use std::collections::BTreeMap;

use sea_orm::sea_query::{Alias, Expr, ExprTrait, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect,
};

use super::batch::{Attempt, columns, per_statement, retry_write};
use super::carriers::{advance_revision, lock_carrier};
use super::entities::{carrier, number, number_event};
use super::lookup::by_key;
use super::{Store, StoreError, notify, now_ms};
use crate::domain::carrier::Carrier;
use crate::domain::ids::{CarrierId, E164};
use crate::domain::number::{
    self as rules, Assignment, EventKind, NumberEvent, NumberFilter, NumberPage, NumberState,
    NumberStatus, Provisioning, Transition, TransitionError,
};
use crate::feed::Notice;

fn status_code(status: NumberStatus) -> i16 {
    match status {
        NumberStatus::Provisioned => 1,
        NumberStatus::Assigned => 2,
        NumberStatus::Released => 3,
    }
}

/// One page of a watch's snapshot.
#[derive(Debug)]
pub(crate) struct SnapshotPage {
    /// The numbers of the page that match the filter, in their state at the snapshot revision.
    pub numbers: Vec<NumberState>,
    /// The last number read (matching or not): the next page starts after it.
    pub last: Option<E164>,
    /// Whether numbers may follow.
    pub more: bool,
}

pub(super) fn decode_state(json: &str) -> Result<NumberState, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(format!("number state: {e}")))
}

fn encode_state(state: &NumberState) -> Result<String, StoreError> {
    serde_json::to_string(state).map_err(|e| StoreError::Corrupt(format!("number state: {e}")))
}

impl TryFrom<number_event::Model> for NumberEvent {
    type Error = StoreError;

    fn try_from(m: number_event::Model) -> Result<Self, StoreError> {
        Ok(Self {
            revision: m.revision,
            kind: EventKind::from_code(m.kind)
                .ok_or_else(|| StoreError::Corrupt(format!("event kind {}", m.kind)))?,
            state: decode_state(&m.state)?,
            previous: m.previous.as_deref().map(decode_state).transpose()?,
            commit_time_ms: m.commit_time_ms,
        })
    }
}

/// A change to commit: the event kind, the state before (if any) and the state after.
struct Change {
    kind: EventKind,
    previous: Option<NumberState>,
    next: NumberState,
}

/// Reads the current states of `numbers` inside `tx`, keyed by number.
async fn read_states(
    tx: &DatabaseTransaction,
    numbers: &[E164],
) -> Result<BTreeMap<String, NumberState>, StoreError> {
    let mut states = BTreeMap::new();
    for chunk in per_statement(numbers.iter().map(E164::as_str), 1) {
        let rows = number::Entity::find()
            .filter(number::Column::Number.is_in(chunk))
            .all(tx)
            .await?;
        for row in rows {
            states.insert(row.number.clone(), decode_state(&row.state)?);
        }
    }
    Ok(states)
}

/// What [`commit_changes`] wrote.
struct Written {
    /// The events, in the order of the changes (and of their revisions); each one's `state` is
    /// its number as stored.
    events: Vec<NumberEvent>,
    /// The carrier's revision after them.
    revision: i64,
}

/// Takes revisions for `changes` from the carrier's counter and writes states and events; or
/// `None` when a concurrent writer of another carrier wrote some of the numbers first (the
/// caller rolls back and reports [`Attempt::Raced`]).
async fn commit_changes(
    tx: &DatabaseTransaction,
    carrier_id: &str,
    changes: Vec<Change>,
) -> Result<Option<Written>, StoreError> {
    let n = i64::try_from(changes.len()).map_err(|_| StoreError::Corrupt("batch size".into()))?;
    let carrier = advance_revision(tx, carrier_id, n).await?;
    if changes.is_empty() {
        return Ok(Some(Written {
            events: Vec::new(),
            revision: carrier.number_revision,
        }));
    }
    let first = carrier.number_revision - n + 1;
    let commit_time_ms = now_ms();
    let mut events = Vec::with_capacity(changes.len());
    // (number, whether it is new, row): new numbers are inserted, existing ones updated.
    let mut number_rows = Vec::with_capacity(changes.len());
    let mut event_rows = Vec::with_capacity(changes.len());
    for (revision, change) in (first..).zip(changes) {
        let mut next = change.next;
        next.revision = revision;
        next.update_time_ms = commit_time_ms;
        let state_json = encode_state(&next)?;
        number_rows.push((
            next.number.to_string(),
            change.previous.is_none(),
            number::ActiveModel {
                number: Set(next.number.to_string()),
                carrier_id: Set(next.carrier_id.to_string()),
                tenant_id: Set(next.tenant_id.as_str().to_owned()),
                status: Set(status_code(next.status)),
                revision: Set(revision),
                state: Set(state_json.clone()),
            },
        ));
        event_rows.push(number_event::ActiveModel {
            carrier_id: Set(next.carrier_id.to_string()),
            revision: Set(revision),
            number: Set(next.number.to_string()),
            tenant_id: Set(next.tenant_id.as_str().to_owned()),
            kind: Set(change.kind.code()),
            state: Set(state_json),
            previous: Set(change.previous.as_ref().map(encode_state).transpose()?),
            commit_time_ms: Set(commit_time_ms),
        });
        events.push(NumberEvent {
            revision,
            kind: change.kind,
            state: next,
            previous: change.previous,
            commit_time_ms,
        });
    }
    // A request names a number at most once (validation refuses repeats), so each number has
    // one row here. Number order: writers sharing numbers wait for each other in one order.
    number_rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let expected = number_rows.len() as u64;
    let (new, existing): (Vec<_>, Vec<_>) = number_rows.into_iter().partition(|row| row.1);
    let mut written = 0;
    let new = new.into_iter().map(|(_, _, row)| row);
    for chunk in per_statement(new, columns::<number::Entity>()) {
        written += number::Entity::insert_many(chunk)
            .on_conflict(
                OnConflict::column(number::Column::Number)
                    .do_nothing()
                    .to_owned(),
            )
            .exec_without_returning(tx)
            .await?;
    }
    // Rows the writer does not own are left alone and not counted; the owner never changes.
    let existing = existing.into_iter().map(|(_, _, row)| row);
    for chunk in per_statement(existing, columns::<number::Entity>()) {
        written += number::Entity::insert_many(chunk)
            .on_conflict(
                OnConflict::column(number::Column::Number)
                    .update_columns([
                        number::Column::TenantId,
                        number::Column::Status,
                        number::Column::Revision,
                        number::Column::State,
                    ])
                    .action_and_where(
                        Expr::col((number::Entity, number::Column::CarrierId))
                            .equals((Alias::new("excluded"), number::Column::CarrierId)),
                    )
                    .to_owned(),
            )
            .exec_without_returning(tx)
            .await?;
    }
    if written != expected {
        return Ok(None);
    }
    for chunk in per_statement(event_rows, columns::<number_event::Entity>()) {
        number_event::Entity::insert_many(chunk)
            .exec_without_returning(tx)
            .await?;
    }
    Ok(Some(Written {
        events,
        revision: carrier.number_revision,
    }))
}

fn transition_error(number: &E164) -> impl Fn(TransitionError) -> StoreError + '_ {
    move |error| StoreError::Transition {
        number: number.to_string(),
        error,
    }
}

impl Store {
    /// Provisions `numbers` of `carrier` to a tenant, all or none.
    pub async fn provision_numbers(
        &self,
        carrier: &CarrierId,
        numbers: &[E164],
        request: &Provisioning,
    ) -> Result<Vec<NumberState>, StoreError> {
        retry_write(|| self.provision_numbers_once(carrier, numbers, request)).await
    }

    async fn provision_numbers_once(
        &self,
        carrier: &CarrierId,
        numbers: &[E164],
        request: &Provisioning,
    ) -> Result<Attempt<Vec<NumberState>>, StoreError> {
        // Read before the write: see `Feed::publish_events`.
        let erased_epoch = self.shared.feed.erased_epoch(carrier.as_str());
        let tx = self.begin_write().await?;
        lock_carrier(&tx, carrier.as_str()).await?;
        let current = read_states(&tx, numbers).await?;
        let now = now_ms();
        let mut changes = Vec::new();
        let mut unchanged = BTreeMap::new();
        for n in numbers {
            let before = current.get(n.as_str());
            match rules::provision(before, n, carrier, request, now).map_err(transition_error(n))? {
                Some((kind, next)) => changes.push(Change {
                    kind,
                    previous: before.cloned(),
                    next,
                }),
                None => {
                    if let Some(state) = before {
                        unchanged.insert(n.to_string(), state.clone());
                    }
                }
            }
        }
        let Some(written) = commit_changes(&tx, carrier.as_str(), changes).await? else {
            tx.rollback().await?;
            return Ok(Attempt::Raced);
        };
        if !written.events.is_empty() {
            notify(
                &tx,
                &Notice::Revision(carrier.to_string(), written.revision),
            )
            .await?;
        }
        tx.commit().await?;
        self.shared.feed.publish_events(
            carrier.as_str(),
            erased_epoch,
            &written.events,
            written.revision,
        );
        let mut by_number: BTreeMap<String, NumberState> = unchanged;
        by_number.extend(
            written
                .events
                .into_iter()
                .map(|e| (e.state.number.to_string(), e.state)),
        );
        Ok(Attempt::Committed(
            numbers
                .iter()
                .filter_map(|n| by_number.get(n.as_str()).cloned())
                .collect(),
        ))
    }

    /// The carrier that owns `number`, if the number exists.
    pub async fn number_owner(&self, number: &E164) -> Result<Option<Carrier>, StoreError> {
        let Some(row) =
            by_key(number::Entity::find_by_id(number.as_str()), &self.shared.db).await?
        else {
            return Ok(None);
        };
        self.carrier(&row.carrier_id).await
    }

    /// Applies one transition to one existing number.
    async fn change_number(
        &self,
        number: &E164,
        transition: impl Fn(&NumberState) -> Result<Transition, TransitionError>,
    ) -> Result<NumberState, StoreError> {
        retry_write(|| self.change_number_once(number, &transition)).await
    }

    /// One attempt of [`Store::change_number`]: finds the owner, locks it, re-reads the number
    /// under that lock and writes only while the owner is still the one locked.
    async fn change_number_once(
        &self,
        number: &E164,
        transition: impl Fn(&NumberState) -> Result<Transition, TransitionError>,
    ) -> Result<Attempt<NumberState>, StoreError> {
        let not_found = || StoreError::NumberNotFound(number.to_string());
        let owner = by_key(number::Entity::find_by_id(number.as_str()), &self.shared.db)
            .await?
            .ok_or_else(not_found)?
            .carrier_id;
        // Read before the write: see `Feed::publish_events`.
        let erased_epoch = self.shared.feed.erased_epoch(&owner);
        let tx = self.begin_write().await?;
        lock_carrier(&tx, &owner).await?;
        let current = read_states(&tx, std::slice::from_ref(number))
            .await?
            .remove(number.as_str())
            .ok_or_else(not_found)?;
        if current.carrier_id.as_str() != owner {
            // The lock taken is not the owner's: never write under it.
            tx.rollback().await?;
            return Ok(Attempt::Raced);
        }
        let Some((kind, next)) = transition(&current).map_err(transition_error(number))? else {
            tx.commit().await?;
            return Ok(Attempt::Committed(current));
        };
        let change = Change {
            kind,
            previous: Some(current),
            next,
        };
        let Some(mut written) = commit_changes(&tx, &owner, vec![change]).await? else {
            tx.rollback().await?;
            return Ok(Attempt::Raced);
        };
        notify(&tx, &Notice::Revision(owner.clone(), written.revision)).await?;
        tx.commit().await?;
        self.shared
            .feed
            .publish_events(&owner, erased_epoch, &written.events, written.revision);
        written
            .events
            .pop()
            .map(|e| Attempt::Committed(e.state))
            .ok_or_else(not_found)
    }

    /// Assigns a number or changes its assignment.
    pub async fn assign_number(
        &self,
        number: &E164,
        assignment: Assignment,
    ) -> Result<NumberState, StoreError> {
        let now = now_ms();
        self.change_number(number, |current| {
            rules::assign(current, assignment.clone(), now)
        })
        .await
    }

    /// Unassigns an assigned number.
    pub async fn unassign_number(&self, number: &E164) -> Result<NumberState, StoreError> {
        let now = now_ms();
        self.change_number(number, |current| rules::unassign(current, now))
            .await
    }

    /// Releases numbers, all or none, possibly of several carriers.
    pub async fn release_numbers(&self, numbers: &[E164]) -> Result<Vec<NumberState>, StoreError> {
        retry_write(|| self.release_numbers_once(numbers)).await
    }

    async fn release_numbers_once(
        &self,
        numbers: &[E164],
    ) -> Result<Attempt<Vec<NumberState>>, StoreError> {
        let tx = self.begin_write().await?;
        let current = read_states(&tx, numbers).await?;
        if let Some(missing) = numbers.iter().find(|n| !current.contains_key(n.as_str())) {
            return Err(StoreError::NumberNotFound(missing.to_string()));
        }
        // Lock carriers in id order so concurrent multi-carrier releases cannot deadlock.
        let mut by_carrier: BTreeMap<String, Vec<&NumberState>> = BTreeMap::new();
        for state in current.values() {
            by_carrier
                .entry(state.carrier_id.to_string())
                .or_default()
                .push(state);
        }
        for carrier_id in by_carrier.keys() {
            lock_carrier(&tx, carrier_id).await?;
        }
        // Re-read under the locks: on PostgreSQL a writer may have committed in between.
        let current = read_states(&tx, numbers).await?;
        if current
            .values()
            .any(|state| !by_carrier.contains_key(state.carrier_id.as_str()))
        {
            // A number whose owner is not locked: never write under the wrong lock.
            tx.rollback().await?;
            return Ok(Attempt::Raced);
        }
        let now = now_ms();
        let mut results: BTreeMap<String, NumberState> = BTreeMap::new();
        let mut changes: BTreeMap<String, Vec<Change>> = BTreeMap::new();
        for state in current.values() {
            match rules::release(state, now) {
                Some((kind, next)) => changes
                    .entry(state.carrier_id.to_string())
                    .or_default()
                    .push(Change {
                        kind,
                        previous: Some(state.clone()),
                        next,
                    }),
                None => {
                    results.insert(state.number.to_string(), state.clone());
                }
            }
        }
        let mut published = Vec::new();
        for (carrier_id, carrier_changes) in changes {
            // Any time before the commit will do: see `Feed::publish_events`.
            let erased_epoch = self.shared.feed.erased_epoch(&carrier_id);
            let Some(written) = commit_changes(&tx, &carrier_id, carrier_changes).await? else {
                tx.rollback().await?;
                return Ok(Attempt::Raced);
            };
            notify(&tx, &Notice::Revision(carrier_id.clone(), written.revision)).await?;
            results.extend(
                written
                    .events
                    .iter()
                    .map(|e| (e.state.number.to_string(), e.state.clone())),
            );
            published.push((carrier_id, erased_epoch, written));
        }
        tx.commit().await?;
        for (carrier_id, erased_epoch, written) in published {
            self.shared.feed.publish_events(
                &carrier_id,
                erased_epoch,
                &written.events,
                written.revision,
            );
        }
        Ok(Attempt::Committed(
            numbers
                .iter()
                .filter_map(|n| results.get(n.as_str()).cloned())
                .collect(),
        ))
    }

    /// One of `carrier`'s numbers, read together with the lookups queued beside it
    /// (`batched.rs`); `None` when it does not exist or is another carrier's.
    pub async fn get_number(
        &self,
        carrier: &CarrierId,
        number: &E164,
    ) -> Result<Option<NumberState>, StoreError> {
        self.shared
            .number_reads
            .get(&self.shared.db, number.as_str().to_owned())
            .await?
            .filter(|row| row.carrier_id == carrier.as_str())
            .map(|row| decode_state(&row.state))
            .transpose()
    }

    /// Up to `limit` of `carrier`'s numbers after `after`, with the revision they were read at.
    pub async fn list_numbers(
        &self,
        carrier: &CarrierId,
        filter: &NumberFilter,
        after: Option<&E164>,
        limit: u64,
    ) -> Result<NumberPage, StoreError> {
        let tx = self.begin_snapshot().await?;
        let revision = carrier_revision(&tx, carrier.as_str()).await?;
        let mut rows = numbers_query(carrier, filter, after)
            .limit(limit + 1)
            .all(&tx)
            .await?;
        tx.commit().await?;
        let more = rows.len() as u64 > limit;
        rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        let numbers = rows
            .iter()
            .map(|row| decode_state(&row.state))
            .collect::<Result<_, _>>()?;
        Ok(NumberPage {
            numbers,
            more,
            revision,
        })
    }

    /// One page of the snapshot of `carrier`'s numbers as they were at `revision`: up to
    /// `limit` numbers after `after` (in number order), those matching `filter` in their state
    /// at `revision`. Each page is read in a short snapshot of its own, so a slow reader holds
    /// no transaction; a number changed since `revision` is put back to its state then, from
    /// the `previous` of its first later event, and one created since is left out. The pages
    /// together are therefore exactly the numbers at `revision`, however long the reading
    /// takes. `None` when events after `revision` were purged meanwhile (the snapshot can no
    /// longer be reconstructed).
    pub(crate) async fn snapshot_page(
        &self,
        carrier: &CarrierId,
        filter: &NumberFilter,
        revision: i64,
        after: Option<&E164>,
        limit: u64,
    ) -> Result<Option<SnapshotPage>, StoreError> {
        let tx = self.begin_snapshot().await?;
        let row = by_key(carrier::Entity::find_by_id(carrier.as_str()), &tx)
            .await?
            .ok_or_else(|| StoreError::CarrierNotFound(carrier.to_string()))?;
        if row.events_purged_through > revision {
            tx.commit().await?;
            return Ok(None);
        }
        // The filter applies to the state at `revision`, not to today's columns.
        let rows = numbers_query(carrier, &NumberFilter::default(), after)
            .limit(limit)
            .all(&tx)
            .await?;
        let changed: Vec<&str> = rows
            .iter()
            .filter(|r| r.revision > revision)
            .map(|r| r.number.as_str())
            .collect();
        let mut then: BTreeMap<String, Option<NumberState>> = BTreeMap::new();
        for chunk in per_statement(changed, 1) {
            let events = number_event::Entity::find()
                .filter(number_event::Column::CarrierId.eq(carrier.as_str()))
                .filter(number_event::Column::Revision.gt(revision))
                .filter(number_event::Column::Number.is_in(chunk))
                .order_by_asc(number_event::Column::Revision)
                .all(&tx)
                .await?;
            for event in events {
                if let std::collections::btree_map::Entry::Vacant(first) = then.entry(event.number)
                {
                    first.insert(event.previous.as_deref().map(decode_state).transpose()?);
                }
            }
        }
        tx.commit().await?;
        let more = rows.len() as u64 >= limit;
        let last = rows.last().map(|r| r.number.clone());
        let mut numbers = Vec::with_capacity(rows.len());
        for row in rows {
            let state = if row.revision > revision {
                then.remove(&row.number).flatten()
            } else {
                Some(decode_state(&row.state)?)
            };
            numbers.extend(state.filter(|s| filter.matches(s)));
        }
        let last = last
            .map(|n| E164::parse(&n).map_err(StoreError::Corrupt))
            .transpose()?;
        Ok(Some(SnapshotPage {
            numbers,
            last,
            more,
        }))
    }

    /// Up to `limit` events of `carrier` with a revision greater than `after`, in order.
    pub async fn number_events_after(
        &self,
        carrier: &CarrierId,
        after: i64,
        limit: u64,
    ) -> Result<Vec<NumberEvent>, StoreError> {
        number_event::Entity::find()
            .filter(number_event::Column::CarrierId.eq(carrier.as_str()))
            .filter(number_event::Column::Revision.gt(after))
            .order_by_asc(number_event::Column::Revision)
            .limit(limit)
            .all(&self.shared.db)
            .await?
            .into_iter()
            .map(NumberEvent::try_from)
            .collect()
    }

    /// Purges number events committed before `cutoff_ms`, at most `batch` revisions per
    /// transaction, and advances each carrier's purge mark. Returns how many were deleted.
    pub(crate) async fn purge_number_events(
        &self,
        cutoff_ms: i64,
        batch: u64,
    ) -> Result<u64, StoreError> {
        self.purge_log::<number_event::Entity>(cutoff_ms, batch)
            .await
    }
}

async fn carrier_revision<C: ConnectionTrait>(tx: &C, id: &str) -> Result<i64, StoreError> {
    by_key(carrier::Entity::find_by_id(id), tx)
        .await?
        .map(|c| c.number_revision)
        .ok_or_else(|| StoreError::CarrierNotFound(id.to_owned()))
}

fn numbers_query(
    carrier: &CarrierId,
    filter: &NumberFilter,
    after: Option<&E164>,
) -> sea_orm::Select<number::Entity> {
    let mut query = number::Entity::find()
        .filter(number::Column::CarrierId.eq(carrier.as_str()))
        .order_by_asc(number::Column::Number);
    if let Some(tenant) = &filter.tenant_id {
        query = query.filter(number::Column::TenantId.eq(tenant.as_str()));
    }
    if let Some(status) = filter.status {
        query = query.filter(number::Column::Status.eq(status_code(status)));
    }
    if let Some(after) = after {
        query = query.filter(number::Column::Number.gt(after.as_str()));
    }
    query
}
