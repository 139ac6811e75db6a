//! The HTTP client for model providers, in lanes, so that many simultaneous turns are not held to
//! one HTTP/2 connection's stream limit.
//!
//! Over TLS, providers that offer HTTP/2 get it (ALPN), and a client's pool then shares one
//! connection per host whatever its load: hyper-util reserves an open HTTP/2 connection as shared
//! and opens no second one while it lives. That connection carries at most the provider's
//! `SETTINGS_MAX_CONCURRENT_STREAMS` (100–256 at the usual providers and proxies); a turn beyond
//! that waits, before its first byte, until another turn's stream ends, which for streamed
//! replies takes tens of seconds (hyperium/hyper#2197).
//!
//! So turns are spread over several clients, each with a pool of its own: a turn takes the first
//! lane with fewer than `CONFIDANT_PROVIDER_STREAMS_PER_CONNECTION` (64) turns running and holds
//! it until its reply's stream is dropped. Filling lanes in order, rather than taking the least
//! busy, keeps a light load on the first lane's connection (no new TLS handshake per turn); lanes
//! are made when the ones before are full, enough for [`MAX_CALLS`] calls, and a lane left idle
//! keeps only its client (its connections close after the pool's idle timeout). All lanes share
//! one TLS configuration, so the platform's roots are loaded once, not once per lane. HTTP/1
//! providers (plain `http://`, a local Ollama) are served as before: a pool opens one connection
//! per simultaneous request.
//!
//! The turns' clients are hyper-util's, built here rather than through reqwest, for one setting
//! reqwest does not expose: an HTTP/1 connection's read buffer is held at 8 KiB. By default hyper
//! doubles it whenever a read fills it, up to about 400 KiB, and when the server falls behind a
//! provider's stream every read does: at 5,000 paced streams that growth was most of the resident
//! memory (README, "Performance"). With the bound, unread chunks wait in the kernel's socket
//! buffer, and the provider is slowed by TCP's flow control instead. The short requests (webhooks,
//! MCP servers, provider tests) keep a reqwest client ([`ProviderLanes::short`]), with the same
//! TLS configuration, resolver and rules.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::egress::Egress;

/// A provider connection's read buffer: hyper's smallest, and its bound (so also the longest
/// response head a provider may send).
const READ_BUFFER_BYTES: usize = 8 * 1024;

/// How long an idle provider connection is kept for the next turn (reqwest's default).
const POOL_IDLE: Duration = Duration::from_secs(90);

/// TCP keepalive on provider connections, as reqwest sets it: a probe after this long without
/// traffic and then this often, the connection given up after `KEEPALIVE_PROBES` unanswered.
const KEEPALIVE: Duration = Duration::from_secs(15);
const KEEPALIVE_PROBES: u32 = 3;

/// The client that calls a model provider for a turn.
pub type TurnClient = Client<HttpsConnector<HttpConnector<Egress>>, Full<Bytes>>;

/// Calls at once that lanes are made for: at most this many divided by the calls per lane. Beyond
/// that, the least busy lane takes more.
pub const MAX_CALLS: usize = 16_384;

/// The provider clients. Cloning shares them.
#[derive(Clone)]
pub struct ProviderLanes(Arc<Inner>);

struct Inner {
    connect_timeout: Duration,
    egress: Egress,
    tls: rustls::ClientConfig,
    per_lane: usize,
    lanes: Box<[OnceLock<Arc<Lane>>]>,
    /// The short requests' client.
    short: reqwest::Client,
}

struct Lane {
    client: TurnClient,
    running: AtomicUsize,
}

/// One turn's place in a lane: the client to call the provider with. The lane counts the turn
/// until this is dropped, so the reply's stream holds it.
pub struct Claim(Arc<Lane>);

impl Claim {
    pub fn client(&self) -> &TurnClient {
        &self.0.client
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::AcqRel);
    }
}

impl std::fmt::Debug for Claim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claim").finish_non_exhaustive()
    }
}

impl ProviderLanes {
    /// Clients with rustls (ring) and the platform's roots, a connect timeout, every name resolved
    /// through `egress` (internal addresses refused on every connection), no redirects (a redirect
    /// could point a provider call at an internal host) and no proxy (the address checked must be
    /// the address connected to).
    /// `per_lane`: calls a lane carries before the next is used, below the providers' HTTP/2
    /// stream limit.
    pub fn new(connect_timeout: Duration, egress: &Egress, per_lane: usize) -> Self {
        let per_lane = per_lane.max(1);
        Self::build(
            connect_timeout,
            egress,
            Vec::new(),
            per_lane,
            MAX_CALLS.div_ceil(per_lane),
        )
    }

    fn build(
        connect_timeout: Duration,
        egress: &Egress,
        extra_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
        per_lane: usize,
        max_lanes: usize,
    ) -> Self {
        // Several callers (tests, benches) may build clients; only the first install counts.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let tls = tls_config(extra_roots);
        let short = short_client(&tls, connect_timeout, egress);
        Self(Arc::new(Inner {
            connect_timeout,
            egress: egress.clone(),
            tls,
            per_lane: per_lane.max(1),
            lanes: (0..max_lanes.max(1)).map(|_| OnceLock::new()).collect(),
            short,
        }))
    }

    /// The client for requests that are short (webhooks, MCP servers, provider tests) and so
    /// need no lane of their own.
    pub fn short(&self) -> &reqwest::Client {
        &self.0.short
    }

    /// A place for one turn: the first lane with room, a new lane if all are full, or, with
    /// every lane made and full, the least busy.
    pub fn claim(&self) -> Claim {
        let inner = &*self.0;
        for slot in inner.lanes.iter() {
            let lane = slot.get_or_init(|| inner.lane());
            let taken = lane.running.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < inner.per_lane).then_some(n + 1)
            });
            if taken.is_ok() {
                return Claim(lane.clone());
            }
        }
        let lane = inner
            .lanes
            .iter()
            .filter_map(OnceLock::get)
            .min_by_key(|lane| lane.running.load(Ordering::Acquire))
            .expect("every lane was made by the loop above");
        lane.running.fetch_add(1, Ordering::AcqRel);
        Claim(lane.clone())
    }

    /// Lanes made so far.
    pub fn lanes(&self) -> usize {
        self.0.lanes.iter().filter(|slot| slot.get().is_some()).count()
    }

    /// Provider calls holding a place in a lane (replies streaming from a provider).
    pub fn running(&self) -> usize {
        self.0
            .lanes
            .iter()
            .filter_map(OnceLock::get)
            .map(|lane| lane.running.load(Ordering::Acquire))
            .sum()
    }
}

/// What every provider request carries as its `User-Agent`.
pub const USER_AGENT: &str = concat!("confidant/", env!("CARGO_PKG_VERSION"));

impl Inner {
    /// A lane's client: TCP as reqwest sets it up (no Nagle delay, keepalive probes), every name
    /// resolved through the egress rule, HTTP/2 offered over TLS, the bounded read buffer. hyper
    /// follows no redirect and uses no proxy, so the address checked is the address connected to.
    fn lane(&self) -> Arc<Lane> {
        let mut tcp = HttpConnector::new_with_resolver(self.egress.clone());
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(self.connect_timeout));
        tcp.set_keepalive(Some(KEEPALIVE));
        tcp.set_keepalive_interval(Some(KEEPALIVE));
        tcp.set_keepalive_retries(Some(KEEPALIVE_PROBES));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(self.tls.clone())
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(tcp);
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE)
            .http1_max_buf_size(READ_BUFFER_BYTES)
            .build(connector);
        Arc::new(Lane {
            client,
            running: AtomicUsize::new(0),
        })
    }
}

/// The short requests' client: the same TLS (HTTP/2 then HTTP/1.1 offered), resolver and rules.
fn short_client(tls: &rustls::ClientConfig, connect_timeout: Duration, egress: &Egress) -> reqwest::Client {
    let mut tls = tls.clone();
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .connect_timeout(connect_timeout)
        .dns_resolver(Arc::new(egress.clone()))
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(USER_AGENT)
        .build()
        .expect("the HTTP client builds with a rustls configuration")
}

/// What reqwest builds for itself with `rustls-no-provider` (ring, TLS 1.2 and 1.3, the platform's
/// verifier), built once for every lane; each client adds its ALPN protocols.
fn tls_config(extra_roots: Vec<rustls::pki_types::CertificateDer<'static>>) -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = if extra_roots.is_empty() {
        rustls_platform_verifier::Verifier::new(provider.clone())
    } else {
        rustls_platform_verifier::Verifier::new_with_extra_roots(extra_roots, provider.clone())
    }
    .expect("the platform's certificate verifier starts");
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth()
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};

    use http_body_util::StreamBody;
    use hyper::body::Frame;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    use super::*;
    use crate::completions::egress::{HostAllowlist, Resolver};

    fn fixture(name: &str) -> String {
        format!("{}/tests/fixtures/tls/{name}", env!("CARGO_MANIFEST_DIR"))
    }

    fn lanes(per_lane: usize, max_lanes: usize) -> ProviderLanes {
        let egress = Egress::new(
            HostAllowlist::new(["localhost"]),
            Resolver::fixed([("localhost", IpAddr::V4(Ipv4Addr::LOCALHOST))]),
        );
        let ca = CertificateDer::from_pem_file(fixture("ca.pem")).unwrap();
        ProviderLanes::build(Duration::from_secs(5), &egress, vec![ca], per_lane, max_lanes)
    }

    /// A TLS server on loopback that speaks only HTTP/2 (ALPN `h2`), allows `max_streams` streams
    /// per connection, and answers every request with headers at once and a body that never ends.
    /// Returns its address and how many connections it accepted.
    async fn h2_server(max_streams: u32) -> (SocketAddr, Arc<AtomicUsize>) {
        let cert = CertificateDer::from_pem_file(fixture("server.pem")).unwrap();
        let key = PrivateKeyDer::from_pem_file(fixture("server.key")).unwrap();
        let mut config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(vec![cert], key)
                .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let accepted = connections.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let service = hyper::service::service_fn(|_request| async {
                        let body = StreamBody::new(futures_util::stream::pending::<Result<Frame<Bytes>, Infallible>>());
                        Ok::<_, Infallible>(hyper::Response::new(body))
                    });
                    let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .max_concurrent_streams(max_streams)
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        (address, connections)
    }

    /// Starts a turn's request through the lanes; the claim and the response (whose body stays
    /// open) are kept, as a reply's stream keeps them.
    async fn open(lanes: &ProviderLanes, port: u16) -> (Claim, hyper::Response<hyper::body::Incoming>) {
        let claim = lanes.claim();
        let request = hyper::Request::post(format!("https://localhost:{port}/v1/chat/completions"))
            .body(Full::default())
            .unwrap();
        let response = claim.client().request(request).await.unwrap();
        (claim, response)
    }

    #[tokio::test]
    async fn one_client_waits_at_the_providers_stream_limit() {
        // The problem the lanes solve, shown against the same server: with one lane (one pool),
        // the third simultaneous request waits for a stream of the one HTTP/2 connection.
        let (address, connections) = h2_server(2).await;
        let lanes = lanes(100, 1);
        let first = open(&lanes, address.port()).await;
        let second = open(&lanes, address.port()).await;
        assert_eq!(first.1.version(), hyper::Version::HTTP_2);
        let third = tokio::time::timeout(Duration::from_millis(500), open(&lanes, address.port())).await;
        assert!(third.is_err(), "the third request should wait for a free stream");
        assert_eq!(connections.load(Ordering::SeqCst), 1);
        drop((first, second));
    }

    #[tokio::test]
    async fn turns_beyond_one_connections_stream_limit_do_not_wait() {
        let (address, connections) = h2_server(2).await;
        let lanes = lanes(2, 8);
        let mut open_turns = Vec::new();
        for _ in 0..5 {
            let turn = tokio::time::timeout(Duration::from_secs(5), open(&lanes, address.port()))
                .await
                .expect("every turn gets its reply's headers without waiting for another's stream");
            assert_eq!(turn.1.version(), hyper::Version::HTTP_2, "ALPN offers h2 on every lane");
            open_turns.push(turn);
        }
        assert_eq!(lanes.lanes(), 3);
        assert_eq!(
            connections.load(Ordering::SeqCst),
            3,
            "two streams per connection, five turns"
        );
    }

    #[tokio::test]
    async fn a_provider_connections_read_buffer_stays_bounded_when_its_reader_falls_behind() {
        // An HTTP/1 provider that sends a whole 1 MiB reply at once, to a reader that starts late:
        // the kernel holds what was sent, and every read finds more than the buffer takes. hyper's
        // default would double the buffer after each full read (the body's pieces would grow to
        // hundreds of KiB); bounded, no piece exceeds it.
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        const REPLY: usize = 1 << 20;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && tcp.read(&mut byte).await.unwrap() == 1 {
                head.push(byte[0]);
            }
            let start = format!("HTTP/1.1 200 OK\r\ncontent-length: {REPLY}\r\n\r\n");
            tcp.write_all(start.as_bytes()).await.unwrap();
            tcp.write_all(&vec![b'x'; REPLY]).await.unwrap();
            tcp.flush().await.unwrap();
            let _ = tcp.read(&mut byte).await;
        });
        let lanes = lanes(4, 1);
        let claim = lanes.claim();
        let request = hyper::Request::post(format!("http://localhost:{port}/v1/chat/completions"))
            .body(Full::default())
            .unwrap();
        let response = claim.client().request(request).await.unwrap();
        assert_eq!(response.version(), hyper::Version::HTTP_11);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut body = http_body_util::BodyDataStream::new(response.into_body());
        let (mut total, mut largest, mut pieces) = (0, 0, 0);
        while let Some(piece) = futures_util::StreamExt::next(&mut body).await {
            let piece = piece.unwrap();
            total += piece.len();
            largest = largest.max(piece.len());
            pieces += 1;
        }
        assert_eq!(total, REPLY);
        assert!(largest <= READ_BUFFER_BYTES, "a piece of {largest} bytes");
        assert!(pieces >= REPLY / READ_BUFFER_BYTES, "{pieces} pieces");
    }

    #[test]
    fn lanes_fill_in_order_and_free_their_places() {
        let lanes = lanes(2, 3);
        let a = lanes.claim();
        let b = lanes.claim();
        let c = lanes.claim();
        assert!(Arc::ptr_eq(&a.0, &b.0), "the first lane takes turns until it is full");
        assert!(!Arc::ptr_eq(&a.0, &c.0));
        assert_eq!(lanes.lanes(), 2);
        drop(b);
        let d = lanes.claim();
        assert!(
            Arc::ptr_eq(&a.0, &d.0),
            "a place freed in the first lane is taken first"
        );
        // All three lanes full: the least busy takes one more.
        let _rest: Vec<Claim> = (0..3).map(|_| lanes.claim()).collect();
        assert_eq!(lanes.lanes(), 3);
        let over = lanes.claim();
        assert_eq!(over.0.running.load(Ordering::Acquire), 3);
        assert_eq!(lanes.running(), 7);
        drop((a, c, d, over));
        assert_eq!(lanes.running(), 3);
    }
}
