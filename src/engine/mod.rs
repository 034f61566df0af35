//! The engine: what a room's home core asks when it sequences a publication.
//!
//! Sequencing sits behind this small boundary so that history, presence and a
//! Redis-backed engine can replace the in-memory one without touching routing
//! or fan-out. An engine instance belongs to one core and is only asked about
//! rooms whose home is that core, so it needs no locks.

use foldhash::HashMap;

use crate::protocol::{Offset, RoomName};

/// Assigns each room's offsets: one total order per room.
pub trait Engine {
    /// Gives the next publication to `room` its offset (the first is 1).
    fn sequence(&mut self, room: &RoomName) -> Offset;

    /// The offset of the last publication to `room` (0 if none).
    fn current(&self, room: &RoomName) -> Offset;
}

/// Offsets in memory; they restart from 0 with the process.
#[derive(Debug, Default)]
pub struct MemoryEngine {
    offsets: HashMap<RoomName, Offset>,
}

impl Engine for MemoryEngine {
    fn sequence(&mut self, room: &RoomName) -> Offset {
        if let Some(offset) = self.offsets.get_mut(room) {
            *offset = offset.next();
            return *offset;
        }
        self.offsets.insert(room.detached(), Offset(1));
        Offset(1)
    }

    fn current(&self, room: &RoomName) -> Offset {
        self.offsets.get(room).copied().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_start_at_one_and_grow_by_one_per_room() {
        let mut engine = MemoryEngine::default();
        let a = RoomName::new("a").unwrap();
        let b = RoomName::new("b").unwrap();
        assert_eq!(engine.current(&a), Offset(0));
        assert_eq!(engine.sequence(&a), Offset(1));
        assert_eq!(engine.sequence(&a), Offset(2));
        assert_eq!(engine.sequence(&b), Offset(1));
        assert_eq!(engine.current(&a), Offset(2));
    }
}
