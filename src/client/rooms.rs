//! What the client knows of each subscribed room. No I/O here, so the rule
//! that hands each offset over once and in order is tested without a server.

use super::command::Responder;
use super::SubscribeInfo;
use crate::protocol::{Epoch, Offset, RoomName, StreamPosition};

/// What the client knows of one subscribed room.
pub(super) struct RoomState {
    pub(super) name: RoomName,
    pub(super) generation: u64,
    pub(super) join_leave: bool,
    /// The epoch of the last subscribe ack and the offset of the last
    /// message handed to the application (the ack's offset before any).
    pub(super) position: Option<StreamPosition>,
    /// Subscribed on the current connection.
    pub(super) active: bool,
    /// A subscribe for it is in flight on the current connection.
    pub(super) in_flight: bool,
    /// Some subscribe of it was acknowledged once: a resubscribe of it is
    /// news for the application ([`Event::Resubscribed`]).
    ///
    /// [`Event::Resubscribed`]: super::Event::Resubscribed
    pub(super) confirmed: bool,
    /// Callers of `subscribe` waiting for the next ack.
    pub(super) waiters: Vec<Responder<SubscribeInfo>>,
}

impl RoomState {
    /// Whether a message at `offset` is new, and if so records it as the
    /// last one handed over. Offsets never go back within an epoch, so
    /// anything at or below the last one is a replay.
    pub(super) fn accept(&mut self, offset: Offset) -> bool {
        match &mut self.position {
            Some(position) if offset <= position.offset => false,
            Some(position) => {
                position.offset = offset;
                true
            }
            None => true,
        }
    }

    /// Takes in a subscribe ack. `sent` is the recover position the
    /// subscribe carried; `was_active` whether the room was already
    /// subscribed on this connection (a repeated subscribe).
    pub(super) fn acknowledge(
        &mut self,
        sent: Option<StreamPosition>,
        was_active: bool,
        epoch: &Epoch,
        offset: Offset,
        recovered: bool,
    ) {
        let current = StreamPosition {
            epoch: epoch.clone(),
            offset,
        };
        self.position = match (sent, recovered) {
            // Every publication after the position we gave follows.
            (Some(sent), true) => Some(sent),
            // Something was missed: live messages follow the current offset.
            (Some(_), false) => Some(current),
            (None, _) => match self.position.take() {
                Some(kept) if was_active && kept.epoch == *epoch => Some(kept),
                _ => Some(current),
            },
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room() -> RoomState {
        RoomState {
            name: RoomName::new("ticks.btc").unwrap(),
            generation: 0,
            join_leave: false,
            position: None,
            active: false,
            in_flight: false,
            confirmed: false,
            waiters: Vec::new(),
        }
    }

    fn at(epoch: &str, offset: u64) -> StreamPosition {
        StreamPosition {
            epoch: Epoch(epoch.to_owned()),
            offset: Offset(offset),
        }
    }

    #[test]
    fn a_room_hands_over_each_offset_once_and_in_order() {
        let mut state = room();
        state.acknowledge(None, false, &Epoch("e1".into()), Offset(10), false);
        assert!(
            !state.accept(Offset(10)),
            "the ack's offset was before the subscription"
        );
        assert!(state.accept(Offset(11)));
        assert!(state.accept(Offset(12)));
        assert!(!state.accept(Offset(11)), "a replay of an older message");
        assert!(!state.accept(Offset(12)), "a replay of the last message");
        assert_eq!(state.position, Some(at("e1", 12)));
    }

    #[test]
    fn a_recovered_room_continues_from_the_last_message_handed_over() {
        let mut state = room();
        state.position = Some(at("e1", 12));
        state.acknowledge(
            Some(at("e1", 12)),
            false,
            &Epoch("e1".into()),
            Offset(20),
            true,
        );
        assert_eq!(state.position, Some(at("e1", 12)));
        assert!(state.accept(Offset(13)), "the missed messages follow");
    }

    #[test]
    fn a_room_that_lost_messages_or_its_epoch_starts_from_the_acks_position() {
        let mut state = room();
        state.position = Some(at("e1", 12));
        state.acknowledge(
            Some(at("e1", 12)),
            false,
            &Epoch("e2".into()),
            Offset(0),
            false,
        );
        assert_eq!(state.position, Some(at("e2", 0)));
        assert!(state.accept(Offset(1)), "a new epoch numbers from 1 again");

        let mut state = room();
        state.position = Some(at("e1", 12));
        state.acknowledge(
            Some(at("e1", 12)),
            false,
            &Epoch("e1".into()),
            Offset(500),
            false,
        );
        assert!(!state.accept(Offset(499)));
        assert!(
            state.accept(Offset(501)),
            "live messages after the ack's offset"
        );
    }

    #[test]
    fn subscribing_again_to_a_live_room_keeps_its_position() {
        let mut state = room();
        state.position = Some(at("e1", 12));
        state.acknowledge(None, true, &Epoch("e1".into()), Offset(15), false);
        assert_eq!(
            state.position,
            Some(at("e1", 12)),
            "13 to 15 may still be on their way"
        );
    }
}
