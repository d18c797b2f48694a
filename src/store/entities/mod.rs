//! sea-orm entities. Crate-private: the store's callers get domain types, never models.

pub(crate) mod carrier;
pub(crate) mod number;
pub(crate) mod number_event;
