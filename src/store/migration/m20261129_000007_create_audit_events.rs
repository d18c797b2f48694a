//! The append-only audit log (DESIGN §8): who did what, when, and how it ended.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum AuditEvents {
    Table,
    Id,
    TimeMs,
    Identity,
    Action,
    CarrierId,
    TenantId,
    Outcome,
    FirstPosition,
    LastPosition,
    RecordCount,
    Details,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(AuditEvents::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(AuditEvents::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(AuditEvents::TimeMs).big_integer().not_null())
                    .col(ColumnDef::new(AuditEvents::Identity).string().not_null())
                    .col(ColumnDef::new(AuditEvents::Action).string().not_null())
                    .col(ColumnDef::new(AuditEvents::CarrierId).string().not_null())
                    .col(ColumnDef::new(AuditEvents::TenantId).string().not_null())
                    .col(ColumnDef::new(AuditEvents::Outcome).string().not_null())
                    .col(
                        ColumnDef::new(AuditEvents::FirstPosition)
                            .big_integer()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(AuditEvents::LastPosition)
                            .big_integer()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(AuditEvents::RecordCount)
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(AuditEvents::Details).text().not_null())
                    .to_owned(),
            )
            .await?;
        // Retention deletes by time; listings filter by time, tenant, carrier or identity.
        for (name, column) in [
            ("audit_events_time", AuditEvents::TimeMs),
            ("audit_events_tenant", AuditEvents::TenantId),
            ("audit_events_carrier", AuditEvents::CarrierId),
            ("audit_events_identity", AuditEvents::Identity),
        ] {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(AuditEvents::Table)
                        .col(column)
                        .col(AuditEvents::Id)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(AuditEvents::Table).to_owned())
            .await
    }
}
