//! Handles: how people find each other. `@` followed by 3 to 32 of `[a-z0-9_]`, unique
//! case-insensitively: input is lower-cased, so `@Alice` and `@alice` are one handle.

use serde::{Deserialize, Serialize};

/// A valid, normalized handle such as `@alice`. Only [`Handle::parse`] makes one, so holding
/// a `Handle` means it is valid (deserialization validates too).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Handle(String);

/// Why a string is not a handle.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandleError {
    /// No leading `@`.
    #[error("a handle starts with @")]
    MissingAt,
    /// Too short or too long.
    #[error("a handle has 3 to 32 characters after the @, this one has {0}")]
    Length(usize),
    /// A character outside `[a-z0-9_]` (after lower-casing).
    #[error("a handle may contain only a-z, 0-9 and _, not {0:?}")]
    Character(char),
}

impl Handle {
    /// Validates and normalizes (lower-cases) `s`.
    pub fn parse(s: &str) -> Result<Self, HandleError> {
        let body = s.strip_prefix('@').ok_or(HandleError::MissingAt)?;
        let n = body.chars().count();
        if !(3..=32).contains(&n) {
            return Err(HandleError::Length(n));
        }
        let lower = body.to_ascii_lowercase();
        if let Some(c) = lower
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_'))
        {
            return Err(HandleError::Character(c));
        }
        Ok(Self(format!("@{lower}")))
    }

    /// The handle, `@` included.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for Handle {
    type Err = HandleError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for Handle {
    type Error = HandleError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<Handle> for String {
    fn from(h: Handle) -> Self {
        h.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_handles_normalize() {
        assert_eq!(
            Handle::parse("@Alice_01").map(|h| h.0),
            Ok("@alice_01".into())
        );
        assert!(Handle::parse("@abc").is_ok());
        assert!(Handle::parse(&format!("@{}", "a".repeat(32))).is_ok());
    }

    #[test]
    fn invalid_handles_say_why() {
        assert_eq!(Handle::parse("alice"), Err(HandleError::MissingAt));
        assert_eq!(Handle::parse("@ab"), Err(HandleError::Length(2)));
        assert_eq!(
            Handle::parse(&format!("@{}", "a".repeat(33))),
            Err(HandleError::Length(33))
        );
        assert_eq!(Handle::parse("@al-ice"), Err(HandleError::Character('-')));
        assert_eq!(Handle::parse("@ålice"), Err(HandleError::Character('å')));
        assert_eq!(Handle::parse("@al ce"), Err(HandleError::Character(' ')));
    }
}
