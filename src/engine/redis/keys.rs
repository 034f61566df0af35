//! Where a room lives in Redis: its partition, the hash tag every key and
//! the channel of the room carry (so one script call touches one slot, in a
//! Redis Cluster as in a standalone Redis), and the names themselves.
//!
//! Rooms are spread over [`REDIS_PARTITIONS`] partitions by a jump hash of
//! the name. Each partition's tag is chosen so that its slot falls in the
//! partition's own band of 16384 / 128 slots: bare numbers as tags
//! (`{0}`, `{1}`, ...) collide on slots, and rooms would then crowd one
//! cluster node. The tag is the first `{` of every key (the prefix has no
//! brace), so a room name containing braces cannot move it.

use std::sync::OnceLock;

use bytes::{BufMut, Bytes, BytesMut};

use crate::limits::REDIS_PARTITIONS;
use crate::protocol::RoomName;

/// The prefix of every key and channel.
const PREFIX: &[u8] = b"rc:";

/// Slots in a Redis Cluster.
const SLOTS: u16 = 16384;

/// The partition of a room.
pub(crate) fn partition(room: &RoomName) -> usize {
    jump_hash(fnv1a64(room.as_bytes()), REDIS_PARTITIONS)
}

/// Each partition's hash tag, computed once.
fn tags() -> &'static [String] {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    TAGS.get_or_init(|| {
        let band = SLOTS as usize / REDIS_PARTITIONS;
        (0..REDIS_PARTITIONS)
            .map(|p| {
                (0u64..)
                    .map(|n| format!("p{n}"))
                    .find(|tag| fred::util::redis_keyslot(tag.as_bytes()) as usize / band == p)
                    .unwrap_or_else(|| unreachable!("every band of slots has a tag"))
            })
            .collect()
    })
}

/// The names of one room's keys and channel.
#[derive(Debug, Clone)]
pub(crate) struct RoomKeys {
    pub(crate) partition: usize,
    /// `rc:{tag}:m:<room>`: hash of the epoch (`e`) and last offset (`o`).
    pub(crate) meta: Bytes,
    /// `rc:{tag}:s:<room>`: stream of kept publications, entry id = offset.
    pub(crate) stream: Bytes,
    /// `rc:{tag}:c:<room>`: the shard channel every publication goes out on.
    pub(crate) channel: Bytes,
    /// `rc:{tag}:pz:<room>`: presence, client id scored by expiry (ms).
    pub(crate) presence_expiry: Bytes,
    /// `rc:{tag}:ph:<room>`: presence, client id to its encoded entry.
    pub(crate) presence_info: Bytes,
}

impl RoomKeys {
    pub(crate) fn new(room: &RoomName) -> RoomKeys {
        let partition = partition(room);
        let key = |kind: &str| name(partition, kind, room.as_bytes());
        RoomKeys {
            partition,
            meta: key("m"),
            stream: key("s"),
            channel: key("c"),
            presence_expiry: key("pz"),
            presence_info: key("ph"),
        }
    }

    /// `rc:{tag}:k:<room>:<key>`: one idempotency key of the room.
    pub(crate) fn idempotency(&self, room: &RoomName, key: &[u8]) -> Bytes {
        let mut suffix = Vec::with_capacity(room.as_bytes().len() + 1 + key.len());
        suffix.extend_from_slice(room.as_bytes());
        suffix.push(b':');
        suffix.extend_from_slice(key);
        name(self.partition, "k", &suffix)
    }
}

fn name(partition: usize, kind: &str, room: &[u8]) -> Bytes {
    let tag = &tags()[partition];
    let mut name = BytesMut::with_capacity(PREFIX.len() + tag.len() + kind.len() + room.len() + 4);
    name.put_slice(PREFIX);
    name.put_u8(b'{');
    name.put_slice(tag.as_bytes());
    name.put_slice(b"}:");
    name.put_slice(kind.as_bytes());
    name.put_u8(b':');
    name.put_slice(room);
    name.freeze()
}

/// The room a channel name belongs to (`rc:{tag}:c:<room>`), if it is one
/// of ours.
pub(crate) fn room_of_channel(channel: &str) -> Option<RoomName> {
    let rest = channel.strip_prefix("rc:{")?;
    let (_, rest) = rest.split_once("}:c:")?;
    RoomName::new(rest).ok()
}

/// The 64-bit FNV-1a hash: stable across builds and platforms, unlike the
/// standard library's hasher, so every node places a room alike.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Lamping and Veach's jump consistent hash: `key` to one of `buckets`.
fn jump_hash(mut key: u64, buckets: usize) -> usize {
    let (mut b, mut j) = (-1i64, 0i64);
    while j < buckets as i64 {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(name: &str) -> RoomName {
        RoomName::new(name).unwrap()
    }

    #[test]
    fn every_partition_owns_its_own_band_of_slots() {
        let band = SLOTS as usize / REDIS_PARTITIONS;
        for (p, tag) in tags().iter().enumerate() {
            assert_eq!(fred::util::redis_keyslot(tag.as_bytes()) as usize / band, p);
        }
    }

    #[test]
    fn a_room_s_keys_and_channel_share_one_slot_even_with_braces_in_its_name() {
        for name in ["ticks.btc", "a{b}c", "}{", "{x}"] {
            let r = room(name);
            let keys = RoomKeys::new(&r);
            let slot = fred::util::redis_keyslot(&keys.meta);
            for other in [
                &keys.stream,
                &keys.channel,
                &keys.presence_expiry,
                &keys.presence_info,
                &keys.idempotency(&r, b"key-1"),
            ] {
                assert_eq!(fred::util::redis_keyslot(other), slot, "{name}");
            }
            let channel = std::str::from_utf8(&keys.channel).unwrap();
            assert_eq!(room_of_channel(channel), Some(r));
        }
        let r = room("lobby");
        let key = RoomKeys::new(&r).idempotency(&r, b"k");
        assert!(key.starts_with(b"rc:{") && key.ends_with(b"}:k:lobby:k"));
    }

    #[test]
    fn rooms_spread_over_every_partition_and_the_placement_is_stable() {
        let mut used = [0usize; REDIS_PARTITIONS];
        for n in 0..20_000 {
            used[partition(&room(&format!("room-{n}")))] += 1;
        }
        assert!(used.iter().all(|&n| n > 100), "{used:?}");
        // Pinned: every node of every build must agree.
        assert_eq!(
            jump_hash(fnv1a64(b"ticks.btc"), 128),
            partition(&room("ticks.btc"))
        );
        assert_eq!(jump_hash(0, 1), 0);
        assert_eq!(jump_hash(256, 1024), 520);
    }
}
