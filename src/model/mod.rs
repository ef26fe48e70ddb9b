//! Pure domain types shared by every layer: workflow specs with DAG
//! validation and pgmq queue naming, consistency tokens and LSNs. Nothing
//! here does I/O.

pub mod schedule;
pub mod token;
pub mod workflow;
