//! The writer's guarantees: group commit, rollback alone, no stalls, durability order.

use sea_query::{Alias, Expr, ExprTrait, Query};

use super::*;
use crate::store::Statement;

struct Name {
    name: String,
}
crate::from_row!(Name { name });

fn database_with(maintenance: &'static [&'static str]) -> (tempfile::TempDir, Sqlite) {
    database_locked(maintenance, Locking::Shared)
}

fn database_locked(maintenance: &'static [&'static str], locking: Locking) -> (tempfile::TempDir, Sqlite) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("lite.db");
    let setup = Connection::open(&path).expect("create");
    setup
        .execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);")
        .expect("schema");
    drop(setup);
    let sqlite = Sqlite::open(&path, 2, locking, maintenance).expect("open");
    (dir, sqlite)
}

fn database() -> (tempfile::TempDir, Sqlite) {
    database_with(&[])
}

fn insert(id: i64, name: &str) -> sea_query::InsertStatement {
    Query::insert()
        .into_table(Alias::new("t"))
        .columns([Alias::new("id"), Alias::new("name")])
        .values_panic([id.into(), name.into()])
        .to_owned()
}

/// Inserts the rows in one transaction.
async fn write(sqlite: &Sqlite, rows: Vec<(i64, String)>) -> StoreResult<u64> {
    sqlite
        .transaction(move |tx| {
            Box::pin(async move {
                let mut written = 0;
                for (id, name) in &rows {
                    written += tx.execute(&insert(*id, name)).await?;
                }
                Ok(written)
            })
        })
        .await
}

fn names(sqlite: &Sqlite) -> Vec<String> {
    let query = Query::select()
        .column(Alias::new("name"))
        .from(Alias::new("t"))
        .order_by(Alias::new("id"), sea_query::Order::Asc)
        .to_owned();
    let (sql, values) = query.build_for(sea_query::SqliteQueryBuilder);
    sqlite
        .read(|c| rows::<Name>(c, &sql, values))
        .expect("read")
        .into_iter()
        .map(|n| n.name)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_transaction_is_rolled_back_alone_and_the_others_in_its_group_commit() {
    let (_dir, sqlite) = database();
    let sqlite = Arc::new(sqlite);
    write(&sqlite, vec![(0, "name-0".into())]).await.expect("first");
    // Many transactions at once so the writer takes them in groups; every tenth one collides
    // with the first name and must fail alone, also when it ran half-way (two rows, one taken).
    let writes: Vec<_> = (1..200i64)
        .map(|i| {
            let sqlite = sqlite.clone();
            tokio::spawn(async move {
                let rows = if i % 10 == 9 {
                    vec![(1000 + i, format!("extra-{i}")), (2000 + i, "name-0".to_owned())]
                } else {
                    vec![(i, format!("name-{i}"))]
                };
                write(&sqlite, rows).await
            })
        })
        .collect();
    let mut failed = Vec::new();
    for (i, write) in (1..).zip(writes) {
        match write.await.expect("task") {
            Ok(n) => assert_eq!(n, 1),
            Err(StoreError::Conflict(_)) => failed.push(i),
            Err(other) => panic!("write {i}: {other}"),
        }
    }
    assert_eq!(failed, (1..200).filter(|i| i % 10 == 9).collect::<Vec<_>>());
    let stored = names(&sqlite);
    assert_eq!(stored.len(), 180);
    assert!(stored.iter().all(|n| n.starts_with("name-")), "{stored:?}");
}

#[tokio::test]
async fn a_transaction_that_returns_an_error_is_rolled_back() {
    let (_dir, sqlite) = database();
    let outcome: StoreResult<()> = sqlite
        .transaction(|tx| {
            Box::pin(async move {
                tx.execute(&insert(1, "written, then undone")).await?;
                Err(StoreError::NotFound)
            })
        })
        .await;
    assert!(matches!(outcome, Err(StoreError::NotFound)), "{outcome:?}");
    assert!(names(&sqlite).is_empty());
}

#[tokio::test]
async fn a_transaction_that_awaits_anything_but_the_database_fails_instead_of_stalling_the_writer() {
    let (_dir, sqlite) = database();
    let outcome: StoreResult<()> = sqlite
        .transaction(|tx| {
            Box::pin(async move {
                tx.execute(&insert(1, "before the wait")).await?;
                tokio::task::yield_now().await;
                Ok(())
            })
        })
        .await;
    assert!(matches!(outcome, Err(StoreError::Other(_))), "{outcome:?}");
    write(&sqlite, vec![(2, "after".into())])
        .await
        .expect("writer still running");
    assert_eq!(names(&sqlite), ["after"]);
}

#[tokio::test]
async fn a_panicking_transaction_fails_alone_and_the_writer_keeps_going() {
    let (_dir, sqlite) = database();
    let failed: StoreResult<()> = sqlite
        .transaction(|tx| {
            Box::pin(async move {
                tx.execute(&insert(1, "before the panic")).await?;
                panic!("a bug in a write");
            })
        })
        .await;
    assert!(matches!(failed, Err(StoreError::Other(_))), "{failed:?}");
    write(&sqlite, vec![(2, "after".into())])
        .await
        .expect("writer still running");
    assert_eq!(names(&sqlite), ["after"]);
}

#[tokio::test]
async fn maintenance_runs_and_the_checkpointer_copies_committed_writes_into_the_database_file() {
    let (dir, sqlite) = database_with(&["INSERT OR IGNORE INTO t (id, name) VALUES (-1, 'maintained')"]);
    let file = dir.path().join("lite.db");
    let before = std::fs::metadata(&file).expect("file").len();
    // 2 KiB rows, written for longer than the maintenance interval.
    let started = Instant::now();
    let mut i = 0;
    while i < 128 || started.elapsed() < MAINTAIN_EVERY + Duration::from_millis(100) {
        write(&sqlite, vec![(i, format!("{i:0>2048}"))]).await.expect("write");
        i += 1;
    }
    // The writer never checkpoints itself: only the checkpointer grows the main file.
    let mut grown = 0;
    for _ in 0..100 {
        grown = std::fs::metadata(&file).expect("file").len() - before;
        if grown > 200 * 1024 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(grown > 200 * 1024, "the database file grew by {grown} bytes only");
    assert!(names(&sqlite).contains(&"maintained".to_owned()));
}

#[tokio::test]
async fn a_write_is_visible_to_other_connections_once_answered_and_none_is_taken_after_close() {
    let (dir, sqlite) = database();
    write(&sqlite, vec![(7, "seven".into())]).await.expect("insert");
    let update = Query::update()
        .table(Alias::new("t"))
        .value(Alias::new("name"), "renamed")
        .and_where(Expr::col(Alias::new("id")).eq(7))
        .to_owned();
    let touched = sqlite
        .transaction(move |tx| Box::pin(async move { tx.execute(&update).await }))
        .await
        .expect("update");
    assert_eq!(touched, 1);
    // A connection that is not the engine's sees the committed row.
    let other = Connection::open(dir.path().join("lite.db")).expect("open");
    let name: String = other
        .query_row("SELECT name FROM t WHERE id = 7", [], |r| r.get(0))
        .expect("row");
    assert_eq!(name, "renamed");
    sqlite.close();
    let refused = write(&sqlite, vec![(8, "late".into())]).await;
    assert!(matches!(refused, Err(StoreError::Unavailable(_))), "{refused:?}");
}

#[test]
fn a_cached_statement_is_not_planned_again_when_its_parameters_change() {
    // `LIMIT ?` and an `= ?` on a table with a partial index are what made SQLite re-plan a cached
    // statement on every new binding (the planner looked at the bound values).
    let (dir, _sqlite) = database();
    let connection = connect(&dir.path().join("lite.db"), Mode::ReadWrite, Locking::Shared).expect("connect");
    connection
        .execute_batch("CREATE UNIQUE INDEX t_partial ON t (name) WHERE name IS NOT NULL; INSERT INTO t VALUES (1, 'a'), (2, 'b');")
        .expect("schema");
    let sql = "SELECT id FROM t WHERE name = ? ORDER BY id LIMIT ?";
    for (name, limit) in [("a", 1), ("b", 2), ("a", 3), ("b", 1)] {
        let mut statement = connection.prepare_cached(sql).expect("prepare");
        let ids: Vec<i64> = statement
            .query_map(rusqlite::params![name, limit], |row| row.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert_eq!(ids.len(), 1);
        assert_eq!(
            statement.get_status(rusqlite::StatementStatus::RePrepare),
            0,
            "the statement was planned again for new parameters"
        );
    }
}

/// What `another_process` is run for: `read PATH` or `hold PATH`.
const OTHER_PROCESS: &str = "CONFIDANT_TEST_OTHER_PROCESS";

/// Another process using the file (file locks are per process, so only another process sees
/// them), run by the tests below. `read`: exits 0 when it read the table and 3 when the database
/// was locked. `hold`: keeps the file open (as a `sqlite3` shell would) until its input closes.
#[test]
#[ignore = "run as a child process by the locking tests"]
fn another_process() {
    let Ok(task) = std::env::var(OTHER_PROCESS) else { return };
    let (what, path) = task.split_once(' ').expect("`read PATH` or `hold PATH`");
    let connection = Connection::open(path).expect("open");
    connection.busy_timeout(Duration::ZERO).expect("no waiting");
    let read = connection.query_row("SELECT count(*) FROM t", [], |row| row.get::<_, i64>(0));
    match (what, read) {
        ("read", Ok(_)) => std::process::exit(0),
        ("read", Err(error)) if is_busy(&error) => std::process::exit(3),
        ("hold", Ok(_)) => {
            println!("holding");
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new()).expect("stdin");
        }
        (_, outcome) => panic!("{what}: {outcome:?}"),
    }
}

fn another_process_command(what: &str, path: &Path) -> std::process::Command {
    let mut command = std::process::Command::new(std::env::current_exe().expect("test binary"));
    command
        .args([
            "--exact",
            "store::sqlite::tests::another_process",
            "--ignored",
            "--nocapture",
        ])
        .env(OTHER_PROCESS, format!("{what} {}", path.display()));
    command
}

fn another_process_can_read(path: &Path) -> bool {
    let child = another_process_command("read", path)
        .output()
        .expect("run the test binary");
    match child.status.code() {
        Some(0) => true,
        Some(3) => false,
        _ => panic!("the other process failed: {}", String::from_utf8_lossy(&child.stderr)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_locking_keeps_other_processes_out_until_it_closes() {
    for locking in [Locking::Shared, Locking::Exclusive] {
        let (dir, sqlite) = database_locked(&[], locking);
        let path = dir.path().join("lite.db");
        let sqlite = Arc::new(sqlite);
        // Writes, the checkpointer and readers on both workers, all inside this process.
        let writes: Vec<_> = (0..50i64)
            .map(|i| {
                let sqlite = sqlite.clone();
                tokio::spawn(async move {
                    write(&sqlite, vec![(i, format!("name-{i}"))]).await.expect("write");
                    names(&sqlite).len()
                })
            })
            .collect();
        for write in writes {
            assert!(write.await.expect("task") >= 1);
        }
        assert_eq!(names(&sqlite).len(), 50, "{locking:?}");
        // Readers only read, in either mode.
        let refused = sqlite.read(|c| Ok(c.execute("INSERT INTO t (id, name) VALUES (99, 'no')", [])));
        assert!(refused.expect("read").is_err(), "{locking:?}: a reader wrote");
        assert_eq!(
            another_process_can_read(&path),
            locking == Locking::Shared,
            "{locking:?}"
        );
        sqlite.close();
        assert!(
            another_process_can_read(&path),
            "{locking:?}: still locked after closing"
        );
    }
}

#[test]
fn exclusive_locking_does_not_start_while_another_process_has_the_file_open() {
    let (dir, sqlite) = database();
    let path = dir.path().join("lite.db");
    sqlite.close();
    let mut holder = another_process_command("hold", &path)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run the test binary");
    let mut said = String::new();
    let mut stdout = std::io::BufReader::new(holder.stdout.take().expect("stdout"));
    while !said.contains("holding") {
        let read = std::io::BufRead::read_line(&mut stdout, &mut said).expect("child output");
        assert!(read > 0, "the other process ended: {said}");
    }
    // SQLite waits out its busy timeout (a second instance that is stopping gets that long).
    let refused = Sqlite::open(&path, 2, Locking::Exclusive, &[]).map(|_| ());
    drop(holder.stdin.take());
    holder.wait().expect("child exits");
    let Err(StoreError::Unavailable(reason)) = refused else {
        panic!("opened: {refused:?}")
    };
    assert!(
        reason.to_string().contains("another process has the database open"),
        "{reason}"
    );
    // Once it is gone, the service starts.
    Sqlite::open(&path, 2, Locking::Exclusive, &[]).expect("open").close();
}
