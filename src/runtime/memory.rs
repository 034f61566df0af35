//! Gives a core's freed memory back to the system while the core is idle.
//!
//! mimalloc (the binary's allocator) keeps a thread's freed pages and
//! returns them, after its purge delay, only from inside a later call on
//! that same thread. A core that has just accepted a burst of connections
//! freed hyper's two 8 KiB buffers of every handshake, and then sits idle
//! with thousands of open connections: nothing allocates, so nothing is
//! returned, and the burst stays in the resident set. Asking each core's
//! heap to collect once a second returns it (19,000 idle connections
//! opened 256 at a time: 1,867 → 1,630 B of RSS each, see
//! `loadtest/results/changes.md`). A collect without `force` only purges
//! pages whose purge delay has passed, so a busy core is not made to
//! fault in pages it is about to reuse.

use tokio::time::{interval, MissedTickBehavior};

use crate::limits::MEMORY_RETURN_INTERVAL;

/// Runs on each core for as long as the core runs.
pub(super) async fn return_freed() {
    let mut ticks = interval(MEMORY_RETURN_INTERVAL);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        collect();
    }
}

/// Collects the calling thread's mimalloc heap. With another global
/// allocator (the library's tests use the system's), it collects an empty
/// heap and costs next to nothing.
#[allow(unsafe_code)]
fn collect() {
    // SAFETY: `mi_collect` has no preconditions: it may be called from any
    // thread at any time, touches only mimalloc's own state, and frees
    // nothing that is still allocated.
    unsafe { libmimalloc_sys::mi_collect(false) }
}
