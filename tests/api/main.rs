//! Integration tests: the real service on a real socket, on SQLite and on PostgreSQL.
//!
//! Each test gets its own database (a fresh SQLite file, or a fresh PostgreSQL database), so tests
//! run in parallel. `db_tests!` turns each `async fn(TestApp)` into a `sqlite` and a `postgres` test.

mod harness;

mod admin_plane;
mod browsers;
mod cli;
mod clients;
mod completions;
mod data_plane;
mod durability;
mod edge;
mod egress;
mod errors;
mod fake_provider;
mod isolation;
mod lifecycle;
mod live;
mod mcp;
mod operator_auth;
mod retention;
mod scale_out;
mod storage;
mod tool_turns;
mod tools;
mod user_tokens;
mod webhooks;
