//! The carriers table, which also holds each carrier's number-event revision counter.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Carriers {
    Table,
    CarrierId,
    DisplayName,
    SipDomain,
    Status,
    CreateTimeMs,
    NumberRevision,
    EventsPurgedThrough,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Carriers::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Carriers::CarrierId)
                            .string()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Carriers::DisplayName).string().not_null())
                    .col(ColumnDef::new(Carriers::SipDomain).string().not_null())
                    .col(ColumnDef::new(Carriers::Status).small_integer().not_null())
                    .col(
                        ColumnDef::new(Carriers::CreateTimeMs)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Carriers::NumberRevision)
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .col(
                        ColumnDef::new(Carriers::EventsPurgedThrough)
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Carriers::Table).to_owned())
            .await
    }
}
