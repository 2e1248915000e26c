//! Release safety, off the data path: the rollout `analysis` (windows of the per-version counts
//! that `/metrics` exports, judged by statistical tests), active `health` checks that mark
//! endpoints down, and the `webhook` that tells release tooling about aborts and promotions.
//!
//! This module decides; it never writes the snapshot. Its decisions leave as messages to the
//! control task, which applies, persists and installs them.

pub mod analysis;
pub mod health;
pub mod webhook;
