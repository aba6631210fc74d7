//! Palisade's policy lookup service.
//!
//! One or more stateless replicas over one database. Each holds nothing that
//! another replica could not rebuild from the database: organizations,
//! policies, computers, the file catalog, file states, the change log, events
//! and the service CA all live in SQL (embedded SQLite by default, PostgreSQL
//! for fleets; see [`db`](crate::Db) for the schema).
//!
//! # A replica at run time
//!
//! | what | where | |
//! |------|-------|-|
//! | TLS listener | `listen` (default `127.0.0.1:8443`) | agent API (`/agent/v1/*`, mutual TLS) and admin API (`/api/v1/*`, bearer tokens) on one port; HTTP/1.1 and h2 by ALPN |
//! | accept loop | one tokio task | TLS handshake (tokio-rustls, ring), then hyper-util `serve_connection` per connection, in its own task; the client certificate's SHA-256 is put into every request's extensions |
//! | change feed | one tokio task | tails the `changes` table and broadcasts batches to this replica's agent streams; also prunes the change log |
//! | PostgreSQL listener | one tokio task (PostgreSQL only) | `LISTEN palisade_changes, palisade_events`; wakes the feed and event long polls |
//! | catalog recorder | one tokio task | writes lookup / event sightings (bounded queue, drop-and-count when full); package/publisher facts arrive with inventory (scan, or facts the agent established at a decision) and are written by that request |
//! | event rules | one tokio task | evaluates event rules on stored events and on hashes seen on a computer for the first time; runs their actions; reads triggers from the database past per-organization cursors, one bounded batch per organization in turn; skips (and counts) only backlogs too large or too old |
//! | alerts | one dispatcher task, one worker per receiver | webhook and syslog deliveries of event rules (bounded queues; a hung receiver delays only its own alerts) |
//! | agent streams | one tokio task each, at most four per computer (a fifth closes the oldest) | filter feed batches for one computer, heartbeats |
//! | certificate renewal | one tokio task | sleeps until two thirds of the server certificate's lifetime (60 days), issues a new one and swaps it in for new handshakes |
//! | liveness | one tokio task | while streams are open, every heartbeat interval pushes this replica's own `replicas` row ahead (one row, whatever the number of agents) and closes the streams of its computers found revoked |
//! | database pool | sqlx `Any` pool | SQLite: WAL, `busy_timeout`, `BEGIN IMMEDIATE` writes; PostgreSQL: plain pool |
//!
//! Everything runs on the caller's tokio runtime; nothing blocks it.
//!
//! # How push works
//!
//! Every write that can change an answer (a file state, a reputation rating,
//! a policy's levels, a rule, a bundle, a publisher's state or trust, a
//! computer's policy or revocation) appends rows to `changes` in the same
//! transaction; a row's id is a *revision*. A `policy` row without a policy
//! (rules, bundles or publishers that apply to every policy) concerns every
//! computer of the organization. Ids come from a counter row
//! updated under a lock held to commit, so they commit in order and a
//! reader tailing by id never skips one. On commit the writing replica wakes
//! its own change feed at once and, on PostgreSQL, the transaction's
//! `NOTIFY palisade_changes` wakes every other replica's feed; each feed
//! also polls every 250 ms (which is how replicas over one SQLite file, or
//! a replica that missed a notification, catch up). A feed reads the new rows
//! and broadcasts them; each `GET /agent/v1/stream` task keeps the rows that
//! concern its computer (global, its policy, itself) and writes one
//! `Changed` NDJSON line per batch with the hashes, or `reset` when a batch
//! is too large, the stream fell behind, or many files changed at once
//! (bulk approvals log one "many files" row). An agent that reconnects asks
//! `GET /agent/v1/changes?since=R`; `R` older than the retained log, or
//! newer than the current revision, yields `reset`.
//!
//! An answer stamped with revision `R` (a lookup, a stream's `Hello`) is
//! read after `R` and with the computer's policy read then too, not the one
//! read when the request was authenticated: a move committed in between is
//! at or before `R`, so the agent would never learn of it.
//!
//! A computer is *connected* while it has a `connections` row through a
//! replica whose `replicas` row is alive: the row is written when its first
//! stream on that replica opens and deleted when the last one closes, and
//! each replica keeps only its own row alive (see `src/liveness.rs`).
//!
//! # The CA
//!
//! The service runs its own certificate authority. Its certificate **and
//! private key are stored in the database** (`ca` table), created by the
//! first replica to start (insert-if-absent, so concurrent first starts agree
//! on one CA). This is a deliberate choice for stateless replicas: any
//! replica can sign an enrolling agent's CSR and every replica trusts every
//! agent, with no key distribution step. The cost: whoever can read the
//! database can mint agent certificates, so the database must be protected
//! like the key (it already holds every policy decision). Each replica issues
//! itself a fresh server certificate signed by the CA at start, for
//! `tls_names`, valid 90 days, and a new one (fresh key) at two thirds of
//! each one's lifetime while it runs (`src/tls.rs`): handshakes get the
//! newest, so uptime never outlasts the certificate. Agents pin the CA through the fingerprint embedded in their
//! enrollment token (`GET /agent/v1/ca` serves the certificate).
//!
//! Client certificates are optional at the TLS layer (enrollment and the
//! admin API have none); every agent endpoint but `enroll` and `ca` requires
//! one whose fingerprint belongs to a non-revoked computer, checked against
//! the database on every request.
//!
//! # Entry points
//!
//! * [`ServerConfig`] → [`Server::bind`] → [`Server::serve`]: a replica.
//! * [`Db::connect`], [`bootstrap`], [`create_admin_token`],
//!   [`create_enroll_token`], [`create_policy`], [`set_policy_levels`],
//!   [`ca_certificate`], [`prune_changes`], [`prune_events`],
//!   [`prune_deleted_instances`]: administration without a running
//!   server (`palisade server init`, `palisade up`).
//!
//! # The approval model
//!
//! Rules of every kind are stored once (`rules`, see `src/rules.rs` for
//! storage, the rule set each agent receives, its cache and the built-in
//! bundles) and evaluated by `palisade_core::rules::evaluate` — by agents
//! for every load, and by the service to explain decisions in
//! `GET /api/v1/files/{sha256}`. Event rules are the exception: the service
//! evaluates them (`src/eventrules.rs`) and sends their alerts
//! (`src/notify.rs`).
//!
//! Errors: library functions return [`Error`]; how errors become HTTP
//! answers (status codes, the JSON `ErrorBody`, field names) is stated once,
//! in the documentation of the `errors` module (`src/errors.rs`).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod audit;
#[doc(hidden)]
pub mod bench;
mod ca;
mod catalog;
mod config;
mod db;
mod egress;
mod errors;
mod eventrules;
mod feed;
mod http;
mod liveness;
mod notify;
mod ops;
mod rules;
mod server;
mod store;
mod tls;

pub use config::{ConfigError, ServerConfig};
pub use db::{Db, DbKind};
pub use errors::{Error, ErrorKind};
pub use ops::{
    bootstrap, ca_certificate, create_admin_token, create_enroll_token, create_policy,
    prune_changes, prune_deleted_instances, prune_events, set_policy_levels, Bootstrap,
    CaCertificate, DEFAULT_POLICY,
};
pub use server::Server;
