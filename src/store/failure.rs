//! What a database error means for the caller: a transient conflict with concurrent writers
//! (retried by [`super::batch::retry_write`]), a constraint the request broke, or a database
//! that failed or cannot be reached.

use sea_orm::sqlx::error::ErrorKind;
use sea_orm::{DbErr, RuntimeErr};

use super::StoreError;

/// A constraint of the schema that a write broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Constraint {
    /// A unique index or primary key: the key is stored already.
    Unique,
    /// A foreign key: the row it refers to does not exist.
    ForeignKey,
    /// A NOT NULL column got no value.
    NotNull,
    /// A CHECK or exclusion constraint.
    Check,
}

/// The meaning of one database error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// Lost to a concurrent transaction; the same transaction may well succeed if run again.
    Transient,
    /// The write broke a constraint; running it again changes nothing.
    Constraint(Constraint),
    /// Anything else: the database failed or is unreachable.
    Other,
}

/// The backend a database error came from; the two number their errors differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Postgres,
    Sqlite,
}

impl From<DbErr> for StoreError {
    fn from(err: DbErr) -> Self {
        match classify(&err) {
            Failure::Transient => Self::Conflict(err),
            Failure::Constraint(constraint) => Self::Constraint {
                constraint,
                source: err,
            },
            Failure::Other => Self::Db(err),
        }
    }
}

/// Classifies an error by the database's own error code (SQLSTATE on PostgreSQL, the extended
/// result code on SQLite) and sqlx's reading of it.
fn classify(err: &DbErr) -> Failure {
    let (DbErr::Conn(RuntimeErr::SqlxError(e))
    | DbErr::Exec(RuntimeErr::SqlxError(e))
    | DbErr::Query(RuntimeErr::SqlxError(e))) = err
    else {
        return Failure::Other;
    };
    let Some(db) = e.as_database_error() else {
        return Failure::Other;
    };
    let backend = if db
        .try_downcast_ref::<sea_orm::sqlx::postgres::PgDatabaseError>()
        .is_some()
    {
        Backend::Postgres
    } else if db
        .try_downcast_ref::<sea_orm::sqlx::sqlite::SqliteError>()
        .is_some()
    {
        Backend::Sqlite
    } else {
        return Failure::Other;
    };
    classify_code(backend, db.code().as_deref().unwrap_or_default(), db.kind())
}

/// Classifies a database error code. Transient: PostgreSQL `40P01` deadlock_detected, `40001`
/// serialization_failure, `55P03` lock_not_available; SQLite `SQLITE_BUSY` (5, "database is
/// locked") and `SQLITE_LOCKED` (6) with their extended codes (the low byte is the primary
/// code).
fn classify_code(backend: Backend, code: &str, kind: ErrorKind) -> Failure {
    let transient = match backend {
        Backend::Postgres => matches!(code, "40P01" | "40001" | "55P03"),
        Backend::Sqlite => code.parse::<i32>().is_ok_and(|c| matches!(c & 0xff, 5 | 6)),
    };
    if transient {
        return Failure::Transient;
    }
    match kind {
        ErrorKind::UniqueViolation => Failure::Constraint(Constraint::Unique),
        ErrorKind::ForeignKeyViolation => Failure::Constraint(Constraint::ForeignKey),
        ErrorKind::NotNullViolation => Failure::Constraint(Constraint::NotNull),
        ErrorKind::CheckViolation | ErrorKind::ExclusionViolation => {
            Failure::Constraint(Constraint::Check)
        }
        _ => Failure::Other,
    }
}

#[cfg(test)]
mod tests {
    use sea_orm::{ConnectionTrait, Database};

    use super::*;

    /// Each backend's codes for lost races are transient; constraint kinds are constraints;
    /// everything else is a failure of the database.
    #[test]
    fn codes_are_classified_per_backend() {
        use Backend::{Postgres, Sqlite};
        for code in ["40P01", "40001", "55P03"] {
            assert_eq!(
                classify_code(Postgres, code, ErrorKind::Other),
                Failure::Transient,
                "{code}"
            );
        }
        // SQLITE_BUSY, SQLITE_BUSY_SNAPSHOT, SQLITE_BUSY_TIMEOUT, SQLITE_LOCKED.
        for code in ["5", "517", "773", "6"] {
            assert_eq!(
                classify_code(Sqlite, code, ErrorKind::Other),
                Failure::Transient,
                "{code}"
            );
        }
        assert_eq!(
            classify_code(Postgres, "23505", ErrorKind::UniqueViolation),
            Failure::Constraint(Constraint::Unique)
        );
        assert_eq!(
            classify_code(Sqlite, "2067", ErrorKind::UniqueViolation),
            Failure::Constraint(Constraint::Unique)
        );
        assert_eq!(
            classify_code(Postgres, "23503", ErrorKind::ForeignKeyViolation),
            Failure::Constraint(Constraint::ForeignKey)
        );
        assert_eq!(
            classify_code(Sqlite, "1299", ErrorKind::NotNullViolation),
            Failure::Constraint(Constraint::NotNull)
        );
        assert_eq!(
            classify_code(Postgres, "23514", ErrorKind::CheckViolation),
            Failure::Constraint(Constraint::Check)
        );
        // Not a PostgreSQL code for a lost race; not SQLite's either.
        assert_eq!(
            classify_code(Postgres, "5", ErrorKind::Other),
            Failure::Other
        );
        assert_eq!(
            classify_code(Sqlite, "40001", ErrorKind::Other),
            Failure::Other
        );
        assert_eq!(
            classify_code(Postgres, "57P01", ErrorKind::Other),
            Failure::Other
        );
        assert_eq!(classify(&DbErr::Custom("x".into())), Failure::Other);
    }

    /// Real SQLite errors: a unique and a foreign-key violation become constraint errors, a
    /// write lock held by another connection ("database is locked") a conflict, a missing
    /// table a database failure.
    #[tokio::test]
    async fn sqlite_errors_become_store_errors() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let db = Database::connect(&url).await.unwrap();
        db.execute_unprepared("PRAGMA foreign_keys = ON")
            .await
            .unwrap();
        db.execute_unprepared(
            "CREATE TABLE p (k TEXT PRIMARY KEY); \
             CREATE TABLE c (k TEXT NOT NULL REFERENCES p (k)); \
             INSERT INTO p VALUES ('a')",
        )
        .await
        .unwrap();
        let err = |r: Result<_, DbErr>| StoreError::from(r.unwrap_err());
        assert!(matches!(
            err(db.execute_unprepared("INSERT INTO p VALUES ('a')").await),
            StoreError::Constraint {
                constraint: Constraint::Unique,
                ..
            }
        ));
        assert!(matches!(
            err(db.execute_unprepared("INSERT INTO c VALUES ('b')").await),
            StoreError::Constraint {
                constraint: Constraint::ForeignKey,
                ..
            }
        ));
        assert!(matches!(
            err(db.execute_unprepared("INSERT INTO c VALUES (NULL)").await),
            StoreError::Constraint {
                constraint: Constraint::NotNull,
                ..
            }
        ));
        assert!(matches!(
            err(db
                .execute_unprepared("INSERT INTO missing VALUES (1)")
                .await),
            StoreError::Db(_)
        ));

        let holder = Database::connect(&url).await.unwrap();
        holder.execute_unprepared("BEGIN IMMEDIATE").await.unwrap();
        db.execute_unprepared("PRAGMA busy_timeout = 0")
            .await
            .unwrap();
        assert!(matches!(
            err(db.execute_unprepared("INSERT INTO p VALUES ('z')").await),
            StoreError::Conflict(_)
        ));
        holder.execute_unprepared("ROLLBACK").await.unwrap();
    }
}
