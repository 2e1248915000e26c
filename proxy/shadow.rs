//! The dark launch, off the data path: the `mirror` dispatcher drains the bounded queue the data
//! path's tap fills, sends each copy to the shadow version under a semaphore, and hands both
//! answers to the `compare`-ison; `report` aggregates the differences per route and path.
//!
//! A copy never touches the live response: the data path only `try_send`s, and everything here
//! runs in tasks of its own.

pub mod compare;
pub mod mirror;
pub mod report;
