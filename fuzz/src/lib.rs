//! What the fuzz targets share: an allocator that counts, so every decode
//! is held to a budget in proportion to its input, and the checks each
//! decoder target makes on one input.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use roomcast::protocol::{Codec, ServerEvent};

/// The system allocator, counting the bytes live now and their peak.
pub struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(n: usize) {
    let live = LIVE.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

fn shrank(n: usize) {
    LIVE.fetch_sub(n, Ordering::Relaxed);
}

// SAFETY: every call is passed to `System` unchanged; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = System.alloc(layout);
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let ptr = System.alloc_zeroed(layout);
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = System.realloc(ptr, layout, new_size);
        if !new.is_null() {
            // Old and new may both be live while the bytes are copied.
            grew(new_size);
            shrank(layout.size());
        }
        new
    }
}

/// Runs `f` and returns its result with the most bytes it had allocated at
/// once (counted by [`Counting`], which the target must install). Counts
/// every thread: call it where no other thread allocates.
pub fn peak_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let result = f();
    let peak = PEAK.load(Ordering::Relaxed).saturating_sub(base);
    (result, peak)
}

/// What decoding a client envelope of `len` bytes may allocate at its peak
/// (the same budget as tests/decoder_properties.rs).
pub fn request_budget(len: usize) -> usize {
    8 * len + 64 * 1024
}

/// What decoding a server envelope (client side) may allocate: each empty
/// list element of one or two bytes becomes structs of up to about 136
/// bytes (the same budget as tests/decoder_properties.rs).
pub fn server_budget(len: usize) -> usize {
    256 * len + 64 * 1024
}

/// Everything a decoder target checks on one input: neither decoder
/// panics, each stays within its allocation budget, and what decodes
/// re-encodes to bytes that decode to the same value.
pub fn check_decoders(codec: Codec, data: &[u8]) {
    let bytes = Bytes::copy_from_slice(data);

    let (request, peak) = peak_allocation(|| codec.decode_request(&bytes));
    let budget = request_budget(data.len());
    assert!(
        peak <= budget,
        "{codec}: decode_request of {} bytes allocated {peak} bytes at its peak (budget {budget})",
        data.len()
    );
    if let Ok(request) = request {
        let again = Bytes::from(codec.encode_request(&request));
        assert_eq!(
            codec.decode_request(&again),
            Ok(request),
            "{codec}: a decoded request does not survive re-encoding"
        );
    }

    let (event, peak) = peak_allocation(|| codec.decode_server(&bytes));
    let budget = server_budget(data.len());
    assert!(
        peak <= budget,
        "{codec}: decode_server of {} bytes allocated {peak} bytes at its peak (budget {budget})",
        data.len()
    );
    if let Ok(ServerEvent::Reply(reply)) = event {
        let mut again = Vec::new();
        codec.encode_reply(&reply, &mut again);
        assert_eq!(
            codec.decode_server(&Bytes::from(again)),
            Ok(ServerEvent::Reply(reply)),
            "{codec}: a decoded reply does not survive re-encoding"
        );
    }
}
