//! Schema migrations, run at start-up (sea-orm-migration). Portable SQL, so every table works
//! the same on SQLite and PostgreSQL; where the backends differ (PostgreSQL's collations), a
//! migration makes PostgreSQL behave as SQLite does and is a no-op on SQLite.

use sea_orm_migration::prelude::*;

mod m20261127_000001_create_carriers;
mod m20261127_000002_create_numbers;
mod m20261127_000003_create_record_logs;
mod m20261127_000004_create_durations;
mod m20261129_000005_bytewise_keys;
mod m20261129_000006_records_as_protobuf;
mod m20261129_000007_create_audit_events;
mod m20261129_000008_create_purge_runs;

/// All migrations, in order.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261127_000001_create_carriers::Migration),
            Box::new(m20261127_000002_create_numbers::Migration),
            Box::new(m20261127_000003_create_record_logs::Migration),
            Box::new(m20261127_000004_create_durations::Migration),
            Box::new(m20261129_000005_bytewise_keys::Migration),
            Box::new(m20261129_000006_records_as_protobuf::Migration),
            Box::new(m20261129_000007_create_audit_events::Migration),
            Box::new(m20261129_000008_create_purge_runs::Migration),
        ]
    }
}
