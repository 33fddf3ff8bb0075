//! The path normaliser, a security primitive: policy rules, route matches and fault
//! prefixes are all compared with the normalised path, so `/a/../admin`, `//admin` and
//! `/%61dmin` cannot dodge a rule on `/admin`. Parsed once per request at the edge. Pure.

/// Why a path cannot be normalised safely (the request is refused with 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Not starting with `/`.
    #[error("path must start with /")]
    NotAbsolute,
    /// `%` without two characters after it.
    #[error("truncated percent-escape")]
    TruncatedEscape,
    /// `%` followed by something other than two hex digits.
    #[error("bad percent-escape")]
    BadEscape,
    /// `%00` or `%5C`.
    #[error("encoded NUL or backslash")]
    EncodedNulOrBackslash,
    /// A raw backslash.
    #[error("backslash in path")]
    Backslash,
    /// Decoded bytes that are not UTF-8.
    #[error("path is not UTF-8")]
    NotUtf8,
    /// More `..` than segments.
    #[error("path climbs above the root")]
    AboveRoot,
}

/// Normalises a request path for policy and routing: percent-decodes unreserved
/// characters and `/` (`%2F`), collapses duplicate slashes, resolves `.` and `..`.
/// Errors for what cannot be normalised safely (bad escapes, `..` above the root, a
/// decoded NUL or backslash, a path not starting with `/`).
pub fn normalize_path(raw: &str) -> Result<String, PathError> {
    let path = raw.split(['?', '#']).next().unwrap_or("");
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let bytes = path.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(PathError::TruncatedEscape)?;
            let s = std::str::from_utf8(hex).map_err(|_| PathError::BadEscape)?;
            let b = u8::from_str_radix(s, 16).map_err(|_| PathError::BadEscape)?;
            match b {
                b'/' | b'.' | b'-' | b'_' | b'~' => decoded.push(b),
                b if b.is_ascii_alphanumeric() => decoded.push(b),
                0 | b'\\' => return Err(PathError::EncodedNulOrBackslash),
                // Other escapes stay encoded (upper-case hex) so they cannot form syntax.
                b => decoded.extend_from_slice(format!("%{b:02X}").as_bytes()),
            }
            i += 3;
        } else if bytes[i] == b'\\' {
            return Err(PathError::Backslash);
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    let decoded = String::from_utf8(decoded).map_err(|_| PathError::NotUtf8)?;
    let mut out: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if out.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
            }
            s => out.push(s),
        }
    }
    let trailing = decoded.ends_with('/') && !out.is_empty();
    let mut n = format!("/{}", out.join("/"));
    if trailing {
        n.push('/');
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_defeats_dodges() {
        for (raw, want) in [
            ("/admin", "/admin"),
            ("/a/../admin", "/admin"),
            ("//admin", "/admin"),
            ("/%2Fadmin", "/admin"),
            ("/%2fadmin", "/admin"),
            ("/./admin/", "/admin/"),
            ("/%61dmin", "/admin"),
            ("/x/%2e%2e/admin", "/admin"),
            ("/a%20b", "/a%20b"),
            ("/admin?x=1", "/admin"),
        ] {
            assert_eq!(normalize_path(raw).as_deref(), Ok(want), "{raw}");
        }
        for bad in [
            "/../etc", "/%2", "/%zz", "/a\\b", "/%5c", "/%00", "relative",
        ] {
            assert!(normalize_path(bad).is_err(), "{bad}");
        }
    }
}
