//! The busiest rooms of one home core, estimated from a sample of its
//! publications, for the dashboard's top-rooms table.
//!
//! Counting every room's publications exactly would cost a map entry per
//! room; this counts one publication in [`TOP_ROOMS_SAMPLE_EVERY`] (on
//! average: the gaps are random, so traffic with a period of its own, say
//! two rooms published in turn, cannot hide one of them) into at
//! most [`TOP_ROOMS_TRACKED`] counters (the space-saving scheme: a room not
//! tracked takes the place of the least counted one), so a core with a
//! million rooms pays the same bounded memory and about one map lookup per
//! sixteen publications. The estimate is good for the rooms that matter
//! here, the busy ones; a quiet room may be missing or over-counted.

use foldhash::HashMap;

use crate::limits::{TOP_ROOMS_SAMPLE_EVERY, TOP_ROOMS_TRACKED};
use crate::protocol::RoomName;

/// A room and its estimated publications per sampling window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RoomCount {
    pub(crate) room: RoomName,
    pub(crate) publications: u64,
}

/// Sampled publication counts of the rooms homed on one core.
#[derive(Debug)]
pub(crate) struct TopRooms {
    counts: HashMap<RoomName, u64>,
    /// Publications to let pass before the next sampled one.
    gap: u32,
    /// xorshift32 state for the gaps.
    random: u32,
}

impl Default for TopRooms {
    fn default() -> TopRooms {
        TopRooms {
            counts: HashMap::default(),
            gap: TOP_ROOMS_SAMPLE_EVERY,
            random: 0x9e37_79b9,
        }
    }
}

impl TopRooms {
    /// Notes one publication to `room`.
    pub(crate) fn published(&mut self, room: &RoomName) {
        if self.gap > 1 {
            self.gap -= 1;
            return;
        }
        // The next gap: uniform in 1..2N, so N on average.
        self.random ^= self.random << 13;
        self.random ^= self.random >> 17;
        self.random ^= self.random << 5;
        self.gap = 1 + self.random % (2 * TOP_ROOMS_SAMPLE_EVERY - 1);
        let weight = u64::from(TOP_ROOMS_SAMPLE_EVERY);
        if let Some(count) = self.counts.get_mut(room) {
            *count += weight;
            return;
        }
        if self.counts.len() < TOP_ROOMS_TRACKED {
            self.counts.insert(room.clone(), weight);
            return;
        }
        // Space-saving: the newcomer inherits the smallest count, so a room
        // that keeps coming back climbs over the ones that stopped.
        let smallest = self
            .counts
            .iter()
            .min_by_key(|(_, count)| **count)
            .map(|(room, count)| (room.clone(), *count));
        if let Some((evicted, count)) = smallest {
            self.counts.remove(&evicted);
            self.counts.insert(room.clone(), count + weight);
        }
    }

    /// The `n` busiest rooms since the last call, busiest first; the
    /// counts start again from zero.
    pub(crate) fn take(&mut self, n: usize) -> Vec<RoomCount> {
        let mut rooms: Vec<RoomCount> = self
            .counts
            .drain()
            .map(|(room, publications)| RoomCount { room, publications })
            .collect();
        rooms.sort_unstable_by_key(|r| std::cmp::Reverse(r.publications));
        rooms.truncate(n);
        rooms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(name: &str) -> RoomName {
        RoomName::new(name).expect("a valid room name")
    }

    fn publish(top: &mut TopRooms, name: &str, times: u32) {
        let name = room(name);
        for _ in 0..times {
            top.published(&name);
        }
    }

    #[test]
    fn the_busiest_rooms_come_first_with_counts_near_the_truth() {
        let mut top = TopRooms::default();
        for _ in 0..100 {
            publish(&mut top, "ticks.hot", 50);
            publish(&mut top, "ticks.warm", 10);
            publish(&mut top, "ticks.cold", 1);
        }
        let rooms = top.take(2);
        let names: Vec<&str> = rooms.iter().map(|r| r.room.as_str()).collect();
        assert_eq!(names, ["ticks.hot", "ticks.warm"]);
        let hot = rooms[0].publications;
        assert!(
            (4_000..=6_000).contains(&hot),
            "5,000 published, {hot} estimated"
        );
        assert!(top.take(10).is_empty(), "taking starts a new window");
    }

    #[test]
    fn rooms_published_in_turn_are_all_seen() {
        let mut top = TopRooms::default();
        for _ in 0..1_000 {
            publish(&mut top, "a", 2);
            publish(&mut top, "b", 2);
        }
        let rooms = top.take(2);
        assert_eq!(rooms.len(), 2, "{rooms:?}");
        for room in rooms {
            let n = room.publications;
            assert!(
                (1_400..=2_600).contains(&n),
                "2,000 published, {n} estimated"
            );
        }
    }

    #[test]
    fn many_quiet_rooms_cannot_push_a_busy_one_out_and_memory_stays_bounded() {
        let mut top = TopRooms::default();
        for i in 0..20_000 {
            publish(&mut top, &format!("sensor.{i}"), 1);
            publish(&mut top, "dashboard.main", 1);
        }
        assert!(top.counts.len() <= TOP_ROOMS_TRACKED);
        let rooms = top.take(1);
        assert_eq!(rooms[0].room.as_str(), "dashboard.main");
    }
}
