//! Allowed browser origins: `https://app.example.com`, `https://*.example.com`,
//! `http://localhost:3000`. Stored normalised (lowercase, no default port, no trailing slash), so
//! matching a request's `Origin` (which browsers send in that form) is a string comparison.

/// At most this many origins per list.
pub const MAX_ORIGINS: usize = 100;

/// Checks and normalises a list of origin patterns; the error names the entry and the problem.
pub fn normalize(list: &[String]) -> Result<Vec<String>, String> {
    if list.len() > MAX_ORIGINS {
        return Err(format!("at most {MAX_ORIGINS} origins"));
    }
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for entry in list {
        let origin = normalize_one(entry)
            .map_err(|problem| format!("`{}`: {problem}", entry.chars().take(100).collect::<String>()))?;
        if !out.contains(&origin) {
            out.push(origin);
        }
    }
    Ok(out)
}

fn normalize_one(entry: &str) -> Result<String, &'static str> {
    const SHAPE: &str = "must be scheme://host[:port], e.g. https://app.example.com or https://*.example.com";
    let entry = entry.trim();
    if entry.len() > 253 + 20 {
        return Err("is too long");
    }
    let (scheme, rest) = entry.split_once("://").ok_or(SHAPE)?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return Err("must start with http:// or https://");
    }
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (wildcard, rest) = match rest.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, rest),
    };
    // Parse what is left as a URL to check the host and port (and normalise them).
    let url = url::Url::parse(&format!("{scheme}://{rest}")).map_err(|_| SHAPE)?;
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err("must not have a path, query, fragment or credentials");
    }
    let host = url.host_str().ok_or(SHAPE)?;
    if wildcard && url.host().is_some_and(|h| !matches!(h, url::Host::Domain(_))) {
        return Err("a wildcard needs a domain name after `*.`");
    }
    let mut origin = format!("{scheme}://{}{host}", if wildcard { "*." } else { "" });
    if let Some(port) = url.port() {
        origin.push_str(&format!(":{port}"));
    }
    Ok(origin)
}

/// Whether `origin` (a request's `Origin` header) is one of `allowed` (normalised patterns). A
/// wildcard matches any subdomain, at any depth, never the bare domain.
pub fn allows(allowed: &[String], origin: &str) -> bool {
    allowed.iter().any(|pattern| matches(pattern, origin))
}

fn matches(pattern: &str, origin: &str) -> bool {
    // A normalised pattern's first `:` ends its scheme (a plain loop over its few bytes: a
    // substring search, then a character search, set up a searcher on every request, a twentieth
    // and then a fortieth of what the guard cost a list under callgrind).
    let star = pattern
        .bytes()
        .position(|b| b == b':')
        .filter(|&colon| pattern[colon..].starts_with("://*."));
    let Some(star) = star else {
        return pattern.eq_ignore_ascii_case(origin);
    };
    // `https://*.example.com:8443`: the origin starts with `https://`, ends with
    // `.example.com:8443`, and has one or more labels in between.
    let (scheme, suffix) = (&pattern[..star + 3], &pattern[star + 4..]);
    origin.len() > scheme.len() + suffix.len()
        && origin[..scheme.len()].eq_ignore_ascii_case(scheme)
        && origin.is_char_boundary(origin.len() - suffix.len())
        && origin[origin.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
        && origin[scheme.len()..origin.len() - suffix.len()]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> Vec<String> {
        normalize(&entries.iter().map(|e| e.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn entries_are_normalised() {
        assert_eq!(
            list(&[
                "HTTPS://App.Example.com/",
                "https://app.example.com:443",
                "http://localhost:3000",
                "https://*.Example.com"
            ]),
            vec![
                "https://app.example.com",
                "http://localhost:3000",
                "https://*.example.com"
            ]
        );
        for bad in [
            "app.example.com",
            "ftp://x.com",
            "https://x.com/path",
            "https://x.com?q",
            "*",
            "https://*.1.2.3.4",
            "https://",
            "https://u@x.com",
        ] {
            assert!(normalize(&[bad.to_string()]).is_err(), "{bad}");
        }
    }

    #[test]
    fn origins_match_exactly_or_by_subdomain() {
        let allowed = list(&[
            "https://app.example.com",
            "https://*.example.org",
            "http://localhost:3000",
        ]);
        assert!(allows(&allowed, "https://app.example.com"));
        assert!(allows(&allowed, "http://localhost:3000"));
        assert!(allows(&allowed, "https://a.example.org"));
        assert!(allows(&allowed, "https://a.b.example.org"));
        assert!(!allows(&allowed, "https://example.org"));
        assert!(!allows(&allowed, "http://a.example.org"));
        assert!(!allows(&allowed, "https://evil-example.org"));
        assert!(!allows(&allowed, "https://a.example.org.evil.com"));
        assert!(!allows(&allowed, "https://app.example.com:8443"));
        assert!(!allows(&allowed, "http://localhost:3001"));
        assert!(!allows(&allowed, "null"));
        assert!(!allows(&allowed, "https://x/y.example.org"));
    }
}
