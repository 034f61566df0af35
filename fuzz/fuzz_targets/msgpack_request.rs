//! `Codec::MsgPack.decode_request` (and `decode_server`) on any bytes: no
//! panic, no allocation past the budget of `roomcast_fuzz::check_decoders`,
//! and whatever decodes survives re-encoding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roomcast::protocol::Codec;

#[global_allocator]
static ALLOCATOR: roomcast_fuzz::Counting = roomcast_fuzz::Counting;

fuzz_target!(|data: &[u8]| {
    roomcast_fuzz::check_decoders(Codec::MsgPack, data);
});
