//! Persistence with sea-orm: SQLite (embedded default, WAL) or PostgreSQL, same code and
//! migrations. Repositories return domain types; sea-orm models never leave this module.

use std::time::Duration;

use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend,
    DbErr, IsolationLevel, SqliteTransactionMode, TransactionOptions, TransactionTrait,
};
use sea_orm_migration::MigratorTrait;

use crate::domain::number::TransitionError;
use crate::feed::Feed;

mod carriers;
mod durations;
mod entities;
pub mod migration;
mod numbers;
mod records;

pub use durations::{ReconRow, StoredUpload, Window};
pub use numbers::{EventRecord, NumberFilter, NumberPage};
pub use records::{IngestOutcome, LogBounds, LogKind, LogRecord, RecordFilter, RecordPage};

/// Advisory-lock key taken while migrating on PostgreSQL, so instances starting together do
/// not race (ASCII "opcnmigr").
const MIGRATION_LOCK_KEY: i64 = 0x6f70_636e_6d69_6772;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed or is unreachable.
    #[error("database error: {0}")]
    Db(#[from] DbErr),
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

/// Handle to the database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    db: DatabaseConnection,
    /// Woken after every commit that readers may be waiting for.
    feed: Feed,
}

impl Store {
    /// Connects, applies SQLite's durability and concurrency settings, and runs migrations.
    pub async fn open(options: &StoreOptions) -> Result<Self, StoreError> {
        let mut connect = ConnectOptions::new(options.url.clone());
        connect
            .max_connections(options.max_connections)
            .min_connections(1)
            .acquire_timeout(options.acquire_timeout)
            .connect_timeout(options.acquire_timeout)
            .sqlx_logging(false)
            .map_sqlx_sqlite_opts(|opts| {
                opts.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                    .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(10))
                    .foreign_keys(true)
            })
            // Every query here is a keyed lookup on a table that starts empty. A generic plan
            // cached while a table was empty keeps seq-scanning it once it holds millions of
            // rows (measured: commit time grew linearly with the table); custom plans see the
            // real bind values and statistics every time.
            .map_sqlx_postgres_opts(|opts| {
                opts.options([("plan_cache_mode", "force_custom_plan")])
            });
        let db = Database::connect(connect).await?;
        let store = Self {
            db,
            feed: Feed::default(),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Applies pending migrations; on PostgreSQL under a transaction-scoped advisory lock.
    async fn migrate(&self) -> Result<(), StoreError> {
        match self.db.get_database_backend() {
            DbBackend::Postgres => {
                let tx = self.db.begin().await?;
                tx.execute_unprepared(&format!(
                    "SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})"
                ))
                .await?;
                migration::Migrator::up(&tx, None).await?;
                tx.commit().await?;
            }
            _ => migration::Migrator::up(&self.db, None).await?,
        }
        Ok(())
    }

    /// Begins a write transaction. On SQLite it is IMMEDIATE: the write lock is taken at
    /// `BEGIN`, so a read-then-write never fails with "database is locked".
    async fn begin_write(&self) -> Result<DatabaseTransaction, DbErr> {
        self.db
            .begin_with_options(TransactionOptions {
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                ..Default::default()
            })
            .await
    }

    /// Begins a read transaction that sees one consistent snapshot (REPEATABLE READ on
    /// PostgreSQL; a deferred transaction on SQLite, whose first read fixes the snapshot).
    async fn begin_snapshot(&self) -> Result<DatabaseTransaction, DbErr> {
        let isolation = match self.db.get_database_backend() {
            DbBackend::Postgres => Some(IsolationLevel::RepeatableRead),
            _ => None,
        };
        self.db
            .begin_with_options(TransactionOptions {
                isolation_level: isolation,
                sqlite_transaction_mode: Some(SqliteTransactionMode::Deferred),
                ..Default::default()
            })
            .await
    }

    /// The change notifications of this store's writes.
    pub fn feed(&self) -> &Feed {
        &self.feed
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        Ok(self.db.ping().await?)
    }

    /// Closes the pool, waiting for connections in use to be returned.
    pub async fn close(self) -> Result<(), StoreError> {
        Ok(self.db.close().await?)
    }
}

/// The current time in Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
