//! Where the server may send requests (server-side request forgery): provider and webhook URLs.
//!
//! Three checks, one policy:
//! - [`Egress::check_url`], before every request and when a URL is saved: scheme, no credentials,
//!   no query or fragment; the host (and port) against `CONFIDANT_PROVIDER_ALLOWED_HOSTS`; an
//!   address literal, or a name that is loopback by definition (`localhost`), must be public
//!   unless listed.
//! - [`Egress::check_resolved`], when a URL is saved: the name is resolved and every address must
//!   be public unless the host is listed (`422` at once rather than a failing turn later).
//! - [`Egress`] as both HTTP clients' DNS resolver: the same address rule on **every connection**, after
//!   resolution, so a name that resolved to a public address when it was saved and to
//!   `169.254.169.254` now (DNS rebinding) is still refused. Redirects are never followed and no
//!   proxy is used (`lanes::ProviderLanes`), so the resolved address is the one connected to.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Why a URL or address is refused. The messages name the rule, never an address that resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("must be an absolute http(s) URL without credentials, query or fragment")]
    Malformed,
    #[error("this host is not in the server's CONFIDANT_PROVIDER_ALLOWED_HOSTS")]
    NotListed,
    #[error(
        "this host is on a loopback, private, link-local or otherwise internal address; list it in \
         CONFIDANT_PROVIDER_ALLOWED_HOSTS to allow it"
    )]
    Internal,
}

/// `CONFIDANT_PROVIDER_ALLOWED_HOSTS`: comma-separated `host`, `host:port`, `*.domain` or `*`.
///
/// A listed host may be on any address (that is how a local Ollama is allowed). When the list
/// names only internal hosts (address literals that are not public, `localhost`, single-label
/// names, names under `.internal`, `.local`, `.localhost`, `.lan`, `.home.arpa`, `.test`), it adds them to
/// every public host; when it names any other host, it is the complete list of hosts allowed.
/// `*` allows every host on every address (development only: it turns the protection off).
#[derive(Debug, Clone, Default)]
pub struct HostAllowlist {
    entries: Vec<Entry>,
    /// The list names a public host, so nothing outside it is allowed.
    exclusive: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    host: HostPattern,
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Any,
    Exact(String),
    /// `*.example.com`: the subdomains of `example.com`, not itself.
    Subdomains(String),
}

impl HostAllowlist {
    /// Parses the setting's entries; a malformed entry is an error (a typo must not silently
    /// open or close the list).
    pub fn parse<'a>(entries: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut list = Self::default();
        for text in entries.into_iter().map(str::trim).filter(|t| !t.is_empty()) {
            let entry = Entry::parse(text).ok_or_else(|| {
                format!("`{text}` is not a host, host:port, *.domain or * (CONFIDANT_PROVIDER_ALLOWED_HOSTS)")
            })?;
            list.exclusive |= entry.names_public_host();
            list.entries.push(entry);
        }
        Ok(list)
    }

    /// A list of well-formed entries (tests and code that builds settings directly).
    pub fn new<'a>(entries: impl IntoIterator<Item = &'a str>) -> Self {
        Self::parse(entries).expect("well-formed host entries")
    }

    /// Whether some entry names this host (on any port).
    fn lists_host(&self, host: &str) -> bool {
        self.entries.iter().any(|e| e.host.matches(host))
    }

    /// Whether `host:port` is listed: some entry names the host, and the entries that name it
    /// allow this port (an entry with a port pins the host to that port).
    fn lists(&self, host: &str, port: u16) -> bool {
        self.entries
            .iter()
            .any(|e| e.host.matches(host) && e.port.is_none_or(|p| p == port))
    }
}

impl Entry {
    fn parse(text: &str) -> Option<Self> {
        let text = text.to_ascii_lowercase();
        if text == "*" {
            return Some(Self {
                host: HostPattern::Any,
                port: None,
            });
        }
        // `[::1]:8080`, `[::1]`, `::1`, `host:port`, `host`.
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, after) = rest.split_once(']')?;
            let port = match after {
                "" => None,
                _ => Some(after.strip_prefix(':')?.parse().ok()?),
            };
            (host.to_owned(), port)
        } else if text.parse::<Ipv6Addr>().is_ok() {
            (text.clone(), None)
        } else {
            match text.rsplit_once(':') {
                Some((host, port)) => (host.to_owned(), Some(port.parse().ok()?)),
                None => (text.clone(), None),
            }
        };
        let host = host.trim_end_matches('.').to_owned();
        let valid_name = |name: &str| {
            !name.is_empty()
                && name.len() <= 253
                && name
                    .split('.')
                    .all(|label| !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        };
        let pattern = match host.strip_prefix("*.") {
            Some(domain) if valid_name(domain) => HostPattern::Subdomains(domain.to_owned()),
            Some(_) => return None,
            None if host.parse::<IpAddr>().is_ok() || valid_name(&host) => HostPattern::Exact(host),
            None => return None,
        };
        Some(Self { host: pattern, port })
    }

    fn names_public_host(&self) -> bool {
        match &self.host {
            HostPattern::Any => false,
            HostPattern::Exact(host) => match host.parse::<IpAddr>() {
                Ok(ip) => is_public(ip),
                Err(_) => !is_internal_name(host),
            },
            HostPattern::Subdomains(domain) => !is_internal_name(domain),
        }
    }
}

impl HostPattern {
    fn matches(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.');
        match self {
            Self::Any => true,
            Self::Exact(name) => host.eq_ignore_ascii_case(name) || same_ip(host, name),
            Self::Subdomains(domain) => host
                .len()
                .checked_sub(domain.len() + 1)
                .is_some_and(|cut| host.as_bytes()[cut] == b'.' && host[cut + 1..].eq_ignore_ascii_case(domain)),
        }
    }
}

/// `::1` and `0:0::1` are one address.
fn same_ip(a: &str, b: &str) -> bool {
    matches!((a.parse::<IpAddr>(), b.parse::<IpAddr>()), (Ok(x), Ok(y)) if x == y)
}

/// Names that only ever mean a host inside the operator's own networks.
fn is_internal_name(name: &str) -> bool {
    const SUFFIXES: [&str; 7] = [
        "localhost",
        "internal",
        "local",
        "lan",
        "home.arpa",
        "localdomain",
        "test",
    ];
    !name.contains('.')
        || SUFFIXES
            .iter()
            .any(|s| name.eq_ignore_ascii_case(s) || name.to_ascii_lowercase().ends_with(&format!(".{s}")))
}

/// Names that resolve to loopback by definition (RFC 6761), checked without asking DNS.
fn is_loopback_name(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost")
}

/// Whether an address is on the public internet: not loopback, private (RFC 1918, unique-local),
/// link-local (cloud metadata at 169.254.169.254), shared (CGNAT), unspecified, multicast,
/// broadcast or reserved. IPv6 forms that carry an IPv4 address are judged by that address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = embedded_v4(v6) {
                return is_public_v4(v4);
            }
            let first = v6.segments()[0];
            !(v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (first & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (first & 0xffc0) == 0xfec0 // site-local fec0::/10 (deprecated)
                || (first == 0x0100 && v6.segments()[1..4] == [0, 0, 0]) // discard 100::/64
                || (first == 0x2001 && v6.segments()[1] == 0x0db8)) // documentation
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || a == 0 // "this network"
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || a >= 240 // reserved
        || (a == 100 && (b & 0xc0) == 64) // shared address space 100.64.0.0/10
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b & 0xfe) == 18)) // benchmarking 198.18.0.0/15
}

/// The IPv4 address inside an IPv4-mapped, IPv4-compatible, NAT64 or 6to4 IPv6 address.
fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(low),
        [0, 0, 0, 0, 0, 0, _, _] if !v6.is_loopback() && !v6.is_unspecified() => Some(low),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(low),
        [0x2002, hi, lo, ..] => Some(Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8)),
        _ => None,
    }
}

/// How names become addresses: the system's resolver, or (tests) a fixed table that never asks
/// the network.
#[derive(Clone, Default)]
pub enum Resolver {
    #[default]
    System,
    Fixed(Arc<HashMap<String, Vec<IpAddr>>>),
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::System => f.write_str("System"),
            Self::Fixed(table) => f.debug_tuple("Fixed").field(&table.len()).finish(),
        }
    }
}

impl Resolver {
    /// A table of names; any other name fails to resolve.
    pub fn fixed<'a>(entries: impl IntoIterator<Item = (&'a str, IpAddr)>) -> Self {
        let mut table: HashMap<String, Vec<IpAddr>> = HashMap::new();
        for (name, ip) in entries {
            table.entry(name.to_ascii_lowercase()).or_default().push(ip);
        }
        Self::Fixed(Arc::new(table))
    }

    async fn lookup(&self, host: &str) -> std::io::Result<Vec<IpAddr>> {
        match self {
            Self::System => Ok(tokio::net::lookup_host((host, 0)).await?.map(|a| a.ip()).collect()),
            Self::Fixed(table) => table
                .get(&host.trim_end_matches('.').to_ascii_lowercase())
                .cloned()
                .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no such host")),
        }
    }
}

/// The policy for outgoing requests: the allowlist and the resolver it checks through.
#[derive(Debug, Clone, Default)]
pub struct Egress {
    allowlist: Arc<HostAllowlist>,
    resolver: Resolver,
}

/// How long saving a URL waits for its name to resolve.
const SAVE_RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);

impl Egress {
    pub fn new(allowlist: HostAllowlist, resolver: Resolver) -> Self {
        Self {
            allowlist: Arc::new(allowlist),
            resolver,
        }
    }

    /// The checks that need no resolution; run before every request.
    pub fn check_url(&self, url: &url::Url) -> Result<(), Refusal> {
        if !matches!(url.scheme(), "http" | "https")
            || !url.username().is_empty()
            || url.password().is_some()
            || url.query().is_some()
            || url.fragment().is_some()
        {
            return Err(Refusal::Malformed);
        }
        let port = url.port_or_known_default().ok_or(Refusal::Malformed)?;
        let (host, literal) = match url.host().ok_or(Refusal::Malformed)? {
            url::Host::Domain(name) => (name.to_owned(), None),
            url::Host::Ipv4(ip) => (ip.to_string(), Some(IpAddr::V4(ip))),
            url::Host::Ipv6(ip) => (ip.to_string(), Some(IpAddr::V6(ip))),
        };
        if self.allowlist.lists(&host, port) {
            return Ok(());
        }
        if self.allowlist.exclusive || self.allowlist.lists_host(&host) {
            return Err(Refusal::NotListed);
        }
        match literal {
            Some(ip) if !is_public(ip) => Err(Refusal::Internal),
            None if is_loopback_name(&host) => Err(Refusal::Internal),
            _ => Ok(()),
        }
    }

    /// [`check_url`](Self::check_url), then the name's addresses as they resolve now. A name
    /// that does not resolve (yet) is accepted: every connection checks again.
    pub async fn check_resolved(&self, url: &url::Url) -> Result<(), Refusal> {
        self.check_url(url)?;
        let Some(url::Host::Domain(name)) = url.host() else {
            return Ok(());
        };
        match tokio::time::timeout(SAVE_RESOLVE_TIMEOUT, self.resolver.lookup(name)).await {
            Ok(Ok(addresses)) => self.check_addresses(name, &addresses),
            Ok(Err(_)) | Err(_) => Ok(()),
        }
    }

    /// The address rule: a listed host may be anywhere; any other host only on public addresses.
    fn check_addresses(&self, host: &str, addresses: &[IpAddr]) -> Result<(), Refusal> {
        if self.allowlist.lists_host(host) || addresses.iter().all(|ip| is_public(*ip)) {
            Ok(())
        } else {
            Err(Refusal::Internal)
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Egress {
    /// Every outgoing connection's name is resolved here, by both HTTP clients (below): a refused
    /// name fails the connection before any packet is sent to it.
    async fn connect_addresses(self, host: &str) -> Result<Vec<SocketAddr>, BoxError> {
        let addresses = self.resolver.lookup(host).await?;
        if addresses.is_empty() {
            return Err("the name has no addresses".into());
        }
        if let Err(refusal) = self.check_addresses(host, &addresses) {
            tracing::warn!(host, "outgoing connection refused: {refusal}");
            return Err(refusal.into());
        }
        Ok(addresses.into_iter().map(|ip| SocketAddr::new(ip, 0)).collect())
    }
}

/// reqwest's resolver, for the short requests (webhooks, MCP servers, provider tests).
impl reqwest::dns::Resolve for Egress {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let egress = self.clone();
        Box::pin(async move {
            let addresses = egress.connect_addresses(name.as_str()).await?;
            Ok(Box::new(addresses.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// hyper-util's resolver, for the model providers' streams (`lanes`).
impl tower::Service<hyper_util::client::legacy::connect::dns::Name> for Egress {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = BoxError;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), BoxError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: hyper_util::client::legacy::connect::dns::Name) -> Self::Future {
        let egress = self.clone();
        Box::pin(async move { Ok(egress.connect_addresses(name.as_str()).await?.into_iter()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> url::Url {
        url::Url::parse(text).unwrap()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn internal_addresses_are_not_public() {
        for internal in [
            "127.0.0.1",
            "127.8.9.10",
            "10.0.0.1",
            "10.255.255.53",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "::",
            "::1",
            "fe80::1",
            "fd00::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
        ] {
            assert!(!is_public(ip(internal)), "{internal} is internal");
        }
        for public in ["1.1.1.1", "8.8.8.8", "104.18.0.1", "2606:4700::1111", "::ffff:1.1.1.1"] {
            assert!(is_public(ip(public)), "{public} is public");
        }
    }

    #[test]
    fn without_a_list_only_public_addresses_pass() {
        let egress = Egress::default();
        assert_eq!(egress.check_url(&url("https://api.openai.com/v1")), Ok(()));
        for refused in [
            "http://127.0.0.1:11434/v1",
            "http://169.254.169.254/latest",
            "http://10.0.0.8/v1",
            "http://[::1]:8080/v1",
            "http://[::ffff:127.0.0.1]/v1",
            "http://localhost:11434/v1",
            "http://ollama.localhost/v1",
            "http://2130706433/v1", // 127.0.0.1 as one number: the URL parser normalises it
        ] {
            assert_eq!(egress.check_url(&url(refused)), Err(Refusal::Internal), "{refused}");
        }
        for malformed in [
            "https://api.openai.com/v1?x=1",
            "https://api.openai.com/v1#f",
            "https://u:p@api.openai.com/v1",
            "ftp://api.openai.com/",
        ] {
            assert_eq!(
                egress.check_url(&url(malformed)),
                Err(Refusal::Malformed),
                "{malformed}"
            );
        }
    }

    #[test]
    fn listed_internal_hosts_add_to_public_ones() {
        let list = HostAllowlist::parse(["localhost:11434", "10.0.0.5", "ollama", "[::1]:8000"]).unwrap();
        assert!(!list.exclusive);
        let egress = Egress::new(list, Resolver::default());
        assert_eq!(egress.check_url(&url("http://localhost:11434/v1")), Ok(()));
        assert_eq!(
            egress.check_url(&url("http://localhost:8080/v1")),
            Err(Refusal::NotListed)
        );
        assert_eq!(egress.check_url(&url("http://10.0.0.5:9999/v1")), Ok(()));
        assert_eq!(egress.check_url(&url("http://10.0.0.6/v1")), Err(Refusal::Internal));
        assert_eq!(egress.check_url(&url("http://[0:0::1]:8000/v1")), Ok(()));
        assert_eq!(egress.check_url(&url("https://api.openai.com/v1")), Ok(()));
        // A listed name may resolve anywhere; an unlisted one only to public addresses.
        assert_eq!(egress.check_addresses("ollama", &[ip("172.18.0.3")]), Ok(()));
        assert_eq!(
            egress.check_addresses("api.example.com", &[ip("1.1.1.1"), ip("127.0.0.1")]),
            Err(Refusal::Internal)
        );
    }

    #[test]
    fn a_list_naming_a_public_host_is_the_whole_list() {
        let list = HostAllowlist::parse(["api.openai.com", "*.internal.example.com"]).unwrap();
        assert!(list.exclusive);
        let egress = Egress::new(list, Resolver::default());
        assert_eq!(egress.check_url(&url("https://api.openai.com/v1")), Ok(()));
        assert_eq!(egress.check_url(&url("https://API.OpenAI.com./v1")), Ok(()));
        assert_eq!(egress.check_url(&url("http://llm.internal.example.com/v1")), Ok(()));
        assert_eq!(
            egress.check_url(&url("http://internal.example.com/v1")),
            Err(Refusal::NotListed)
        );
        assert_eq!(
            egress.check_url(&url("https://openrouter.ai/api/v1")),
            Err(Refusal::NotListed)
        );
        assert_eq!(
            egress.check_url(&url("https://evil-api.openai.com.attacker.test/")),
            Err(Refusal::NotListed)
        );
        assert_eq!(
            egress.check_url(&url("http://169.254.169.254/")),
            Err(Refusal::NotListed)
        );
    }

    #[test]
    fn malformed_entries_are_configuration_errors() {
        for bad in ["http://x", "host:port", "*.", "a..b", "[::1", "*foo.com"] {
            assert!(HostAllowlist::parse([bad]).is_err(), "{bad}");
        }
        let any = Egress::new(HostAllowlist::new(["*"]), Resolver::default());
        assert_eq!(any.check_url(&url("http://127.0.0.1:1/v1")), Ok(()));
    }

    #[tokio::test]
    async fn names_are_judged_by_what_they_resolve_to_on_every_connection() {
        use reqwest::dns::Resolve;
        use tower::ServiceExt;
        let resolver = Resolver::fixed([
            ("rebind.test", ip("127.0.0.1")),
            ("metadata.test", ip("169.254.169.254")),
            ("public.test", ip("1.1.1.1")),
            ("ollama.test", ip("10.0.0.7")),
        ]);
        let egress = Egress::new(HostAllowlist::new(["ollama.test"]), resolver);
        assert_eq!(
            egress.check_resolved(&url("http://rebind.test/v1")).await,
            Err(Refusal::Internal)
        );
        assert_eq!(
            egress.check_resolved(&url("http://metadata.test/v1")).await,
            Err(Refusal::Internal)
        );
        assert_eq!(egress.check_resolved(&url("http://public.test/v1")).await, Ok(()));
        // Unresolvable now: accepted on save, checked again at connection.
        assert_eq!(egress.check_resolved(&url("http://unknown.test/v1")).await, Ok(()));
        // Both clients resolve every connection's name through the same rule: reqwest (short
        // requests) and hyper-util (the providers' streams).
        let by_reqwest = |name: &'static str| {
            let egress = egress.clone();
            async move {
                let addresses = egress.resolve(name.parse().unwrap()).await?;
                Ok::<Vec<SocketAddr>, BoxError>(addresses.collect())
            }
        };
        let by_hyper = |name: &'static str| {
            let egress = egress.clone();
            async move { Ok::<Vec<SocketAddr>, BoxError>(egress.oneshot(name.parse().unwrap()).await?.collect()) }
        };
        for name in ["rebind.test", "metadata.test", "unknown.test"] {
            assert!(by_reqwest(name).await.is_err(), "{name}");
            assert!(by_hyper(name).await.is_err(), "{name}");
        }
        let public = vec![SocketAddr::new(ip("1.1.1.1"), 0)];
        assert_eq!(by_reqwest("public.test").await.unwrap(), public);
        assert_eq!(by_hyper("public.test").await.unwrap(), public);
        assert!(by_reqwest("ollama.test").await.is_ok());
        assert!(by_hyper("ollama.test").await.is_ok());
    }
}
