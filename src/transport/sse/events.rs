//! The text of a stream. Each frame of the member's queue is a MessagePack
//! envelope built once for every WebSocket subscriber; it is read back
//! here and written as one event (docs/PROTOCOL.md, "Server-Sent Events").
//! No I/O and no clock: the stream hands frames in and writes what comes
//! out.
//!
//! The encoder also keeps what each event's `id:` carries: every room's
//! position, so that the one id a browser sends back on reconnecting
//! (`Last-Event-ID`) resumes all of the stream's rooms.

use std::collections::HashMap;

use base64::Engine;
use bytes::Bytes;
use serde::Serialize;

use crate::protocol::{
    frame, Codec, Offset, Outcome, Reply, RequestId, ServerEvent, StreamPosition,
};
use crate::router::outbound::Closing;

use super::request::Wanted;

/// The request id of the subscribe to a stream's `index`-th room: replies
/// name their room by it.
pub(super) fn request_id(index: usize) -> RequestId {
    RequestId(index as u64 + 1)
}

/// One room of a stream.
struct Room {
    name: String,
    /// Publications are sent as UTF-8 text (`sse_text_rooms`).
    text: bool,
    /// Where the client asked to resume; `None` for a plain subscribe.
    from: Option<StreamPosition>,
    /// What event ids carry for this room: the position of the last
    /// publication the client was given. Until the room's subscribe is
    /// answered, where the client asked to resume (so a reconnect then
    /// asks the same), or nothing.
    position: Option<StreamPosition>,
}

/// Turns a stream's queued frames into events.
pub(super) struct Encoder {
    rooms: Vec<Room>,
    /// Room name to index, for deliveries (which name their room).
    index: HashMap<String, usize>,
}

#[derive(Serialize)]
struct MessageData<'a> {
    room: &'a str,
    /// `None` only if a delivery came before its room's answer, which the
    /// shard never does (the ack is queued ahead of any delivery).
    epoch: Option<&'a str>,
    offset: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
}

#[derive(Serialize)]
struct PositionData<'a> {
    epoch: &'a str,
    offset: u64,
}

#[derive(Serialize)]
struct SubscribedData<'a> {
    room: &'a str,
    epoch: &'a str,
    offset: u64,
    recovered: bool,
    /// `recovery_refused` only: the position the client asked to resume.
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<PositionData<'a>>,
}

#[derive(Serialize)]
struct ErrorData<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    room: Option<&'a str>,
    code: u32,
    message: &'a str,
}

#[derive(Serialize)]
struct CloseData<'a> {
    code: u16,
    reason: &'a str,
}

impl Encoder {
    /// An encoder for the rooms of a request; `text` says which rooms carry
    /// UTF-8 text.
    pub(super) fn new(wanted: &[Wanted], text: impl Fn(&str) -> bool) -> Encoder {
        let rooms: Vec<Room> = wanted
            .iter()
            .map(|w| Room {
                name: w.room.as_str().to_owned(),
                text: text(w.room.as_str()),
                from: w.from.clone(),
                position: w.from.clone(),
            })
            .collect();
        let index = rooms
            .iter()
            .enumerate()
            .map(|(i, room)| (room.name.clone(), i))
            .collect();
        Encoder { rooms, index }
    }

    /// Appends the event for one queued frame (nothing for a frame that
    /// carries none: a control frame, or a join or leave, which a stream
    /// never asks for).
    pub(super) fn frame(&mut self, frame: &Bytes, out: &mut Vec<u8>) {
        let Some(payload) = frame::binary_payload(frame) else {
            return;
        };
        match Codec::MsgPack.decode_server(&payload) {
            Ok(ServerEvent::Message { room, offset, data }) => {
                self.message(&room, offset, &data, out);
            }
            Ok(ServerEvent::Reply(reply)) => self.reply(reply, out),
            Ok(ServerEvent::Presence { .. }) => {}
            // Our own encoder wrote it: this is a bug, not bad input.
            Err(error) => tracing::error!(%error, "a queued frame did not decode"),
        }
    }

    fn message(&mut self, room: &str, offset: Offset, data: &[u8], out: &mut Vec<u8>) {
        let Some(&i) = self.index.get(room) else {
            tracing::error!(room, "a delivery for a room the stream does not follow");
            return;
        };
        let entry = &mut self.rooms[i];
        if let Some(position) = &mut entry.position {
            position.offset = offset;
        }
        let entry = &self.rooms[i];
        let text = entry.text.then(|| std::str::from_utf8(data).ok()).flatten();
        let event = MessageData {
            room,
            epoch: entry.position.as_ref().map(|p| p.epoch.0.as_str()),
            offset: offset.0,
            data: text
                .is_none()
                .then(|| base64::engine::general_purpose::STANDARD.encode(data)),
            text,
        };
        self.event(out, "message", true, &event);
    }

    fn reply(&mut self, reply: Reply, out: &mut Vec<u8>) {
        let index = usize::try_from(reply.id.0)
            .ok()
            .and_then(|id| id.checked_sub(1))
            .filter(|&i| i < self.rooms.len());
        match (reply.outcome, index) {
            (Outcome::Ack(ack), Some(i)) => {
                let room = &mut self.rooms[i];
                let position = StreamPosition {
                    epoch: ack.epoch,
                    offset: ack.offset,
                };
                // Recovered: the missed publications follow the answer,
                // from the client's own position on.
                let (name, from) = match room.from.take() {
                    Some(from) if ack.recovered => {
                        room.position = Some(from);
                        ("subscribed", None)
                    }
                    Some(from) => {
                        room.position = Some(position);
                        ("recovery_refused", Some(from))
                    }
                    None => {
                        room.position = Some(position);
                        ("subscribed", None)
                    }
                };
                let room = &self.rooms[i];
                let Some(position) = &room.position else {
                    return;
                };
                let event = SubscribedData {
                    room: &room.name,
                    epoch: &position.epoch.0,
                    offset: position.offset.0,
                    recovered: ack.recovered,
                    from: from.as_ref().map(|from| PositionData {
                        epoch: &from.epoch.0,
                        offset: from.offset.0,
                    }),
                };
                self.event(out, name, true, &event);
            }
            (Outcome::Error { code, message }, i) => {
                let event = ErrorData {
                    room: i.map(|i| self.rooms[i].name.as_str()),
                    code,
                    message: &message,
                };
                // Not `error`: an `EventSource` fires that for its own network
                // failures, and a page could not tell the two apart.
                self.event(out, "subscribe_error", false, &event);
            }
            // A stream sends nothing else that is answered.
            (_, _) => {}
        }
    }

    /// The comment a quiet stream sends every `sse_heartbeat`.
    pub(super) fn heartbeat(out: &mut Vec<u8>) {
        out.extend_from_slice(b": heartbeat\n\n");
    }

    /// The last event of a stream the server ends.
    pub(super) fn close(&self, closing: &Closing, out: &mut Vec<u8>) {
        let event = CloseData {
            code: closing.code,
            reason: closing.reason,
        };
        self.event(out, "close", false, &event);
    }

    /// Appends one event: its id (every room's position) when `with_id`,
    /// its name, and its data, one line of JSON.
    fn event(&self, out: &mut Vec<u8>, name: &str, with_id: bool, data: &impl Serialize) {
        if with_id {
            out.extend_from_slice(b"id: ");
            self.write_id(out);
            out.push(b'\n');
        }
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\ndata: ");
        // Derived structs of strings and numbers into a Vec: serde_json
        // fails only on I/O or on map keys that are not strings.
        if let Err(error) = serde_json::to_writer(&mut *out, data) {
            tracing::error!(%error, "an SSE event did not serialize");
            out.extend_from_slice(b"{}");
        }
        out.extend_from_slice(b"\n\n");
    }

    /// Every room's `<epoch>:<offset>`, in the order of the request's
    /// `room` parameters, comma-separated; nothing for a room with no
    /// position yet. JSON escapes nothing here: epochs are letters and
    /// digits (the server's, or a client's checked by `parse_position`).
    fn write_id(&self, out: &mut Vec<u8>) {
        for (i, room) in self.rooms.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            if let Some(position) = &room.position {
                out.extend_from_slice(position.epoch.0.as_bytes());
                out.push(b':');
                out.extend_from_slice(position.offset.0.to_string().as_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::close_code;
    use crate::protocol::{Ack, Epoch, ErrorCode, RoomName};

    fn wanted(room: &str, from: Option<(&str, u64)>) -> Wanted {
        Wanted {
            room: RoomName::new(room).unwrap(),
            from: from.map(|(epoch, offset)| StreamPosition {
                epoch: Epoch(epoch.into()),
                offset: Offset(offset),
            }),
        }
    }

    fn ack(index: usize, epoch: &str, offset: u64, recovered: bool) -> Bytes {
        let ack = Ack {
            offset: Offset(offset),
            epoch: Epoch(epoch.into()),
            recovered,
            ..Ack::default()
        };
        frame::reply(Codec::MsgPack, &Reply::with(request_id(index), ack))
    }

    fn message(room: &str, offset: u64, data: &[u8]) -> Bytes {
        frame::message(
            Codec::MsgPack,
            &RoomName::new(room).unwrap(),
            Offset(offset),
            data,
        )
    }

    fn text_of(encoder: &mut Encoder, frames: &[Bytes]) -> String {
        let mut out = Vec::new();
        for frame in frames {
            encoder.frame(frame, &mut out);
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_single_room_stream_has_epoch_offset_ids_and_base64_payloads() {
        let mut encoder = Encoder::new(&[wanted("a", None)], |_| false);
        let text = text_of(
            &mut encoder,
            &[ack(0, "e1", 4, false), message("a", 5, b"\x00hi")],
        );
        assert_eq!(
            text,
            "id: e1:4\nevent: subscribed\ndata: {\"room\":\"a\",\"epoch\":\"e1\",\"offset\":4,\"recovered\":false}\n\n\
             id: e1:5\nevent: message\ndata: {\"room\":\"a\",\"epoch\":\"e1\",\"offset\":5,\"data\":\"AGhp\"}\n\n"
        );
    }

    #[test]
    fn every_id_carries_every_rooms_position_in_request_order() {
        let mut encoder = Encoder::new(&[wanted("a", None), wanted("b", Some(("e2", 7)))], |_| {
            false
        });
        let text = text_of(
            &mut encoder,
            &[ack(0, "e1", 0, false), message("a", 1, b"x")],
        );
        let ids: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("id: "))
            .collect();
        assert_eq!(
            ids,
            ["e1:0,e2:7", "e1:1,e2:7"],
            "b keeps the position asked for until its answer"
        );
        let text = text_of(
            &mut encoder,
            &[
                ack(1, "e2", 9, true),
                message("b", 8, b"y"),
                message("a", 2, b"z"),
            ],
        );
        let ids: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("id: "))
            .collect();
        assert_eq!(ids, ["e1:1,e2:7", "e1:1,e2:8", "e1:2,e2:8"]);
        assert!(text.contains("event: subscribed\ndata: {\"room\":\"b\",\"epoch\":\"e2\",\"offset\":7,\"recovered\":true}"));
    }

    #[test]
    fn a_refused_recovery_is_its_own_event_naming_both_positions() {
        let mut encoder = Encoder::new(&[wanted("a", Some(("old", 3)))], |_| false);
        let text = text_of(&mut encoder, &[ack(0, "new", 12, false)]);
        assert_eq!(
            text,
            "id: new:12\nevent: recovery_refused\ndata: {\"room\":\"a\",\"epoch\":\"new\",\"offset\":12,\"recovered\":false,\"from\":{\"epoch\":\"old\",\"offset\":3}}\n\n"
        );
    }

    #[test]
    fn text_rooms_carry_utf8_as_text_and_anything_else_as_base64() {
        let mut encoder = Encoder::new(&[wanted("t", None)], |room| room == "t");
        let text = text_of(
            &mut encoder,
            &[
                ack(0, "e", 0, false),
                message("t", 1, "héllo \"you\"\n".as_bytes()),
                message("t", 2, b"\xff"),
            ],
        );
        assert!(
            text.contains("\"offset\":1,\"text\":\"héllo \\\"you\\\"\\n\"}\n\n"),
            "{text}"
        );
        assert!(
            text.contains("\"offset\":2,\"data\":\"/w==\"}\n\n"),
            "{text}"
        );
    }

    #[test]
    fn errors_name_their_room_and_carry_no_id_and_close_is_last() {
        let mut encoder = Encoder::new(&[wanted("a", None)], |_| false);
        let refusal = Reply::error(
            request_id(0),
            ErrorCode::ShuttingDown,
            "node is shutting down",
        );
        let text = text_of(&mut encoder, &[frame::reply(Codec::MsgPack, &refusal)]);
        assert_eq!(
            text,
            "event: subscribe_error\ndata: {\"room\":\"a\",\"code\":105,\"message\":\"node is shutting down\"}\n\n"
        );
        let mut out = Vec::new();
        encoder.close(
            &Closing {
                code: close_code::TRY_AGAIN_LATER,
                reason: "slow consumer",
                flush: false,
            },
            &mut out,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "event: close\ndata: {\"code\":1013,\"reason\":\"slow consumer\"}\n\n"
        );
    }
}
