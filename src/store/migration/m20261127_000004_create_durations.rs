//! Carrier-reported call durations and completed uploads.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Carriers {
    Table,
    CarrierId,
}

#[derive(DeriveIden)]
enum CallDurations {
    Table,
    CarrierId,
    CallId,
    TenantId,
    StartTimeMs,
    DurationMs,
    ReceivedTimeMs,
    Record,
}

#[derive(DeriveIden)]
enum Uploads {
    Table,
    CarrierId,
    UploadId,
    CompleteTimeMs,
    Summary,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(CallDurations::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(CallDurations::CarrierId).string().not_null())
                    .col(ColumnDef::new(CallDurations::CallId).string().not_null())
                    .col(ColumnDef::new(CallDurations::TenantId).string().not_null())
                    .col(
                        ColumnDef::new(CallDurations::StartTimeMs)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(CallDurations::DurationMs)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(CallDurations::ReceivedTimeMs)
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(CallDurations::Record).text().not_null())
                    .primary_key(
                        Index::create()
                            .col(CallDurations::CarrierId)
                            .col(CallDurations::CallId),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(CallDurations::Table, CallDurations::CarrierId)
                            .to(Carriers::Table, Carriers::CarrierId),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("call_durations_carrier_start")
                    .table(CallDurations::Table)
                    .col(CallDurations::CarrierId)
                    .col(CallDurations::StartTimeMs)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("call_durations_received")
                    .table(CallDurations::Table)
                    .col(CallDurations::ReceivedTimeMs)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Uploads::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Uploads::CarrierId).string().not_null())
                    .col(ColumnDef::new(Uploads::UploadId).string().not_null())
                    .col(
                        ColumnDef::new(Uploads::CompleteTimeMs)
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(Uploads::Summary).text().not_null())
                    .primary_key(
                        Index::create()
                            .col(Uploads::CarrierId)
                            .col(Uploads::UploadId),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(Uploads::Table, Uploads::CarrierId)
                            .to(Carriers::Table, Carriers::CarrierId),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Uploads::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(CallDurations::Table).to_owned())
            .await
    }
}
