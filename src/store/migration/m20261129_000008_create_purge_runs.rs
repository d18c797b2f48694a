//! The last purge of each retention class, so `opconnect admin retention` can show when it ran
//! and how it ended.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum PurgeRuns {
    Table,
    DataClass,
    EndTimeMs,
    Outcome,
    Deleted,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(PurgeRuns::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(PurgeRuns::DataClass)
                            .string()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(PurgeRuns::EndTimeMs)
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(PurgeRuns::Outcome).string().not_null())
                    .col(ColumnDef::new(PurgeRuns::Deleted).big_integer().not_null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(PurgeRuns::Table).to_owned())
            .await
    }
}
