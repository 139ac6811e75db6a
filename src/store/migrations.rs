//! The schema's migrations, one list for both databases (`migrations/{sqlite,postgres}/`).
//!
//! Both databases record what was applied in `_sqlx_migrations`, as sqlx's migrator does (it
//! still runs them on PostgreSQL; SQLite's runner below writes the same records), so a database
//! made by any earlier release opens and migrates with nothing lost.

use sha2::{Digest, Sha384};

use super::{StoreError, StoreResult};

/// One step of the schema, in both dialects.
pub struct Migration {
    pub version: i64,
    pub description: &'static str,
    pub sqlite: &'static str,
    pub postgres: &'static str,
}

macro_rules! migrations {
    ($($version:literal $name:literal),* $(,)?) => {
        /// Every migration this build carries, oldest first.
        pub const MIGRATIONS: &[Migration] = &[$(
            Migration {
                version: $version,
                description: $name,
                sqlite: include_str!(concat!("../../migrations/sqlite/", $name, ".sql")),
                postgres: include_str!(concat!("../../migrations/postgres/", $name, ".sql")),
            },
        )*];
    };
}

// One list, so a migration cannot exist for one database and not the other.
migrations! {
    1 "0001_initial",
    2 "0002_conversation_last_seq",
    3 "0003_messages_owner_index",
    4 "0004_memory_search_by_owner",
    5 "0005_origins_limits_usage",
    6 "0006_conversations_by_application",
    7 "0007_feedback",
    8 "0008_retention_superseded",
    9 "0009_tools",
    10 "0010_live_replies",
    11 "0011_webhooks",
    12 "0012_messages_checked_by_their_reservation",
}

/// sqlx's checksum of a migration: SHA-384 of its SQL.
fn checksum(sql: &str) -> Vec<u8> {
    Sha384::digest(sql.as_bytes()).to_vec()
}

/// sqlx's migrator over the PostgreSQL migrations.
pub fn postgres_migrator() -> sqlx::migrate::Migrator {
    use sqlx::migrate::{Migration as SqlxMigration, MigrationType};
    sqlx::migrate::Migrator::with_migrations(
        MIGRATIONS
            .iter()
            .map(|m| {
                SqlxMigration::new(
                    m.version,
                    m.description.into(),
                    MigrationType::Simple,
                    sqlx::SqlStr::from_static(m.postgres),
                    false,
                )
            })
            .collect(),
    )
}

/// The table sqlx keeps its records in, exactly as sqlx creates it on SQLite.
const SQLITE_RECORDS: &str = "CREATE TABLE IF NOT EXISTS _sqlx_migrations (
    version BIGINT PRIMARY KEY,
    description TEXT NOT NULL,
    installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    success BOOLEAN NOT NULL,
    checksum BLOB NOT NULL,
    execution_time BIGINT NOT NULL
)";

/// Applies, on SQLite, the migrations the database has not recorded; refuses a database whose
/// records disagree with this build (a failed, changed or unknown migration) rather than guess.
pub(super) fn run_sqlite(connection: &rusqlite::Connection, migrations: &[Migration]) -> StoreResult<()> {
    connection.execute_batch(SQLITE_RECORDS)?;
    let applied: Vec<(i64, Vec<u8>, bool)> = connection
        .prepare("SELECT version, checksum, success FROM _sqlx_migrations ORDER BY version")?
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let refuse = |message: String| Err(StoreError::Other(message.into()));
    for (version, recorded, success) in &applied {
        let Some(known) = migrations.iter().find(|m| m.version == *version) else {
            return refuse(format!(
                "the database has migration {version}, which this build does not know: it was made by a newer Confidant"
            ));
        };
        if !success {
            return refuse(format!(
                "migration {version} failed part-way earlier; repair the database by hand"
            ));
        }
        if *recorded != checksum(known.sqlite) {
            return refuse(format!("migration {version} was changed after it was applied"));
        }
    }
    for migration in migrations {
        if applied.iter().all(|(version, ..)| *version != migration.version) {
            super::sqlite::apply(connection, migration, &checksum(migration.sqlite))?;
            tracing::info!(
                version = migration.version,
                name = migration.description,
                "applied migration"
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIRST: Migration = Migration {
        version: 1,
        description: "first",
        sqlite: "CREATE TABLE a (x INTEGER);",
        postgres: "",
    };
    const SECOND: Migration = Migration {
        version: 2,
        description: "second",
        sqlite: "ALTER TABLE a ADD COLUMN y TEXT;",
        postgres: "",
    };

    fn versions(connection: &rusqlite::Connection) -> Vec<i64> {
        connection
            .prepare("SELECT version FROM _sqlx_migrations ORDER BY version")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    #[test]
    fn sqlite_applies_each_migration_once_and_records_it_as_sqlx_does() {
        let connection = rusqlite::Connection::open_in_memory().unwrap();
        run_sqlite(&connection, &[FIRST]).unwrap();
        run_sqlite(&connection, &[FIRST, SECOND]).unwrap();
        run_sqlite(&connection, &[FIRST, SECOND]).unwrap();
        assert_eq!(versions(&connection), [1, 2]);
        let recorded: Vec<u8> = connection
            .query_row("SELECT checksum FROM _sqlx_migrations WHERE version = 2", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(recorded, checksum(SECOND.sqlite));
        connection
            .execute("INSERT INTO a (x, y) VALUES (1, 'both columns exist')", [])
            .unwrap();
    }

    #[test]
    fn sqlite_refuses_a_changed_a_failed_or_an_unknown_migration() {
        let connection = rusqlite::Connection::open_in_memory().unwrap();
        run_sqlite(&connection, &[FIRST, SECOND]).unwrap();
        let changed = Migration {
            sqlite: "CREATE TABLE a (x INTEGER, z TEXT);",
            ..FIRST
        };
        let refused = run_sqlite(&connection, &[changed, SECOND]).unwrap_err();
        assert!(refused.to_string().contains("changed"), "{refused}");
        let refused = run_sqlite(&connection, &[FIRST]).unwrap_err();
        assert!(refused.to_string().contains("newer"), "{refused}");
        connection
            .execute("UPDATE _sqlx_migrations SET success = FALSE WHERE version = 2", [])
            .unwrap();
        let refused = run_sqlite(&connection, &[FIRST, SECOND]).unwrap_err();
        assert!(refused.to_string().contains("failed"), "{refused}");
    }

    #[test]
    fn a_failing_migration_leaves_nothing_behind() {
        let connection = rusqlite::Connection::open_in_memory().unwrap();
        let broken = Migration {
            version: 1,
            description: "broken",
            sqlite: "CREATE TABLE b (x INTEGER); THIS IS NOT SQL;",
            postgres: "",
        };
        assert!(run_sqlite(&connection, &[broken]).is_err());
        assert!(versions(&connection).is_empty());
        let tables: i64 = connection
            .query_row("SELECT COUNT(*) FROM sqlite_master WHERE name = 'b'", [], |r| r.get(0))
            .unwrap();
        assert_eq!(tables, 0);
    }
}
