//! Worker-local pools (`run --reuse-port`, [`crate::data::workers`]): on a worker thread, a
//! slot's idle connections are kept in that thread's own map rather than in the slot's shared
//! stack. A connection is then registered with, used by and closed on one worker's runtime (its
//! readiness never crosses threads), and a checkout or a check-in takes no lock. The map holds a
//! weak reference to each slot, which also keeps the slot's address from being reused while its
//! entry exists; a reaper on each worker closes what has idled past the timeout and forgets the
//! slots no snapshot uses any more.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Weak};

use tokio::time::Instant;

use super::{expired, pick, push, Idle, Pool, Slot, REAP_EVERY};
use crate::data::upstream::h1::Conn;

thread_local! {
    /// This worker's idle connections, by slot address.
    static POOLS: RefCell<HashMap<usize, Local>> = RefCell::default();
}

struct Local {
    slot: Weak<Pool>,
    /// Oldest first.
    idle: Vec<Idle>,
}

fn key(slot: &Slot) -> usize {
    Arc::as_ptr(slot) as usize
}

/// The most recently used of this worker's idle connections to `slot` that is within the idle
/// timeout and still open ([`pick`] on this worker's stack of the slot).
pub(super) fn checkout(slot: &Slot) -> Option<Box<Conn>> {
    let key = key(slot);
    let pop = || POOLS.with_borrow_mut(|pools| pools.get_mut(&key)?.idle.pop());
    let clear = || {
        let expired = POOLS.with_borrow_mut(|pools| pools.remove(&key));
        drop(expired);
    };
    pick(slot.idle_timeout, pop, clear)
}

/// Keeps `idle` in this worker's pool of `slot`, closing the oldest beyond [`super::MAX_IDLE`].
pub(super) fn checkin(slot: &Slot, idle: Idle) {
    let oldest = POOLS.with_borrow_mut(|pools| {
        let local = pools.entry(key(slot)).or_insert_with(|| Local {
            slot: Arc::downgrade(slot),
            idle: Vec::new(),
        });
        push(&mut local.idle, idle)
    });
    drop(oldest);
}

/// Once a second, on the worker it runs on: closes the connections idle past their slot's
/// timeout, and those of slots no snapshot holds. Runs until the worker's runtime ends.
pub async fn reap() {
    let mut tick = tokio::time::interval(REAP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = Instant::now();
        POOLS.with_borrow_mut(|pools| {
            pools.retain(|_, local| {
                let Some(slot) = local.slot.upgrade() else {
                    return false;
                };
                let expired = expired(&local.idle, now, slot.idle_timeout);
                local.idle.drain(..expired);
                true
            });
        });
    }
}

/// Closes every idle connection of this worker, while its runtime is still there to deregister
/// them.
pub fn close_all() {
    drop(POOLS.take());
}
