//! Call-record and quality-record logs, their per-carrier counters, and carriers' committed
//! consumer cursors.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Carriers {
    Table,
    CarrierId,
    CallRecordCursor,
    CallRecordsPurgedThrough,
    QualityRecordCursor,
    QualityRecordsPurgedThrough,
}

#[derive(DeriveIden)]
enum CallRecords {
    Table,
    CarrierId,
    Cursor,
    CallId,
    TenantId,
    StartTimeMs,
    IngestTimeMs,
    DurationMs,
    Successful,
    TenantNumber,
    Record,
}

#[derive(DeriveIden)]
enum QualityRecords {
    Table,
    CarrierId,
    Cursor,
    CallId,
    StreamId,
    TenantId,
    StartTimeMs,
    IngestTimeMs,
    Classification,
    Record,
}

#[derive(DeriveIden)]
enum ConsumerCursors {
    Table,
    CarrierId,
    Kind,
    Cursor,
    UpdateTimeMs,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite's ALTER TABLE adds one column at a time.
        for column in [
            Carriers::CallRecordCursor,
            Carriers::CallRecordsPurgedThrough,
            Carriers::QualityRecordCursor,
            Carriers::QualityRecordsPurgedThrough,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Carriers::Table)
                        .add_column(ColumnDef::new(column).big_integer().not_null().default(0))
                        .to_owned(),
                )
                .await?;
        }
        manager
            .create_table(
                Table::create()
                    .table(CallRecords::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(CallRecords::CarrierId).string().not_null())
                    .col(ColumnDef::new(CallRecords::Cursor).big_integer().not_null())
                    .col(ColumnDef::new(CallRecords::CallId).string().not_null())
                    .col(ColumnDef::new(CallRecords::TenantId).string().not_null())
                    .col(
                        ColumnDef::new(CallRecords::StartTimeMs)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(CallRecords::IngestTimeMs)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(CallRecords::DurationMs)
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(CallRecords::Successful).boolean().not_null())
                    .col(
                        ColumnDef::new(CallRecords::TenantNumber)
                            .string()
                            .not_null(),
                    )
                    .col(ColumnDef::new(CallRecords::Record).text().not_null())
                    .primary_key(
                        Index::create()
                            .col(CallRecords::CarrierId)
                            .col(CallRecords::Cursor),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(CallRecords::Table, CallRecords::CarrierId)
                            .to(Carriers::Table, Carriers::CarrierId),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("call_records_call_id")
                    .table(CallRecords::Table)
                    .col(CallRecords::CallId)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("call_records_carrier_tenant_cursor")
                    .table(CallRecords::Table)
                    .col(CallRecords::CarrierId)
                    .col(CallRecords::TenantId)
                    .col(CallRecords::Cursor)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("call_records_tenant_start")
                    .table(CallRecords::Table)
                    .col(CallRecords::TenantId)
                    .col(CallRecords::StartTimeMs)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("call_records_carrier_start")
                    .table(CallRecords::Table)
                    .col(CallRecords::CarrierId)
                    .col(CallRecords::StartTimeMs)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("call_records_ingest_time")
                    .table(CallRecords::Table)
                    .col(CallRecords::CarrierId)
                    .col(CallRecords::IngestTimeMs)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(QualityRecords::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(QualityRecords::CarrierId)
                            .string()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(QualityRecords::Cursor)
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(QualityRecords::CallId).string().not_null())
                    .col(ColumnDef::new(QualityRecords::StreamId).string().not_null())
                    .col(ColumnDef::new(QualityRecords::TenantId).string().not_null())
                    .col(
                        ColumnDef::new(QualityRecords::StartTimeMs)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(QualityRecords::IngestTimeMs)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(QualityRecords::Classification)
                            .small_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(QualityRecords::Record).text().not_null())
                    .primary_key(
                        Index::create()
                            .col(QualityRecords::CarrierId)
                            .col(QualityRecords::Cursor),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(QualityRecords::Table, QualityRecords::CarrierId)
                            .to(Carriers::Table, Carriers::CarrierId),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("quality_records_call_stream")
                    .table(QualityRecords::Table)
                    .col(QualityRecords::CallId)
                    .col(QualityRecords::StreamId)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("quality_records_carrier_tenant_cursor")
                    .table(QualityRecords::Table)
                    .col(QualityRecords::CarrierId)
                    .col(QualityRecords::TenantId)
                    .col(QualityRecords::Cursor)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("quality_records_ingest_time")
                    .table(QualityRecords::Table)
                    .col(QualityRecords::CarrierId)
                    .col(QualityRecords::IngestTimeMs)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ConsumerCursors::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(ConsumerCursors::CarrierId)
                            .string()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(ConsumerCursors::Kind)
                            .small_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(ConsumerCursors::Cursor)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(ConsumerCursors::UpdateTimeMs)
                            .big_integer()
                            .not_null(),
                    )
                    .primary_key(
                        Index::create()
                            .col(ConsumerCursors::CarrierId)
                            .col(ConsumerCursors::Kind),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(ConsumerCursors::Table, ConsumerCursors::CarrierId)
                            .to(Carriers::Table, Carriers::CarrierId),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            ConsumerCursors::Table.into_iden(),
            QualityRecords::Table.into_iden(),
            CallRecords::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
