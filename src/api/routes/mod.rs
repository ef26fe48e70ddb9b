//! The handlers, by concern: workflows (submit, read, list, cancel),
//! control (pause, resume, signals), queues, schedules, regions, admin (drills), the dashboard (ui), and health (probes, info, metrics, fallback).
//! Each answers with [`crate::api::wire`] types.

pub mod admin;
pub mod common;
pub mod control;
pub mod health;
pub mod queues;
pub mod regions;
pub mod schedules;
pub mod ui;
pub mod workflows;
