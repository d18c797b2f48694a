//! Persistence with sea-orm: SQLite (embedded default, WAL) or PostgreSQL, same code and
//! migrations. Repositories return domain types; sea-orm models never leave this module.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sea_orm::sqlx::sqlite::SqliteConnectOptions;
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend,
    DbErr, IsolationLevel, SqliteTransactionMode, Statement, TransactionOptions, TransactionTrait,
};
use sea_orm_migration::MigratorTrait;
use tokio_util::sync::CancellationToken;

use crate::domain::number::TransitionError;
use crate::feed::{Feed, Notice};

mod audit;
mod batch;
mod batched;
mod carriers;
mod checkpoint;
mod durations;
mod entities;
mod erasure;
mod export;
mod failure;
mod keyed_reads;
mod logs;
mod lookup;
pub mod migration;
mod numbers;
mod purge_runs;
mod record_kinds;
mod records;
mod redaction;

pub(crate) use durations::EncodedDuration;
pub(crate) use erasure::Erased;
pub use failure::Constraint;
pub(crate) use records::{Encoded, LogRecord};

/// Advisory-lock key taken while migrating on PostgreSQL, so instances starting together do
/// not race (ASCII "opcnmigr").
const MIGRATION_LOCK_KEY: i64 = 0x6f70_636e_6d69_6772;

/// Advisory-lock key held by the one instance running retention purges (ASCII "opcnprge").
pub(crate) const PURGE_LOCK_KEY: i64 = 0x6f70_636e_7072_6765;

/// How long a SQLite statement waits for another connection's lock.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The PostgreSQL channel change notices travel on between instances.
const NOTIFY_CHANNEL: &str = "opconnect_changes";

/// Why a store operation failed. A `DbErr` becomes `Conflict`, `Constraint` or `Db` by what
/// the database said (`failure.rs`).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed or is unreachable.
    #[error("database error: {0}")]
    Db(#[source] DbErr),
    /// A transient conflict with concurrent writers (a deadlock, a serialization failure, a
    /// lock not available, SQLite busy, a lost race for the same keys) that the write's
    /// retries did not settle. Running the request again later may succeed.
    #[error("conflict with concurrent writers: {0}")]
    Conflict(#[source] DbErr),
    /// The write broke a constraint that only the database checked.
    #[error("{constraint:?} constraint violated: {source}")]
    Constraint {
        /// Which kind.
        constraint: Constraint,
        /// The database's error, for the log.
        source: DbErr,
    },
    /// No carrier with this id.
    #[error("carrier {0} not found")]
    CarrierNotFound(String),
    /// A carrier with this id exists with other attributes.
    #[error("carrier {0} exists with other attributes")]
    CarrierExists(String),
    /// No number with this value (for this caller).
    #[error("number {0} not found")]
    NumberNotFound(String),
    /// The number's state forbids the change.
    #[error("number {number}: {error:?}")]
    Transition {
        /// The number concerned.
        number: String,
        /// Why.
        error: TransitionError,
    },
    /// A stored row cannot be read back (a bug or a hand-edited database).
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

/// Connection settings of the store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// `sqlite://...` or `postgres://...`.
    pub url: String,
    /// Maximum pool connections.
    pub max_connections: u32,
    /// How long a query waits for a pooled connection before failing.
    pub acquire_timeout: Duration,
}

/// Handle to the database; cheap to clone, and small: every stream holds one, so its state
/// sits behind one `Arc` (a clone of the fields themselves was 144 bytes).
#[derive(Clone, Debug)]
pub struct Store {
    shared: Arc<Shared>,
}

/// What every clone of a [`Store`] shares.
#[derive(Debug)]
struct Shared {
    db: DatabaseConnection,
    /// Where write transactions run: on SQLite (a file) a pool of one connection of its own,
    /// elsewhere `db`.
    writer: DatabaseConnection,
    /// Woken after every commit that readers may be waiting for.
    feed: Feed,
    /// The PostgreSQL URL, for the listener's own connection; `None` on SQLite.
    postgres_url: Option<String>,
    /// The SQLite database file the pool opened (absolute), for [`Store::ping`]; `None` on
    /// PostgreSQL and for an in-memory database.
    sqlite_file: Option<PathBuf>,
    /// SQLite (a file): the WAL checkpoints run beside the writer; `None` elsewhere.
    checkpoints: Option<checkpoint::Checkpoints>,
    /// `GetNumber` lookups, read together while they queue.
    number_reads: batched::Batched<keyed_reads::NumberRows>,
    /// The number-event log bounds watches read when they start, read together while they
    /// queue.
    number_log_bounds: batched::Batched<keyed_reads::LogBoundsRows<entities::number_event::Entity>>,
}

impl Store {
    /// Connects, applies SQLite's durability and concurrency settings, and runs migrations.
    pub async fn open(options: &StoreOptions) -> Result<Self, StoreError> {
        Self::open_measured(options, None).await
    }

    /// Like [`Store::open`], timing every statement into `metrics` when given.
    pub(crate) async fn open_measured(
        options: &StoreOptions,
        metrics: Option<std::sync::Arc<crate::metrics::StreamMetrics>>,
    ) -> Result<Self, StoreError> {
        let mut connect = connect_options(options);
        connect
            .max_connections(options.max_connections)
            .min_connections(1);
        let mut db = Database::connect(connect).await?;
        if let Some(metrics) = &metrics {
            let metrics = metrics.clone();
            db.set_metric_callback(move |info| metrics.db_query(info.elapsed));
        }
        let postgres_url =
            (db.get_database_backend() == DbBackend::Postgres).then(|| options.url.clone());
        let sqlite_file = match db.get_database_backend() {
            DbBackend::Sqlite => sqlite_main_file(&db).await?,
            _ => None,
        };
        // SQLite has one writer at a time anyway. Write transactions get a connection of their
        // own, so that its page cache stays warm: a pool hands out its connections in turn,
        // and each one's cache is stale after another connection wrote (measured: 2,000-row
        // commits of durations 11-12 ms through the pool, every fifth one 23-29 ms).
        let writer = match &sqlite_file {
            Some(_) => {
                let mut connect = connect_options(options);
                // Checkpoints run beside the writer (`checkpoint.rs`).
                connect.map_sqlx_sqlite_opts(|opts| {
                    sqlite_options(opts).pragma(
                        "wal_autocheckpoint",
                        checkpoint::WRITER_AUTOCHECKPOINT_PAGES.to_string(),
                    )
                });
                // A writer waits for the connection as long as it would wait for SQLite's
                // write lock.
                connect
                    .max_connections(1)
                    .min_connections(1)
                    .acquire_timeout(SQLITE_BUSY_TIMEOUT.max(options.acquire_timeout));
                let mut writer = Database::connect(connect).await?;
                if let Some(metrics) = metrics {
                    writer.set_metric_callback(move |info| metrics.db_query(info.elapsed));
                }
                writer
            }
            None => db.clone(),
        };
        let checkpoints = sqlite_file
            .as_ref()
            .map(|_| checkpoint::Checkpoints::start(&db));
        let store = Self {
            shared: Arc::new(Shared {
                writer,
                db,
                feed: Feed::default(),
                postgres_url,
                sqlite_file,
                checkpoints,
                number_reads: batched::Batched::default(),
                number_log_bounds: batched::Batched::default(),
            }),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Applies pending migrations; on PostgreSQL under a transaction-scoped advisory lock.
    async fn migrate(&self) -> Result<(), StoreError> {
        match self.shared.db.get_database_backend() {
            DbBackend::Postgres => {
                let tx = self.shared.db.begin().await?;
                tx.execute_unprepared(&format!(
                    "SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})"
                ))
                .await?;
                migration::Migrator::up(&tx, None).await?;
                tx.commit().await?;
            }
            _ => migration::Migrator::up(&self.shared.db, None).await?,
        }
        Ok(())
    }

    /// Begins a write transaction. On SQLite it is IMMEDIATE: the write lock is taken at
    /// `BEGIN`, so a read-then-write never fails with "database is locked".
    async fn begin_write(&self) -> Result<DatabaseTransaction, DbErr> {
        if let Some(checkpoints) = &self.shared.checkpoints {
            checkpoints.write_begins();
        }
        self.shared
            .writer
            .begin_with_options(TransactionOptions {
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                ..Default::default()
            })
            .await
    }

    /// Begins a read transaction that sees one consistent snapshot (REPEATABLE READ on
    /// PostgreSQL; a deferred transaction on SQLite, whose first read fixes the snapshot).
    async fn begin_snapshot(&self) -> Result<DatabaseTransaction, DbErr> {
        let isolation = match self.shared.db.get_database_backend() {
            DbBackend::Postgres => Some(IsolationLevel::RepeatableRead),
            _ => None,
        };
        self.shared
            .db
            .begin_with_options(TransactionOptions {
                isolation_level: isolation,
                sqlite_transaction_mode: Some(SqliteTransactionMode::Deferred),
                ..Default::default()
            })
            .await
    }

    /// The change notifications of this store's writes.
    pub fn feed(&self) -> &Feed {
        &self.shared.feed
    }

    /// On PostgreSQL, listens for other instances' change notices on a dedicated connection
    /// and feeds them to local streams, until `stop`. After the connection drops, every stream
    /// is woken to re-read the database: a missed notice costs latency, never data.
    pub fn spawn_listener(&self, stop: CancellationToken) -> Option<tokio::task::JoinHandle<()>> {
        let url = self.shared.postgres_url.clone()?;
        let feed = self.shared.feed.clone();
        Some(tokio::spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = listen(&url, &feed) => {}
            }
        }))
    }

    /// Runs `work` unless another instance is purging right now; returns its output, or
    /// `None` when another instance holds the purge lock. On PostgreSQL the lock is a session
    /// advisory lock on a connection of its own (not the pool's, where lock and unlock could
    /// land on different sessions); it is released when the work ends or, if this process
    /// dies, when its session does. SQLite has one instance per file: the work always runs.
    pub(crate) async fn exclusively<F: std::future::Future>(
        &self,
        work: F,
    ) -> Result<Option<F::Output>, StoreError> {
        use sea_orm::sqlx::{Connection, Row, postgres::PgConnection};
        let Some(url) = &self.shared.postgres_url else {
            return Ok(Some(work.await));
        };
        let db_err = |e: sea_orm::sqlx::Error| StoreError::Db(DbErr::Custom(e.to_string()));
        let mut conn = PgConnection::connect(url).await.map_err(db_err)?;
        let locked: bool = sea_orm::sqlx::query("SELECT pg_try_advisory_lock($1)")
            .bind(PURGE_LOCK_KEY)
            .fetch_one(&mut conn)
            .await
            .and_then(|row| row.try_get(0))
            .map_err(db_err)?;
        let output = if locked {
            let output = work.await;
            let _ = sea_orm::sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(PURGE_LOCK_KEY)
                .execute(&mut conn)
                .await;
            Some(output)
        } else {
            None
        };
        let _ = conn.close().await;
        Ok(output)
    }

    /// The pool's connections now: (idle, in use).
    pub(crate) fn pool_connections(&self) -> (u32, u32) {
        let (size, idle) = match self.shared.db.get_database_backend() {
            DbBackend::Postgres => {
                let pool = self.shared.db.get_postgres_connection_pool();
                (pool.size(), pool.num_idle())
            }
            _ => {
                let pool = self.shared.db.get_sqlite_connection_pool();
                (pool.size(), pool.num_idle())
            }
        };
        let idle = u32::try_from(idle).unwrap_or(u32::MAX);
        (idle, size.saturating_sub(idle))
    }

    /// Whether the database answers: `SELECT 1` through the pool and, on SQLite, a `SELECT`
    /// on a fresh read-only connection to the database file. The second part is what notices
    /// a SQLite database going away: the pool's connections keep their open file descriptors
    /// and answer `SELECT 1` (and even commit) after the file was moved, deleted or had its
    /// permissions removed, while every new connection would fail (or, with `mode=rwc`,
    /// create an empty database). Cheap: one round trip, plus on SQLite one open and one read
    /// of the file's first page. The caller bounds it with a timeout.
    pub(crate) async fn ping(&self) -> Result<(), StoreError> {
        self.shared.db.execute_unprepared("SELECT 1").await?;
        if let Some(path) = &self.shared.sqlite_file {
            use sea_orm::sqlx::sqlite::SqliteConnectOptions;
            use sea_orm::sqlx::{ConnectOptions as _, Connection as _};
            let db_err = |e: sea_orm::sqlx::Error| StoreError::Db(DbErr::Custom(e.to_string()));
            let mut conn = SqliteConnectOptions::new()
                .filename(path)
                .read_only(true)
                .create_if_missing(false)
                .connect()
                .await
                .map_err(db_err)?;
            let read = sea_orm::sqlx::query("SELECT count(*) FROM sqlite_master")
                .fetch_one(&mut conn)
                .await;
            let _ = conn.close().await;
            read.map_err(db_err)?;
        }
        Ok(())
    }

    /// Closes the pools, waiting for connections in use to be returned.
    pub async fn close(self) -> Result<(), StoreError> {
        if self.shared.sqlite_file.is_some() {
            self.shared.writer.close_by_ref().await?;
        }
        Ok(self.shared.db.close_by_ref().await?)
    }
}

/// The connection settings every pool of the store shares: timeouts, SQLite's durability and
/// concurrency pragmas, PostgreSQL's plan mode.
fn connect_options(options: &StoreOptions) -> ConnectOptions {
    let mut connect = ConnectOptions::new(options.url.clone());
    connect
        .acquire_timeout(options.acquire_timeout)
        .connect_timeout(options.acquire_timeout)
        .sqlx_logging(false)
        .map_sqlx_sqlite_opts(sqlite_options)
        // Every query here is a keyed lookup on a table that starts empty. A generic plan
        // cached while a table was empty keeps seq-scanning it once it holds millions of
        // rows (measured: commit time grew linearly with the table); custom plans see the
        // real bind values and statistics every time.
        .map_sqlx_postgres_opts(|opts| opts.options([("plan_cache_mode", "force_custom_plan")]));
    connect
}

/// SQLite's durability and concurrency pragmas, on every connection.
fn sqlite_options(opts: SqliteConnectOptions) -> SqliteConnectOptions {
    opts.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
        .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
        .busy_timeout(SQLITE_BUSY_TIMEOUT)
        .foreign_keys(true)
}

/// The file of the `main` database of a SQLite pool, or `None` when it has none (in memory).
async fn sqlite_main_file(db: &DatabaseConnection) -> Result<Option<PathBuf>, DbErr> {
    let rows = db
        .query_all_raw(Statement::from_string(
            DbBackend::Sqlite,
            "PRAGMA database_list",
        ))
        .await?;
    for row in rows {
        let name: String = row.try_get("", "name")?;
        let file: String = row.try_get("", "file")?;
        if name == "main" {
            return Ok((!file.is_empty()).then(|| PathBuf::from(file)));
        }
    }
    Ok(None)
}

/// The current time in Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Sends `notice` to every instance when the transaction `tx` commits (PostgreSQL delivers
/// NOTIFY at commit, and not at all on rollback). Nothing on SQLite: one instance per file.
pub(crate) async fn notify<C: ConnectionTrait>(tx: &C, notice: &Notice) -> Result<(), DbErr> {
    if tx.get_database_backend() == DbBackend::Postgres {
        tx.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT pg_notify($1, $2)",
            [NOTIFY_CHANNEL.into(), notice.payload().into()],
        ))
        .await?;
    }
    Ok(())
}

/// The listener loop: (re)connect, LISTEN, apply notices; wake everyone after each loss.
async fn listen(url: &str, feed: &Feed) {
    use sea_orm::sqlx::postgres::PgListener;
    loop {
        let mut listener = match PgListener::connect(url).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "change listener cannot connect; retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(e) = listener.listen(NOTIFY_CHANNEL).await {
            tracing::warn!(error = %e, "LISTEN failed; retrying in 1 s");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        // Anything committed while we were not listening is only in the database.
        feed.wake_all();
        loop {
            match listener.try_recv().await {
                Ok(Some(notice)) => feed.apply(notice.payload()),
                Ok(None) => {
                    tracing::warn!("change listener lost its connection; reconnecting");
                    feed.wake_all();
                }
                Err(e) => {
                    tracing::warn!(error = %e, "change listener failed; reconnecting in 1 s");
                    feed.wake_all();
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    break;
                }
            }
        }
    }
}
