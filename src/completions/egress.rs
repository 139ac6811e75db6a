//! Which hosts providers may name (server-side request forgery): an operator setting.

/// Host patterns from `CONFIDANT_PROVIDER_ALLOWED_HOSTS`: `api.openai.com` (that host),
/// `*.example.com` (its subdomains), `*` (any host). Empty means any host.
#[derive(Debug, Clone, Default)]
pub struct HostAllowlist {
    patterns: Vec<String>,
}

impl HostAllowlist {
    pub fn new(patterns: impl IntoIterator<Item = String>) -> Self {
        Self {
            patterns: patterns
                .into_iter()
                .map(|p| p.trim().to_ascii_lowercase())
                .filter(|p| !p.is_empty())
                .collect(),
        }
    }

    /// Whether a provider URL may name `host`.
    pub fn allows(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.patterns.is_empty()
            || self.patterns.iter().any(|pattern| match pattern.strip_prefix("*.") {
                _ if pattern == "*" => true,
                Some(domain) => host.ends_with(&format!(".{domain}")),
                None => host == *pattern,
            })
    }

    /// Whether `url` is an http(s) URL whose host is allowed.
    pub fn allows_url(&self, url: &str) -> bool {
        url::Url::parse(url)
            .ok()
            .and_then(|u| u.host_str().map(|h| self.allows(h.trim_matches(['[', ']']))))
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_hosts_and_subdomains_only() {
        let list = HostAllowlist::new(["api.openai.com".to_owned(), "*.internal.example".to_owned()]);
        assert!(list.allows("api.openai.com"));
        assert!(list.allows("API.OpenAI.com."));
        assert!(list.allows("llm.internal.example"));
        assert!(!list.allows("internal.example"));
        assert!(!list.allows("evil-api.openai.com.attacker.test"));
        assert!(!list.allows("169.254.169.254"));
        assert!(list.allows_url("https://api.openai.com/v1"));
        assert!(!list.allows_url("http://127.0.0.1:8080/v1"));
        assert!(HostAllowlist::default().allows("anything"));
        assert!(HostAllowlist::new(["*".to_owned()]).allows("anything"));
    }
}
