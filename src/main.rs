//! The `confidant` command: serve, migrate, admin create, token mint.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use confidant::AppState;
use confidant::config::{self, DatabaseArgs, ServeArgs};
use confidant::store::{Backend, Db, SqliteLocking};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "confidant",
    version,
    about = "A self-hostable store for AI-agent conversations and per-user memory"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP service (migrates the database first).
    Serve(Box<ServeArgs>),
    /// Apply database migrations and exit.
    Migrate(DatabaseArgs),
    /// Manage operators.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Secure user tokens, for development and docs.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Print the OpenAPI document (what `make openapi` writes to openapi/openapi.json).
    #[command(hide = true)]
    Openapi,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create an operator (dashboard user).
    Create {
        #[command(flatten)]
        database: DatabaseArgs,
        #[arg(long)]
        email: String,
        #[arg(long, env = "CONFIDANT_ADMIN_PASSWORD", hide_env_values = true)]
        password: String,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Sign a secure user token (HS256) the way a company's backend would.
    Mint {
        /// The authentication key id (`kid`).
        #[arg(long)]
        kid: String,
        /// The authentication key secret (`sk-cfd-…`).
        #[arg(long, env = "CONFIDANT_KEY_SECRET", hide_env_values = true)]
        secret: String,
        /// The end user's id.
        #[arg(long)]
        sub: String,
        /// Lifetime, e.g. 15m, 1h, 7d.
        #[arg(long, default_value = "1h", value_parser = config::parse_duration)]
        ttl: Duration,
    },
}

fn main() -> ExitCode {
    tune_malloc();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn")))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return fail(format!("cannot start the async runtime: {e}")),
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => fail(message),
    }
}

/// glibc's defaults trade memory for little speed here:
/// - each thread that allocates gets its own 64 MiB arena; two arenas serve two cores;
/// - the mmap threshold grows to the largest block ever freed (a login's 19 MiB Argon2 block),
///   after which the heap holds on to freed memory. A fixed threshold keeps large blocks mapped
///   on their own (returned when freed) and lets the heap shrink after a burst.
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator; it runs before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 * 1024);
    }
}

fn fail(message: String) -> ExitCode {
    eprintln!("confidant: {message}");
    ExitCode::FAILURE
}

async fn open_database(database: &DatabaseArgs) -> Result<Db, String> {
    let db = Db::connect(&database.database_url, &database.db_options())
        .await
        .map_err(|e| format!("cannot open the database: {e}"))?;
    db.migrate()
        .await
        .map_err(|e| format!("cannot migrate the database: {e}"))?;
    if db.backend() == Backend::Sqlite && database.sqlite_locking == SqliteLocking::Exclusive {
        tracing::info!(
            "the SQLite file is held by this process alone until it exits (CONFIDANT_SQLITE_LOCKING=exclusive)"
        );
    }
    Ok(db)
}

async fn run(command: Command) -> Result<(), String> {
    match command {
        Command::Serve(args) => serve(*args).await,
        Command::Migrate(database) => {
            open_database(&database).await?.close().await;
            eprintln!("confidant: migrations applied");
            Ok(())
        }
        Command::Admin {
            command:
                AdminCommand::Create {
                    database,
                    email,
                    password,
                },
        } => {
            let db = open_database(&database).await?;
            let created = confidant::ensure_operator(&db, &email, &password)
                .await
                .map_err(|e| e.to_string())?;
            db.close().await;
            if created {
                println!("created operator {email}");
                Ok(())
            } else {
                Err(format!("an operator with email {email} already exists"))
            }
        }
        Command::Token {
            command: TokenCommand::Mint { kid, secret, sub, ttl },
        } => {
            let token = confidant::auth::mint_user_token(&kid, &secret, &sub, ttl).map_err(|e| e.to_string())?;
            println!("{token}");
            Ok(())
        }
        Command::Openapi => {
            let doc = confidant::openapi().to_pretty_json().map_err(|e| e.to_string())?;
            println!("{doc}");
            Ok(())
        }
    }
}

async fn serve(args: ServeArgs) -> Result<(), String> {
    if confidant::store::backend_of(&args.database.database_url).is_none() {
        return Err(config::ConfigError::DatabaseUrl.to_string());
    }
    let master_key = config::resolve_master_key(&args.database.database_url, args.master_key.as_deref())
        .map_err(|e| e.to_string())?;
    let db = open_database(&args.database).await?;
    match (&args.admin_email, &args.admin_password) {
        (Some(email), Some(password)) => {
            if confidant::ensure_operator(&db, email, password)
                .await
                .map_err(|e| format!("CONFIDANT_ADMIN_EMAIL: {e}"))?
            {
                tracing::info!(email, "created the first operator from CONFIDANT_ADMIN_EMAIL");
            }
        }
        (Some(_), None) | (None, Some(_)) => {
            return Err("set both CONFIDANT_ADMIN_EMAIL and CONFIDANT_ADMIN_PASSWORD, or neither".into());
        }
        (None, None) => {}
    }
    let settings = args.settings.clone();
    let listener = confidant::listen(args.listen).map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let address = listener
        .local_addr()
        .map_err(|e| format!("cannot read the listening address: {e}"))?;
    tracing::info!(%address, backend = ?db.backend(), "confidant is listening");
    tracing::info!(
        "dashboard: http://{address}/dashboard{} · API reference: http://{address}/docs/",
        args.admin_email
            .as_deref()
            .map(|email| format!(" (operator {email})"))
            .unwrap_or_default()
    );
    let state = AppState::new(db.clone(), master_key, settings);
    confidant::serve(listener, state, shutdown_signal())
        .await
        .map_err(|e| format!("server error: {e}"))?;
    db.close().await;
    tracing::info!("confidant stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}
