//! sea-orm entities. Crate-private: the store's callers get domain types, never models.

pub(crate) mod audit_event;
pub(crate) mod call_duration;
pub(crate) mod call_record;
pub(crate) mod carrier;
pub(crate) mod consumer_cursor;
pub(crate) mod number;
pub(crate) mod number_event;
pub(crate) mod purge_run;
pub(crate) mod quality_record;
pub(crate) mod upload;
