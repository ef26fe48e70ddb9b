//! Integration tests: real PostgreSQL, real HTTP, real processes.
//! One crate (one link, one PostgreSQL server); each test gets its own database.

mod api;
mod auth;
mod batch;
mod batches;
mod bench;
mod cancel;
mod cli;
mod control;
mod delays;
mod deploy;
mod drills;
mod engine;
mod fuzz;
mod handlers;
mod harness;
mod keys;
mod layout;
mod limits;
mod maps;
mod openapi;
mod priorities;
mod queues;
mod recover;
mod regions;
mod retention;
mod retry;
mod roles;
mod runtime;
mod schedules;
mod serving;
mod store;
mod tls;
mod tokens;
mod upgrade;
mod wire;
