//! Switchyard: an L7 reverse proxy that splits traffic between versions of a service by weight,
//! rule or cohort, mirrors it to a shadow version, and aborts a bad canary by itself.
//!
//! The folders are the architecture; dependencies point one way (`tests/layout.rs` checks it):
//! `cli` → `app` → `admin` → `control` → `fleet` → `release`, `shadow` → `data` → `state`,
//! `route`, `metrics` → `config`.

pub mod admin;
pub mod app;
pub mod cli;
pub mod config;
pub mod control;
pub mod data;
pub mod fleet;
pub mod metrics;
pub mod release;
pub mod route;
pub mod shadow;
pub mod state;
