//! Pure domain code: no I/O, no clock reads except where a function says so. Everything here is unit tested
//! next to its definition.

pub mod apikey;
pub mod call;
pub mod endpoint;
pub mod ids;
pub mod interview;
pub mod retry;
pub mod signing;
pub mod time;

/// A caller's input that breaks a rule of the contract, with the field it concerns, so the API can answer
/// 422 naming what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Invalid {
    /// The JSON field (dotted for nested ones) the caller has to change.
    pub field: String,
    /// What is wrong with it, written for the caller.
    pub message: String,
}

impl Invalid {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }

    /// The sentence the caller reads, on the API and on the settings pages alike: `url must use http or https`.
    pub fn caller_message(&self) -> String {
        format!("{} {}", self.field, self.message)
    }
}
