//! Switchyard: an L7 reverse proxy that splits traffic between versions of a service by weight,
//! rule or cohort, and forwards it with streaming bodies and pooled upstream connections.
//!
//! The data path is `server` (accept) -> `handler` (per request) -> `route::decide` (pure) ->
//! `upstream` (pooled client). The `snapshot` is the immutable routing state each request loads
//! once; `config` is how it is described and validated.

pub mod admin;
pub mod analysis;
pub mod app;
pub mod body;
pub mod compare;
pub mod config;
pub mod control;
pub mod ctl;
pub mod demo;
pub mod error;
pub mod handler;
pub mod headers;
pub mod health;
pub mod metrics;
pub mod mirror;
pub mod ratelimit;
pub mod record;
pub mod route;
pub mod server;
pub mod snapshot;
pub mod tls;
pub mod upstream;
pub mod webhook;
