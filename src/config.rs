//! Settings of `confidant serve`, from flags or the contract's environment variables.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, FromArgMatches};

use crate::completions::egress::{HostAllowlist, Resolver};

use crate::crypto::MasterKey;
use crate::store::{self, Backend};

/// Database settings shared by every command that opens the database.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// `sqlite://PATH` (created if missing) or `postgres://...`.
    #[arg(long, env = "CONFIDANT_DATABASE_URL", default_value = "sqlite://confidant.db")]
    pub database_url: String,

    /// Most database connections this process opens (PostgreSQL; for SQLite, its readers).
    /// Default: 4 per core, at least 8. Behind a load balancer, keep instances × this under the
    /// server's `max_connections`.
    #[arg(long, env = "CONFIDANT_DATABASE_MAX_CONNECTIONS", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub database_max_connections: Option<u32>,

    /// How long a request waits for a free database connection before it is answered 503
    /// (PostgreSQL; a burst of turns queues for this long rather than failing).
    #[arg(long, env = "CONFIDANT_DATABASE_ACQUIRE_TIMEOUT", default_value = "15s", value_parser = parse_duration)]
    pub database_acquire_timeout: Duration,

    /// SQLite only: `shared` lets other processes (the `sqlite3` shell, backup and replication
    /// tools) open the file while the service runs; `exclusive` keeps it to this process (a
    /// second instance fails to start) and spares every read the system calls of file locks.
    #[arg(long, env = "CONFIDANT_SQLITE_LOCKING", default_value = "shared", value_parser = parse_locking)]
    pub sqlite_locking: store::SqliteLocking,
}

impl DatabaseArgs {
    pub fn db_options(&self) -> crate::store::DbOptions {
        let mut options = crate::store::DbOptions::default();
        if let Some(max) = self.database_max_connections {
            options.max_connections = max;
            // With SQLite, the most readers kept (its one writer apart).
            options.sqlite_readers = options.sqlite_readers.min(max);
        }
        options.acquire_timeout = self.database_acquire_timeout;
        options.sqlite_locking = self.sqlite_locking;
        options
    }
}

fn parse_locking(value: &str) -> Result<store::SqliteLocking, String> {
    match value {
        "shared" => Ok(store::SqliteLocking::Shared),
        "exclusive" => Ok(store::SqliteLocking::Exclusive),
        _ => Err("expected `shared` or `exclusive`".into()),
    }
}

#[derive(Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// Address to listen on.
    #[arg(long, env = "CONFIDANT_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Base64 of 32 bytes; encrypts secrets at rest. Generated beside a SQLite database if unset.
    #[arg(long, env = "CONFIDANT_MASTER_KEY", hide_env_values = true)]
    pub master_key: Option<String>,

    /// Create this operator on start if it does not exist (with --admin-password).
    #[arg(long, env = "CONFIDANT_ADMIN_EMAIL")]
    pub admin_email: Option<String>,

    #[arg(long, env = "CONFIDANT_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,

    #[command(flatten)]
    pub settings: Settings,
}

/// What the request handlers are tuned by: every field is a flag of `confidant serve` and an
/// environment variable, with its default here and nowhere else.
#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "CONFIDANT_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Longest accepted lifetime of a secure user token (`exp` further ahead is refused), e.g. `7d`, `12h`.
    #[arg(long, env = "CONFIDANT_MAX_TOKEN_TTL", default_value = "7d", value_parser = parse_duration)]
    pub max_token_ttl: Duration,

    /// Lifetime of an operator access token.
    #[arg(long, env = "CONFIDANT_ACCESS_TOKEN_TTL", default_value = "1h", value_parser = parse_duration)]
    pub access_token_ttl: Duration,

    /// Absolute lifetime of an operator session (its refresh tokens); rotation does not extend it.
    #[arg(long, env = "CONFIDANT_REFRESH_TOKEN_TTL", default_value = "7d", value_parser = parse_duration)]
    pub refresh_token_ttl: Duration,

    /// Request headers must arrive within this (a client that trickles them is dropped).
    #[arg(long, env = "CONFIDANT_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_timeout: Duration,

    /// Most client connections served at once; more wait in the listen queue.
    #[arg(long, env = "CONFIDANT_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// Login attempts a minute from one client address (the peer's; a proxy's address is shared
    /// by everyone behind it).
    #[arg(long, env = "CONFIDANT_LOGIN_PER_ADDRESS_PER_MINUTE", default_value_t = 30)]
    pub login_per_address_per_minute: u32,

    /// Login attempts a minute for one email.
    #[arg(long, env = "CONFIDANT_LOGIN_PER_EMAIL_PER_MINUTE", default_value_t = 10)]
    pub login_per_email_per_minute: u32,

    /// Default per-user limit of data-plane requests a minute, for applications that set none
    /// (unset: no limit).
    #[arg(long, env = "CONFIDANT_USER_REQUESTS_PER_MINUTE", value_parser = clap::value_parser!(u32).range(1..))]
    pub user_requests_per_minute: Option<u32>,

    /// Default per-user limit of completion turns a minute (unset: no limit).
    #[arg(long, env = "CONFIDANT_USER_COMPLETIONS_PER_MINUTE", value_parser = clap::value_parser!(u32).range(1..))]
    pub user_completions_per_minute: Option<u32>,

    /// Default per-user quota of model tokens (input + output) a UTC day (unset: no quota).
    #[arg(long, env = "CONFIDANT_USER_TOKENS_PER_DAY", value_parser = clap::value_parser!(u64).range(1..))]
    pub user_tokens_per_day: Option<u64>,

    /// When set, `GET /metrics` requires `Authorization: Bearer <this token>`.
    #[arg(long, env = "CONFIDANT_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<SecretString>,

    /// Longest an instance keeps using an authentication key or an API key it has cached, even if
    /// it missed the notice of its deletion.
    #[arg(long, env = "CONFIDANT_KEY_CACHE_TTL", default_value = "60s", value_parser = parse_duration)]
    pub key_cache_ttl: Duration,

    /// A turn ends within this; what the model produced by then is stored `incomplete`.
    #[arg(long, env = "CONFIDANT_TURN_TIMEOUT", default_value = "5m", value_parser = parse_duration)]
    pub turn_timeout: Duration,

    /// The longest reply stored, in bytes; a longer one is cut there and stored `incomplete`.
    #[arg(long, env = "CONFIDANT_MAX_REPLY_BYTES", default_value_t = 1024 * 1024)]
    pub max_reply_bytes: usize,

    /// A request must be answered within this (its response head; streamed bodies and turns have
    /// their own limits): `503 unavailable` otherwise.
    #[arg(long, env = "CONFIDANT_REQUEST_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub request_timeout: Duration,

    /// A streaming client that takes no data for this long is dropped; its reply is stored
    /// `incomplete` and the model is stopped.
    #[arg(long, env = "CONFIDANT_SEND_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub send_timeout: Duration,

    /// How often each application's retention policy is carried out (conversations and memory
    /// older than it allows are deleted; on PostgreSQL by one instance at a time).
    #[arg(long, env = "CONFIDANT_PURGE_INTERVAL", default_value = "10m", value_parser = parse_duration)]
    pub purge_interval: Duration,

    /// Most messages of a conversation's history given to the model per turn.
    #[arg(long, env = "CONFIDANT_HISTORY_MESSAGES", default_value_t = 50)]
    pub history_messages: u64,

    /// Comma-separated hosts providers may use even on internal addresses (`localhost:11434`,
    /// `10.0.0.5`, `*.internal.example.com`); naming any public host makes it the only hosts
    /// allowed. Unset: public addresses only.
    #[arg(long = "provider-allowed-hosts", env = "CONFIDANT_PROVIDER_ALLOWED_HOSTS", default_value = "",
        value_parser = parse_host_allowlist)]
    pub provider_hosts: HostAllowlist,

    /// How provider names are resolved (the system's resolver; tests use a fixed table).
    #[arg(skip)]
    pub resolver: Resolver,

    /// Longest wait for a model provider to accept a connection.
    #[arg(long, env = "CONFIDANT_PROVIDER_CONNECT_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub provider_connect_timeout: Duration,

    /// Provider calls at once on one HTTP/2 connection to a provider before another connection
    /// is opened: keep it below the providers' `SETTINGS_MAX_CONCURRENT_STREAMS` (often 100), as
    /// calls beyond that wait for another reply to end (`completions::lanes`).
    #[arg(long, env = "CONFIDANT_PROVIDER_STREAMS_PER_CONNECTION", default_value_t = 64,
        value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub provider_streams_per_connection: u32,

    /// Longest silence tolerated from a model provider, before and between chunks.
    #[arg(long, env = "CONFIDANT_PROVIDER_IDLE_TIMEOUT", default_value = "120s", value_parser = parse_duration)]
    pub provider_idle_timeout: Duration,

    /// Longest an MCP server may take to answer one tool call (listing its tools: the same); a
    /// call that takes longer is a failed result the model reads.
    #[arg(long, env = "CONFIDANT_TOOL_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub tool_timeout: Duration,

    /// A failed webhook delivery is tried again after about this long (±25 %), each next time
    /// twice as long (at most an hour), for 24 hours.
    #[arg(long, env = "CONFIDANT_WEBHOOK_RETRY_BASE", default_value = "5s", value_parser = parse_duration)]
    pub webhook_retry_base: Duration,

    /// A webhook receiver must answer within this, else the attempt failed.
    #[arg(long, env = "CONFIDANT_WEBHOOK_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub webhook_timeout: Duration,

    /// How often a stream sends a keep-alive comment while the model is silent.
    #[arg(long, env = "CONFIDANT_KEEPALIVE_INTERVAL", default_value = "15s", value_parser = parse_duration)]
    pub keepalive_interval: Duration,
}

impl Default for Settings {
    /// The defaults of the flags above, whatever the environment says.
    fn default() -> Self {
        let mut command = Settings::augment_args(clap::Command::new("defaults"));
        let ids: Vec<_> = command.get_arguments().map(|arg| arg.get_id().clone()).collect();
        for id in ids {
            command = command.mut_arg(id, |arg| arg.env(None));
        }
        let matches = command.get_matches_from(["defaults"]);
        Settings::from_arg_matches(&matches).expect("the defaults parse")
    }
}

/// A setting that is a secret: shown as `<redacted>` in debug output.
#[derive(Clone)]
pub struct SecretString(String);

impl SecretString {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for SecretString {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Err("must not be empty".into());
        }
        Ok(Self(text.trim().to_owned()))
    }
}

impl From<&str> for SecretString {
    fn from(text: &str) -> Self {
        Self(text.to_owned())
    }
}

impl std::fmt::Debug for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

fn parse_host_allowlist(text: &str) -> Result<HostAllowlist, String> {
    HostAllowlist::parse(text.split(','))
}

impl std::fmt::Debug for ServeArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeArgs")
            .field("database", &self.database)
            .field("listen", &self.listen)
            .field("master_key", &self.master_key.as_ref().map(|_| "<redacted>"))
            .field("admin_email", &self.admin_email)
            .field("admin_password", &self.admin_password.as_ref().map(|_| "<redacted>"))
            .field("settings", &self.settings)
            .finish()
    }
}

/// Parses `90s`, `15m`, `1h`, `7d` or a plain number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text, ""), |at| text.split_at(at));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 90s, 15m, 1h or 7d"))?;
    let seconds = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("`{text}` has an unknown unit (use s, m, h or d)")),
    };
    if seconds == 0 {
        return Err("a duration must be positive".into());
    }
    Ok(Duration::from_secs(seconds))
}

/// A configuration problem that stops the server from starting.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("CONFIDANT_DATABASE_URL must start with sqlite:// or postgres://")]
    DatabaseUrl,
    #[error(transparent)]
    MasterKey(#[from] crate::crypto::MasterKeyError),
    #[error("CONFIDANT_MASTER_KEY is required with PostgreSQL (generate one with `openssl rand -base64 32`)")]
    MasterKeyRequired,
    #[error("could not read or write the master key file {path}: {source}")]
    MasterKeyFile { path: PathBuf, source: std::io::Error },
}

/// Where the generated master key of a SQLite database is kept.
pub fn master_key_file(database_path: &Path) -> PathBuf {
    let mut name = database_path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".master-key");
    database_path.with_file_name(name)
}

/// The master key from the settings, or, for a SQLite database, from (or newly into) the file
/// beside it.
pub fn resolve_master_key(database_url: &str, configured: Option<&str>) -> Result<MasterKey, ConfigError> {
    if let Some(text) = configured.filter(|t| !t.trim().is_empty()) {
        return Ok(MasterKey::from_base64(text)?);
    }
    match store::backend_of(database_url) {
        None => Err(ConfigError::DatabaseUrl),
        Some(Backend::Postgres) => Err(ConfigError::MasterKeyRequired),
        Some(Backend::Sqlite) => {
            let Some(db_path) = store::sqlite_path(database_url) else {
                // An in-memory database lives only as long as the process; so may its key.
                return Ok(MasterKey::from_base64(&MasterKey::generate_base64())?);
            };
            let path = master_key_file(&db_path);
            let io = |source| ConfigError::MasterKeyFile {
                path: path.clone(),
                source,
            };
            match std::fs::read_to_string(&path) {
                Ok(text) => Ok(MasterKey::from_base64(&text)?),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    let generated = MasterKey::generate_base64();
                    write_private(&path, &generated).map_err(io)?;
                    tracing::warn!(
                        path = %path.display(),
                        "CONFIDANT_MASTER_KEY is not set: generated a master key into this file; back it up, \
                         without it stored secrets cannot be decrypted"
                    );
                    Ok(MasterKey::from_base64(&generated)?)
                }
                Err(e) => Err(io(e)),
            }
        }
    }
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("7d").unwrap(), Duration::from_secs(604_800));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("1w").is_err());
        assert!(parse_duration("h").is_err());
    }

    #[test]
    fn the_connection_settings_reach_both_databases() {
        let args = DatabaseArgs {
            database_url: "sqlite://x.db".into(),
            database_max_connections: Some(1),
            database_acquire_timeout: Duration::from_secs(3),
            sqlite_locking: parse_locking("exclusive").unwrap(),
        };
        let options = args.db_options();
        assert_eq!(options.sqlite_locking, store::SqliteLocking::Exclusive);
        assert!(parse_locking("none").is_err());
        assert_eq!(options.max_connections, 1);
        assert_eq!(options.sqlite_readers, 1, "SQLite keeps at most that many readers");
        assert_eq!(options.acquire_timeout, Duration::from_secs(3));
    }

    #[test]
    fn every_setting_is_in_the_readme() {
        use clap::Args as _;
        let readme = include_str!("../README.md");
        let command = ServeArgs::augment_args(clap::Command::new("serve"));
        let names: Vec<String> = command
            .get_arguments()
            .filter_map(|arg| arg.get_env())
            .map(|env| env.to_string_lossy().into_owned())
            .collect();
        assert!(names.len() > 20, "{names:?}");
        for name in names {
            assert!(
                readme.contains(&format!("`{name}`")),
                "{name} is not documented in README.md"
            );
        }
    }

    #[test]
    fn default_settings_are_the_flags_defaults() {
        let settings = Settings::default();
        assert_eq!(settings.max_body_bytes, 1024 * 1024);
        assert_eq!(settings.key_cache_ttl, Duration::from_secs(60));
        assert_eq!(settings.max_token_ttl, Duration::from_secs(7 * 86_400));
        assert_eq!(settings.history_messages, 50);
    }
}
