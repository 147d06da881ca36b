//! Mầm server: the `mam` binary's library.
//!
//! Phones push edits and pull merged records over `POST /v1/sync` ([`api`], [`sync`]); the
//! merge itself is the `sync-protocol` crate. Storage sits behind one trait ([`store`]) with a
//! SQLite and a PostgreSQL implementation. [`cli`] is the command line; [`bench`] measures.
#![forbid(unsafe_code)]

pub mod accounts;
pub mod api;
pub mod app;
pub mod attachments;
pub mod auth;
pub mod backup;
pub mod bench;
pub mod cli;
pub mod config;
pub mod export;
pub mod forms;
pub mod indicators;
pub mod limits;
pub mod listen;
pub mod metrics;
pub mod objects;
pub mod openrosa;
pub mod phone;
pub mod query;
pub mod report;
pub mod respond;
pub mod schemas;
pub mod state;
pub mod store;
pub mod sync;
pub mod units;
pub mod web;
pub mod webdriver;
pub mod xlsform;

/// Unix time in milliseconds: how every timestamp is stored.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Today's date in Việt Nam (UTC+7, no daylight saving), `YYYY-MM-DD`: what "not in the
/// future" and "valid on" mean for a collaborator.
pub fn today() -> String {
    sync_protocol::expr::date_of_day((now_ms() + 7 * 3_600_000).div_euclid(86_400_000))
}
