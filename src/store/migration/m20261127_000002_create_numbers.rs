//! Numbers (current state) and the append-only per-carrier number-event log.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Carriers {
    Table,
    CarrierId,
}

#[derive(DeriveIden)]
enum Numbers {
    Table,
    Number,
    CarrierId,
    TenantId,
    Status,
    Revision,
    State,
}

#[derive(DeriveIden)]
enum NumberEvents {
    Table,
    CarrierId,
    Revision,
    Number,
    TenantId,
    Kind,
    State,
    Previous,
    CommitTimeMs,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Numbers::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Numbers::Number)
                            .string()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Numbers::CarrierId).string().not_null())
                    .col(ColumnDef::new(Numbers::TenantId).string().not_null())
                    .col(ColumnDef::new(Numbers::Status).small_integer().not_null())
                    .col(ColumnDef::new(Numbers::Revision).big_integer().not_null())
                    .col(ColumnDef::new(Numbers::State).text().not_null())
                    .foreign_key(
                        ForeignKey::create()
                            .from(Numbers::Table, Numbers::CarrierId)
                            .to(Carriers::Table, Carriers::CarrierId),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("numbers_carrier_number")
                    .table(Numbers::Table)
                    .col(Numbers::CarrierId)
                    .col(Numbers::Number)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("numbers_carrier_tenant_number")
                    .table(Numbers::Table)
                    .col(Numbers::CarrierId)
                    .col(Numbers::TenantId)
                    .col(Numbers::Number)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(NumberEvents::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(NumberEvents::CarrierId).string().not_null())
                    .col(
                        ColumnDef::new(NumberEvents::Revision)
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(NumberEvents::Number).string().not_null())
                    .col(ColumnDef::new(NumberEvents::TenantId).string().not_null())
                    .col(
                        ColumnDef::new(NumberEvents::Kind)
                            .small_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(NumberEvents::State).text().not_null())
                    .col(ColumnDef::new(NumberEvents::Previous).text().null())
                    .col(
                        ColumnDef::new(NumberEvents::CommitTimeMs)
                            .big_integer()
                            .not_null(),
                    )
                    .primary_key(
                        Index::create()
                            .col(NumberEvents::CarrierId)
                            .col(NumberEvents::Revision),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(NumberEvents::Table, NumberEvents::CarrierId)
                            .to(Carriers::Table, Carriers::CarrierId),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("number_events_commit_time")
                    .table(NumberEvents::Table)
                    .col(NumberEvents::CommitTimeMs)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(NumberEvents::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(Numbers::Table).to_owned())
            .await
    }
}
