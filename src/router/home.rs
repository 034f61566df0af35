//! The home side of a room: which cores want its publications, in which
//! codecs, and the step that sequences a publication and encodes it once.
//!
//! No I/O: [`Home::publish`] returns the frames and the cores to send them
//! to; the driver does the sending.

use foldhash::HashMap;

use crate::engine::Engine;
use crate::protocol::{frame, Codec, Offset, RoomName};

use super::{CoreId, CoreSet, Frames};

/// Which cores have local subscribers of a room, per codec.
#[derive(Debug, Default, Clone, Copy)]
struct Interest {
    by_codec: [CoreSet; 2],
}

/// The rooms whose home is this core.
pub struct Home<E> {
    engine: E,
    interest: HashMap<RoomName, Interest>,
}

/// A sequenced publication, ready to send.
pub struct Sequenced {
    pub offset: Offset,
    pub frames: Frames,
    /// Cores with subscribers of the room (may include this one).
    pub targets: CoreSet,
}

impl<E: Engine> Home<E> {
    pub fn new(engine: E) -> Home<E> {
        Home {
            engine,
            interest: HashMap::default(),
        }
    }

    /// Records that `core` gained (`on`) or lost its subscribers of `room` in
    /// `codec`. Returns the room's current offset: deliveries to `core` start
    /// after it.
    pub fn interest(&mut self, room: &RoomName, codec: Codec, core: CoreId, on: bool) -> Offset {
        if on {
            self.interest.entry(room.detached()).or_default().by_codec[codec.index()].insert(core);
        } else if let Some(interest) = self.interest.get_mut(room) {
            interest.by_codec[codec.index()].remove(core);
            if interest.by_codec.iter().all(|set| set.is_empty()) {
                self.interest.remove(room);
            }
        }
        self.engine.current(room)
    }

    /// Sequences one publication and builds its frame once per codec that
    /// someone subscribes with. A publication nobody subscribes to is still
    /// sequenced (its offset is part of the room's order) but not encoded.
    pub fn publish(&mut self, room: &RoomName, data: &[u8]) -> Sequenced {
        let offset = self.engine.sequence(room);
        let Some(interest) = self.interest.get(room) else {
            return Sequenced {
                offset,
                frames: [None, None],
                targets: CoreSet::default(),
            };
        };
        let build = |codec: Codec| {
            (!interest.by_codec[codec.index()].is_empty())
                .then(|| frame::message(codec, room, offset, data))
        };
        Sequenced {
            offset,
            frames: [build(Codec::MsgPack), build(Codec::Proto)],
            targets: interest.by_codec[0].union(interest.by_codec[1]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::MemoryEngine;

    fn room(name: &str) -> RoomName {
        RoomName::new(name).unwrap()
    }

    #[test]
    fn encodes_only_for_codecs_with_subscribers_and_targets_their_cores() {
        let mut home = Home::new(MemoryEngine::default());
        let r = room("ticks.btc");
        assert!(home.publish(&r, b"x").targets.is_empty());
        assert_eq!(home.interest(&r, Codec::Proto, CoreId(3), true), Offset(1));
        let seq = home.publish(&r, b"y");
        assert_eq!(seq.offset, Offset(2));
        assert!(seq.frames[Codec::MsgPack.index()].is_none());
        assert!(seq.frames[Codec::Proto.index()].is_some());
        assert_eq!(seq.targets.iter().collect::<Vec<_>>(), vec![CoreId(3)]);
        home.interest(&r, Codec::Proto, CoreId(3), false);
        assert!(home.publish(&r, b"z").targets.is_empty());
    }
}
