//! Validated domain types and pure logic. Nothing here knows about gRPC or SQL.

pub mod audit;
pub mod calendar;
pub mod carrier;
pub mod durations;
pub mod ids;
pub mod number;
pub mod quality;
pub mod reconcile;
pub mod records;
pub mod usage;
pub mod values;

/// A field that failed validation: the field's path in the request and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Path of the field in the request, e.g. `numbers[2]`.
    pub field: String,
    /// What is wrong, in words a carrier's engineer understands.
    pub description: String,
}

impl Violation {
    /// A violation of `field`.
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// Collects violations while a request is validated field by field, so the caller learns
/// about every bad field at once.
#[derive(Debug, Default)]
pub struct Violations(Vec<Violation>);

impl Violations {
    /// Parses one field, recording a violation under `field` when it fails.
    pub fn check<T>(&mut self, field: impl Into<String>, parsed: Result<T, String>) -> Option<T> {
        match parsed {
            Ok(value) => Some(value),
            Err(description) => {
                self.0.push(Violation::new(field, description));
                None
            }
        }
    }

    /// Records a violation.
    pub fn push(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(Violation::new(field, description));
    }

    /// Orders the violations by their field's position in `fields` (stable: problems of one
    /// field keep their order); fields not listed go last.
    pub fn sort_by_fields(&mut self, fields: &[&str]) {
        let position = |v: &Violation| {
            let name = v.field.split(['.', '[']).next().unwrap_or_default();
            fields
                .iter()
                .position(|f| *f == name)
                .unwrap_or(fields.len())
        };
        self.0.sort_by_key(position);
    }

    /// The value `build` makes when there is no violation, or the violations. Fields that
    /// failed their check are `None`, so `build` is only called when all are present; should
    /// it still return `None`, that is reported as an unnamed violation, never a panic.
    pub fn finish_with<T>(self, build: impl FnOnce() -> Option<T>) -> Result<T, Vec<Violation>> {
        self.finish()?;
        build().ok_or_else(|| vec![Violation::new("", "is invalid")])
    }

    /// The violations, or `Ok(())` when there are none.
    pub fn finish(self) -> Result<(), Vec<Violation>> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self.0)
        }
    }
}
