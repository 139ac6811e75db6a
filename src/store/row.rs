//! Rows decoded once for both databases.
//!
//! A row type implements `FromRow` once (usually with the `from_row!` macro), reading columns by
//! name through `Row::get`; `Column` says how each Rust type is read from SQLite (rusqlite) and from
//! PostgreSQL (sqlx). Values are stored alike on both: UUIDs (16-byte blobs on SQLite), `i64`
//! microsecond timestamps, text, bytes, and JSON (text on SQLite).

use std::cell::Cell;

use serde::de::DeserializeOwned;
use sqlx::Row as _;
use sqlx::postgres::PgRow;
use uuid::Uuid;

use super::{StoreError, StoreResult};

/// A JSON column's value, decoded into `T`.
#[derive(Debug, Clone, PartialEq)]
pub struct Json<T>(pub T);

/// One result row, from either database.
pub enum Row<'a> {
    /// With where its result set's columns were found: a name is looked up by comparing it with
    /// each column's (rusqlite, case-insensitively), 9,000 instructions of a list of three
    /// conversations and 23,000 of a conversation with four messages (callgrind).
    Sqlite(&'a rusqlite::Row<'a>, &'a SqliteColumns),
    Postgres(&'a PgRow),
}

/// Where the columns of one SQLite result set were found, by the order they were asked for: the
/// rows of a result set are read alike, so after the first row each name is found by comparing it
/// with the name asked for at the same turn in the row before (no lookup), and in the first row
/// the column after the last one found is tried first (rows are usually read in column order).
#[derive(Default)]
pub struct SqliteColumns {
    found: [Cell<Option<(&'static str, usize)>>; 32],
    turn: Cell<usize>,
}

impl SqliteColumns {
    /// A new row of the result set begins.
    pub fn next_row(&self) {
        self.turn.set(0);
    }

    fn index(&self, row: &rusqlite::Row<'_>, name: &'static str) -> rusqlite::Result<usize> {
        let turn = self.turn.get();
        self.turn.set(turn + 1);
        let slot = self.found.get(turn);
        if let Some((known, index)) = slot.and_then(Cell::get)
            && known == name
        {
            return Ok(index);
        }
        let statement = row.as_ref();
        let guess = turn
            .checked_sub(1)
            .and_then(|before| self.found.get(before))
            .and_then(Cell::get)
            .map_or(0, |(_, index)| index + 1);
        let index = if statement.column_name(guess).is_ok_and(|column| column == name) {
            guess
        } else {
            statement.column_index(name)?
        };
        if let Some(slot) = slot {
            slot.set(Some((name, index)));
        }
        Ok(index)
    }
}

impl Row<'_> {
    /// The column called `name`, as a `T`.
    #[inline]
    pub fn get<T: Column>(&self, name: &'static str) -> StoreResult<T> {
        match self {
            Row::Sqlite(row, columns) => columns
                .index(row, name)
                .and_then(|index| T::from_sqlite(row, index))
                .map_err(|e| decode_error(name, e)),
            Row::Postgres(row) => T::from_postgres(row, name).map_err(|e| decode_error(name, e)),
        }
    }
}

fn decode_error(column: &str, error: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Other(format!("cannot decode column `{column}`: {error}").into())
}

/// A row type: how it is read from a result row of either database.
pub trait FromRow: Sized + Send + 'static {
    fn from_row(row: &Row<'_>) -> StoreResult<Self>;
}

/// Implements `FromRow` for a struct whose fields are named after the columns it reads.
#[macro_export]
macro_rules! from_row {
    ($type:ty { $($field:ident),* $(,)? }) => {
        impl $crate::store::FromRow for $type {
            fn from_row(row: &$crate::store::Row<'_>) -> $crate::store::StoreResult<Self> {
                Ok(Self { $($field: row.get(stringify!($field))?),* })
            }
        }
    };
}

/// A Rust type a column is read as.
pub trait Column: Sized {
    fn from_sqlite(row: &rusqlite::Row<'_>, index: usize) -> rusqlite::Result<Self>;
    fn from_postgres(row: &PgRow, name: &str) -> sqlx::Result<Self>;
}

/// Types both drivers read natively, and their nullable forms.
macro_rules! native {
    ($($type:ty),*) => {$(
        impl Column for $type {
            #[inline]
            fn from_sqlite(row: &rusqlite::Row<'_>, index: usize) -> rusqlite::Result<Self> {
                row.get(index)
            }
            fn from_postgres(row: &PgRow, name: &str) -> sqlx::Result<Self> {
                row.try_get(name)
            }
        }
        impl Column for Option<$type> {
            #[inline]
            fn from_sqlite(row: &rusqlite::Row<'_>, index: usize) -> rusqlite::Result<Self> {
                row.get(index)
            }
            fn from_postgres(row: &PgRow, name: &str) -> sqlx::Result<Self> {
                row.try_get(name)
            }
        }
    )*};
}
native!(bool, i32, i64, f64, String, Vec<u8>);

impl Column for Uuid {
    fn from_sqlite(row: &rusqlite::Row<'_>, index: usize) -> rusqlite::Result<Self> {
        let bytes: [u8; 16] = row.get(index)?;
        Ok(Uuid::from_bytes(bytes))
    }
    fn from_postgres(row: &PgRow, name: &str) -> sqlx::Result<Self> {
        row.try_get(name)
    }
}

impl Column for Option<Uuid> {
    fn from_sqlite(row: &rusqlite::Row<'_>, index: usize) -> rusqlite::Result<Self> {
        let bytes: Option<[u8; 16]> = row.get(index)?;
        Ok(bytes.map(Uuid::from_bytes))
    }
    fn from_postgres(row: &PgRow, name: &str) -> sqlx::Result<Self> {
        row.try_get(name)
    }
}

impl<T: DeserializeOwned> Column for Json<T> {
    fn from_sqlite(row: &rusqlite::Row<'_>, index: usize) -> rusqlite::Result<Self> {
        let text: String = row.get(index)?;
        parse_json(index, &text)
    }
    fn from_postgres(row: &PgRow, name: &str) -> sqlx::Result<Self> {
        let value: sqlx::types::Json<T> = row.try_get(name)?;
        Ok(Json(value.0))
    }
}

impl<T: DeserializeOwned> Column for Option<Json<T>> {
    fn from_sqlite(row: &rusqlite::Row<'_>, index: usize) -> rusqlite::Result<Self> {
        let text: Option<String> = row.get(index)?;
        text.as_deref().map(|text| parse_json(index, text)).transpose()
    }
    fn from_postgres(row: &PgRow, name: &str) -> sqlx::Result<Self> {
        let value: Option<sqlx::types::Json<T>> = row.try_get(name)?;
        Ok(value.map(|v| Json(v.0)))
    }
}

fn parse_json<T: DeserializeOwned>(index: usize, text: &str) -> rusqlite::Result<Json<T>> {
    serde_json::from_str(text)
        .map(Json)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(index, rusqlite::types::Type::Text, Box::new(e)))
}

/// `SELECT COUNT(*) AS n`.
#[derive(Debug, Clone, Copy)]
pub struct Count {
    pub n: i64,
}
from_row!(Count { n });

/// Defines an enum stored as text, with `as_str`, `parse` and its `Column` and `sea_query::Value`
/// conversions.
#[macro_export]
macro_rules! text_enum {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$doc:meta])* $variant:ident = $text:literal),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$doc])* $variant),* }

        impl $name {
            pub const fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),* }
            }

            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some(Self::$variant),)* _ => None }
            }
        }

        impl $crate::store::Column for $name {
            fn from_sqlite(row: &rusqlite::Row<'_>, index: usize) -> rusqlite::Result<Self> {
                $crate::store::row::text_from_sqlite(row, index, Self::parse)
            }
            fn from_postgres(row: &sqlx::postgres::PgRow, name: &str) -> sqlx::Result<Self> {
                $crate::store::row::text_from_postgres(row, name, Self::parse)
            }
        }

        impl From<$name> for sea_query::Value {
            fn from(value: $name) -> Self {
                value.as_str().into()
            }
        }
    };
}

#[derive(Debug, thiserror::Error)]
#[error("unexpected value `{0}`")]
struct UnknownText(String);

#[doc(hidden)]
pub fn text_from_sqlite<T>(row: &rusqlite::Row<'_>, index: usize, parse: fn(&str) -> Option<T>) -> rusqlite::Result<T> {
    let text: String = row.get(index)?;
    parse(&text).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(index, rusqlite::types::Type::Text, Box::new(UnknownText(text)))
    })
}

#[doc(hidden)]
pub fn text_from_postgres<T>(row: &PgRow, name: &str, parse: fn(&str) -> Option<T>) -> sqlx::Result<T> {
    let text: String = row.try_get(name)?;
    parse(&text).ok_or_else(|| sqlx::Error::Decode(Box::new(UnknownText(text))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_columns_are_found_by_name_in_any_order() {
        let connection = rusqlite::Connection::open_in_memory().unwrap();
        let mut statement = connection
            .prepare("SELECT 1 AS a, 'two' AS b, 3 AS c UNION ALL SELECT 4, 'five', 6")
            .unwrap();
        let mut rows = statement.query([]).unwrap();
        let columns = SqliteColumns::default();
        columns.next_row();
        let row = Row::Sqlite(rows.next().unwrap().unwrap(), &columns);
        // In order (each guess right), then out of order, then as rusqlite matches names (ASCII
        // case-insensitively), then a column that is not there.
        assert_eq!(row.get::<i64>("a").unwrap(), 1);
        assert_eq!(row.get::<String>("b").unwrap(), "two");
        assert_eq!(row.get::<i64>("c").unwrap(), 3);
        assert_eq!(row.get::<i64>("a").unwrap(), 1);
        assert_eq!(row.get::<i64>("C").unwrap(), 3);
        assert_eq!(row.get::<String>("B").unwrap(), "two");
        let missing = row.get::<i64>("d").unwrap_err().to_string();
        assert!(missing.contains("`d`"), "{missing}");
        // The next row, read in the same order (found as before), then in another order (the
        // names differ from the first row's at the same turns, so they are looked up again).
        columns.next_row();
        let row = Row::Sqlite(rows.next().unwrap().unwrap(), &columns);
        assert_eq!(row.get::<i64>("a").unwrap(), 4);
        assert_eq!(row.get::<String>("b").unwrap(), "five");
        assert_eq!(row.get::<i64>("c").unwrap(), 6);
        assert_eq!(row.get::<i64>("c").unwrap(), 6);
        assert_eq!(row.get::<String>("b").unwrap(), "five");
        assert_eq!(row.get::<i64>("a").unwrap(), 4);
        columns.next_row();
        assert_eq!(row.get::<String>("b").unwrap(), "five");
        assert_eq!(row.get::<i64>("a").unwrap(), 4);
    }
}
