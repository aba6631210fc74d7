//! Integration tests of the policy lookup service: real sockets, real TLS,
//! real enrollment, and every behavioural test against both SQLite and
//! PostgreSQL (`source scripts/postgres.sh` exports `PALISADE_TEST_POSTGRES`;
//! without it the PostgreSQL variants fail).
mod support;
mod webdriver;

mod access;
mod admin;
mod approvals;
mod config;
mod console;
mod enroll;
mod eventrules;
mod events;
mod inventory;
mod lookup;
mod malformed;
mod migrate;
mod openapi;
mod publishers;
mod push;
mod removed;
mod rules;
mod signin;
