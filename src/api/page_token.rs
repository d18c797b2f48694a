//! Paging of unary listings: page sizes and opaque page tokens.

use crate::domain::Violation;

/// Page size rules shared by every list: 0 means `default`, otherwise 1 to `max`.
pub(crate) fn page_size(raw: i32, default: u64, max: u64) -> Result<u64, Violation> {
    match u64::try_from(raw) {
        Ok(0) => Ok(default),
        Ok(n) if n <= max => Ok(n),
        _ => Err(Violation::new(
            "page_size",
            format!("must be between 0 (default {default}) and {max}"),
        )),
    }
}

/// Page tokens are opaque to clients: hex of the listing's filters and its last key, so a
/// token cannot be reused with other filters. They name nothing a caller cannot already see.
pub(crate) fn encode_page_token(filters: &str, last_key: &str) -> String {
    format!("{filters}\u{1f}{last_key}")
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Decodes a page token made by [`encode_page_token`] for the same `filters`.
pub(crate) fn decode_page_token(token: &str, filters: &str) -> Result<Option<String>, Violation> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = || {
        Violation::new(
            "page_token",
            "is not a token from the previous page of this listing",
        )
    };
    if !token.len().is_multiple_of(2) || token.len() > 2048 {
        return Err(invalid());
    }
    let bytes = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(token.get(i..i + 2).unwrap_or("zz"), 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    match text.split_once('\u{1f}') {
        Some((f, key)) if f == filters => Ok(Some(key.to_owned())),
        _ => Err(invalid()),
    }
}
