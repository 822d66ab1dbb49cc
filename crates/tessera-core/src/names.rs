//! Identifiers that appear in license codes, pool files and requests.
//!
//! They are restricted to a small alphabet so that the canonical signed form
//! of a license code (`key=value` lines) can never be ambiguous.

/// Longest identifier, in bytes.
pub const NAME_BYTES_MAX: usize = 128;

/// Checks that `value` is a non-empty identifier of `[A-Za-z0-9._:@+-]`,
/// at most [`NAME_BYTES_MAX`] bytes. Returns a sentence naming `what` on failure.
pub fn check_name(what: &str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("{what} is empty"));
    }
    if value.len() > NAME_BYTES_MAX {
        return Err(format!(
            "{what} is {} bytes long; the limit is {NAME_BYTES_MAX}",
            value.len()
        ));
    }
    if let Some(bad) = value.chars().find(|c| !is_name_char(*c)) {
        return Err(format!(
            "{what} `{value}` contains {bad:?}; only letters, digits and . _ : @ + - are allowed"
        ));
    }
    Ok(())
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '@' | '+' | '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("feature", "cad-3d_pro.v2").is_ok());
        assert!(check_name("feature", "").unwrap_err().contains("empty"));
        assert!(check_name("feature", "a=b").unwrap_err().contains("'='"));
        assert!(check_name("feature", "a\nb").is_err());
        assert!(check_name("feature", &"x".repeat(200))
            .unwrap_err()
            .contains("limit is 128"));
    }
}
