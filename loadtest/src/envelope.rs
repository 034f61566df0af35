//! Server envelopes decoded in place: the fields a load generator needs,
//! borrowed from the frame, no allocation.
//!
//! `Codec::decode_server` copies the room name into a `String` and needs the
//! frame as `Bytes` (so an owned copy of each frame); at a million deliveries
//! a second that is the generator's own bottleneck. These two small readers
//! follow the schema of docs/PROTOCOL.md and agree with `decode_server` on
//! every envelope the server writes (tests below). They are lenient where the
//! server's decoder is strict (repeated keys, key order): they only have to
//! read what roomcast writes.

use roomcast::protocol::Codec;

/// One server envelope, borrowed from the frame payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Envelope<'a> {
    /// A delivered publication.
    Message {
        room: &'a [u8],
        offset: u64,
        data: &'a [u8],
    },
    /// A successful reply.
    Ack { id: u64, offset: u64 },
    /// An error reply.
    Error {
        id: u64,
        code: u32,
        message: &'a [u8],
    },
}

/// An envelope neither reader could make sense of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed server envelope")]
pub(crate) struct Malformed;

/// Decodes one server envelope.
pub(crate) fn decode(codec: Codec, payload: &[u8]) -> Result<Envelope<'_>, Malformed> {
    match codec {
        Codec::MsgPack => msgpack::decode(payload),
        Codec::Proto => proto::decode(payload),
    }
}

mod msgpack {
    use super::{Envelope, Malformed};

    /// Deeper unknown values than this are refused (the server's own bound).
    const MAX_DEPTH: usize = 16;

    struct Reader<'a> {
        buf: &'a [u8],
        pos: usize,
    }

    impl<'a> Reader<'a> {
        fn byte(&mut self) -> Result<u8, Malformed> {
            let b = *self.buf.get(self.pos).ok_or(Malformed)?;
            self.pos += 1;
            Ok(b)
        }

        fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
            let end = self.pos.checked_add(n).ok_or(Malformed)?;
            let bytes = self.buf.get(self.pos..end).ok_or(Malformed)?;
            self.pos = end;
            Ok(bytes)
        }

        fn be(&mut self, n: usize) -> Result<u64, Malformed> {
            Ok(self
                .take(n)?
                .iter()
                .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
        }

        fn map_len(&mut self) -> Result<usize, Malformed> {
            match self.byte()? {
                b @ 0x80..=0x8F => Ok(usize::from(b & 0x0F)),
                0xDE => Ok(self.be(2)? as usize),
                0xDF => Ok(self.be(4)? as usize),
                _ => Err(Malformed),
            }
        }

        /// A `str` (or, leniently, a `bin`).
        fn bytes(&mut self) -> Result<&'a [u8], Malformed> {
            let len = match self.byte()? {
                b @ 0xA0..=0xBF => usize::from(b & 0x1F),
                0xD9 | 0xC4 => self.be(1)? as usize,
                0xDA | 0xC5 => self.be(2)? as usize,
                0xDB | 0xC6 => self.be(4)? as usize,
                _ => return Err(Malformed),
            };
            self.take(len)
        }

        fn uint(&mut self) -> Result<u64, Malformed> {
            match self.byte()? {
                b @ 0x00..=0x7F => Ok(u64::from(b)),
                0xCC => self.be(1),
                0xCD => self.be(2),
                0xCE => self.be(4),
                0xCF => self.be(8),
                _ => Err(Malformed),
            }
        }

        /// Skips one value of any type.
        fn skip(&mut self, depth: usize) -> Result<(), Malformed> {
            if depth > MAX_DEPTH {
                return Err(Malformed);
            }
            let (skip_bytes, items) = match self.byte()? {
                0x00..=0x7F | 0xE0..=0xFF | 0xC0 | 0xC2 | 0xC3 => (0, 0),
                b @ 0x80..=0x8F => (0, 2 * usize::from(b & 0x0F)),
                b @ 0x90..=0x9F => (0, usize::from(b & 0x0F)),
                b @ 0xA0..=0xBF => (usize::from(b & 0x1F), 0),
                0xC4 | 0xD9 => (self.be(1)? as usize, 0),
                0xC5 | 0xDA => (self.be(2)? as usize, 0),
                0xC6 | 0xDB => (self.be(4)? as usize, 0),
                0xC7 => (self.be(1)? as usize + 1, 0),
                0xC8 => (self.be(2)? as usize + 1, 0),
                0xC9 => (self.be(4)? as usize + 1, 0),
                0xCA => (4, 0),
                0xCB => (8, 0),
                0xCC | 0xD0 => (1, 0),
                0xCD | 0xD1 => (2, 0),
                0xCE | 0xD2 => (4, 0),
                0xCF | 0xD3 => (8, 0),
                0xD4 => (2, 0),
                0xD5 => (3, 0),
                0xD6 => (5, 0),
                0xD7 => (9, 0),
                0xD8 => (17, 0),
                0xDC => (0, self.be(2)? as usize),
                0xDD => (0, self.be(4)? as usize),
                0xDE => (0, 2 * self.be(2)? as usize),
                0xDF => (0, 2 * self.be(4)? as usize),
                0xC1 => return Err(Malformed),
            };
            self.take(skip_bytes)?;
            for _ in 0..items {
                self.skip(depth + 1)?;
            }
            Ok(())
        }
    }

    /// How the server starts every delivery: `{"message": {"room": ...`.
    const MESSAGE_START: &[u8; 15] = b"\x81\xa7message\x83\xa4room";

    /// The server writes a delivery's keys in one order; reading them in
    /// that order, with no key comparisons, is most of the decoding cost
    /// saved. Anything else goes to the general reader.
    pub(super) fn delivery_in_server_order(payload: &[u8]) -> Option<Envelope<'_>> {
        // Fixed-size comparisons compile to a few integer compares.
        let start: &[u8; 15] = payload.get(..15)?.try_into().ok()?;
        if start != MESSAGE_START {
            return None;
        }
        let mut r = Reader {
            buf: payload,
            pos: 15,
        };
        let room = r.bytes().ok()?;
        let key: &[u8; 7] = r.take(7).ok()?.try_into().ok()?;
        if key != b"\xa6offset" {
            return None;
        }
        let offset = r.uint().ok()?;
        let key: &[u8; 5] = r.take(5).ok()?.try_into().ok()?;
        if key != b"\xa4data" {
            return None;
        }
        let data = r.bytes().ok()?;
        Some(Envelope::Message { room, offset, data })
    }

    pub(super) fn decode(payload: &[u8]) -> Result<Envelope<'_>, Malformed> {
        if let Some(delivery) = delivery_in_server_order(payload) {
            return Ok(delivery);
        }
        let mut r = Reader {
            buf: payload,
            pos: 0,
        };
        let mut found = None;
        for _ in 0..r.map_len()? {
            match r.bytes()? {
                b"message" if found.is_none() => found = Some(message(&mut r)?),
                b"reply" if found.is_none() => found = Some(reply(&mut r)?),
                b"message" | b"reply" => return Err(Malformed),
                _ => r.skip(2)?,
            }
        }
        found.ok_or(Malformed)
    }

    fn message<'a>(r: &mut Reader<'a>) -> Result<Envelope<'a>, Malformed> {
        let (mut room, mut offset, mut data): (&[u8], u64, &[u8]) = (b"", 0, b"");
        for _ in 0..r.map_len()? {
            match r.bytes()? {
                b"room" => room = r.bytes()?,
                b"offset" => offset = r.uint()?,
                b"data" => data = r.bytes()?,
                _ => r.skip(3)?,
            }
        }
        Ok(Envelope::Message { room, offset, data })
    }

    fn reply<'a>(r: &mut Reader<'a>) -> Result<Envelope<'a>, Malformed> {
        let mut id = 0;
        let mut ack = None;
        let mut error = None;
        for _ in 0..r.map_len()? {
            match r.bytes()? {
                b"id" => id = r.uint()?,
                b"ack" => {
                    let mut offset = 0;
                    for _ in 0..r.map_len()? {
                        match r.bytes()? {
                            b"offset" => offset = r.uint()?,
                            _ => r.skip(4)?,
                        }
                    }
                    ack = Some(offset);
                }
                b"error" => {
                    let (mut code, mut message): (u64, &[u8]) = (0, b"");
                    for _ in 0..r.map_len()? {
                        match r.bytes()? {
                            b"code" => code = r.uint()?,
                            b"message" => message = r.bytes()?,
                            _ => r.skip(4)?,
                        }
                    }
                    error = Some((code, message));
                }
                _ => r.skip(3)?,
            }
        }
        match (ack, error) {
            (_, Some((code, message))) => Ok(Envelope::Error {
                id,
                code: u32::try_from(code).map_err(|_| Malformed)?,
                message,
            }),
            (Some(offset), None) => Ok(Envelope::Ack { id, offset }),
            (None, None) => Err(Malformed),
        }
    }
}

mod proto {
    use super::{Envelope, Malformed};

    const VARINT: u8 = 0;
    const FIXED64: u8 = 1;
    const LEN: u8 = 2;
    const FIXED32: u8 = 5;

    struct Reader<'a> {
        buf: &'a [u8],
        pos: usize,
    }

    impl<'a> Reader<'a> {
        fn at_end(&self) -> bool {
            self.pos >= self.buf.len()
        }

        fn varint(&mut self) -> Result<u64, Malformed> {
            let mut value = 0u64;
            for shift in (0..70).step_by(7) {
                let b = *self.buf.get(self.pos).ok_or(Malformed)?;
                self.pos += 1;
                value |= u64::from(b & 0x7F) << shift.min(63);
                if b & 0x80 == 0 {
                    return Ok(value);
                }
            }
            Err(Malformed)
        }

        fn key(&mut self) -> Result<(u64, u8), Malformed> {
            let key = self.varint()?;
            Ok((key >> 3, (key & 7) as u8))
        }

        fn bytes(&mut self) -> Result<&'a [u8], Malformed> {
            let len = usize::try_from(self.varint()?).map_err(|_| Malformed)?;
            let end = self.pos.checked_add(len).ok_or(Malformed)?;
            let bytes = self.buf.get(self.pos..end).ok_or(Malformed)?;
            self.pos = end;
            Ok(bytes)
        }

        fn skip(&mut self, wire_type: u8) -> Result<(), Malformed> {
            let n = match wire_type {
                VARINT => return self.varint().map(drop),
                LEN => return self.bytes().map(drop),
                FIXED64 => 8,
                FIXED32 => 4,
                _ => return Err(Malformed),
            };
            if self.buf.len() - self.pos < n {
                return Err(Malformed);
            }
            self.pos += n;
            Ok(())
        }

        /// The reader over a length-delimited field, expected at `wire_type`.
        fn nested(&mut self, wire_type: u8) -> Result<Reader<'a>, Malformed> {
            if wire_type != LEN {
                return Err(Malformed);
            }
            Ok(Reader {
                buf: self.bytes()?,
                pos: 0,
            })
        }
    }

    pub(super) fn decode(payload: &[u8]) -> Result<Envelope<'_>, Malformed> {
        let mut r = Reader {
            buf: payload,
            pos: 0,
        };
        let mut found = None;
        // In a oneof the last member on the wire wins.
        while !r.at_end() {
            match r.key()? {
                (1, wt) => found = Some(reply(r.nested(wt)?)?),
                (2, wt) => found = Some(message(r.nested(wt)?)?),
                (_, wt) => r.skip(wt)?,
            }
        }
        found.ok_or(Malformed)
    }

    fn message(mut r: Reader<'_>) -> Result<Envelope<'_>, Malformed> {
        let (mut room, mut offset, mut data): (&[u8], u64, &[u8]) = (b"", 0, b"");
        while !r.at_end() {
            match r.key()? {
                (1, LEN) => room = r.bytes()?,
                (2, VARINT) => offset = r.varint()?,
                (3, LEN) => data = r.bytes()?,
                (_, wt) => r.skip(wt)?,
            }
        }
        Ok(Envelope::Message { room, offset, data })
    }

    fn reply(mut r: Reader<'_>) -> Result<Envelope<'_>, Malformed> {
        let mut id = 0;
        let mut outcome = None;
        while !r.at_end() {
            match r.key()? {
                (1, VARINT) => id = r.varint()?,
                (2, wt) => {
                    let mut ack = r.nested(wt)?;
                    let mut offset = 0;
                    while !ack.at_end() {
                        match ack.key()? {
                            (1, VARINT) => offset = ack.varint()?,
                            (_, wt) => ack.skip(wt)?,
                        }
                    }
                    outcome = Some(Ok(offset));
                }
                (3, wt) => {
                    let mut error = r.nested(wt)?;
                    let (mut code, mut message): (u64, &[u8]) = (0, b"");
                    while !error.at_end() {
                        match error.key()? {
                            (1, VARINT) => code = error.varint()?,
                            (2, LEN) => message = error.bytes()?,
                            (_, wt) => error.skip(wt)?,
                        }
                    }
                    outcome = Some(Err((code, message)));
                }
                (_, wt) => r.skip(wt)?,
            }
        }
        match outcome {
            Some(Ok(offset)) => Ok(Envelope::Ack { id, offset }),
            Some(Err((code, message))) => Ok(Envelope::Error {
                id,
                code: code as u32,
                message,
            }),
            None => Err(Malformed),
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use roomcast::protocol::{Codec, Offset, Outcome, Reply, RequestId, RoomName, ServerEvent};

    use super::*;

    /// What `Codec::decode_server` says, in this module's terms.
    fn reference(codec: Codec, payload: &[u8]) -> (Option<String>, u64, u64, Vec<u8>) {
        match codec
            .decode_server(&Bytes::copy_from_slice(payload))
            .unwrap()
        {
            ServerEvent::Message { room, offset, data } => (Some(room), offset.0, 0, data.to_vec()),
            ServerEvent::Reply(Reply {
                id,
                outcome: Outcome::Ack(ack),
            }) => (None, ack.offset.0, id.0, Vec::new()),
            ServerEvent::Reply(Reply {
                id,
                outcome: Outcome::Error { code, message },
            }) => (None, u64::from(code), id.0, message.into_bytes()),
            other => panic!("not a reply or message: {other:?}"),
        }
    }

    fn ours(codec: Codec, payload: &[u8]) -> (Option<String>, u64, u64, Vec<u8>) {
        match decode(codec, payload).unwrap() {
            Envelope::Message { room, offset, data } => (
                Some(String::from_utf8(room.to_vec()).unwrap()),
                offset,
                0,
                data.to_vec(),
            ),
            Envelope::Ack { id, offset } => (None, offset, id, Vec::new()),
            Envelope::Error { id, code, message } => (None, u64::from(code), id, message.to_vec()),
        }
    }

    #[test]
    fn agrees_with_the_server_codec_on_messages() {
        let room = RoomName::new("chat.lobby").unwrap();
        let long_room = RoomName::new(&"r".repeat(255)).unwrap();
        for codec in Codec::ALL {
            for (room, offset, len) in [
                (&room, 0u64, 0usize),
                (&room, 42, 2),
                (&long_room, 1 << 40, 300),
                (&room, u64::MAX, 70_000),
            ] {
                let data: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
                let mut payload = Vec::new();
                codec.encode_message(room, Offset(offset), &data, &mut payload);
                assert_eq!(ours(codec, &payload), reference(codec, &payload));
            }
        }
    }

    #[test]
    fn agrees_with_the_server_codec_on_replies() {
        for codec in Codec::ALL {
            for reply in [
                Reply::ack(RequestId(1), Offset(41)),
                Reply::ack(RequestId(2), Offset(0)),
                Reply::ack(RequestId(u64::MAX), Offset(1 << 33)),
                Reply::error(
                    RequestId(9),
                    roomcast::protocol::ErrorCode::InvalidRoom,
                    "invalid room: room name is empty",
                ),
                Reply::error(
                    RequestId(0),
                    roomcast::protocol::ErrorCode::UnknownOperation,
                    "x".repeat(300),
                ),
            ] {
                let mut payload = Vec::new();
                codec.encode_reply(&reply, &mut payload);
                assert_eq!(ours(codec, &payload), reference(codec, &payload));
            }
        }
    }

    #[test]
    fn skips_unknown_keys_in_any_order() {
        // {"extra": [1, {"a": nil}], "message": {"data": bin"hi", "x": 1.5f64, "offset": 7, "room": "r"}}
        let mut payload = vec![0x82, 0xA5];
        payload.extend_from_slice(b"extra");
        payload.extend_from_slice(&[0x92, 0x01, 0x81, 0xA1, b'a', 0xC0]);
        payload.push(0xA7);
        payload.extend_from_slice(b"message");
        payload.push(0x84);
        payload.extend_from_slice(&[0xA4, b'd', b'a', b't', b'a', 0xC4, 2, b'h', b'i']);
        payload.extend_from_slice(&[0xA1, b'x', 0xCB, 0, 0, 0, 0, 0, 0, 0xF8, 0x3F]);
        payload.extend_from_slice(&[0xA6, b'o', b'f', b'f', b's', b'e', b't', 0x07]);
        payload.extend_from_slice(&[0xA4, b'r', b'o', b'o', b'm', 0xA1, b'r']);
        assert_eq!(
            decode(Codec::MsgPack, &payload),
            Ok(Envelope::Message {
                room: b"r",
                offset: 7,
                data: b"hi"
            })
        );
    }

    #[test]
    fn the_server_order_shortcut_agrees_with_the_general_reader() {
        let room = RoomName::new("chat.lobby").unwrap();
        for (offset, len) in [(0u64, 0usize), (127, 8), (128, 300), (u64::MAX, 70_000)] {
            let data = vec![7u8; len];
            let mut payload = Vec::new();
            Codec::MsgPack.encode_message(&room, Offset(offset), &data, &mut payload);
            let fast = msgpack::delivery_in_server_order(&payload).expect("server order");
            // The general reader alone: the same bytes behind an unknown key.
            let mut wrapped = vec![0x82, 0xA1, b'x', 0xC0];
            wrapped.extend_from_slice(&payload[1..]);
            assert!(msgpack::delivery_in_server_order(&wrapped).is_none());
            assert_eq!(decode(Codec::MsgPack, &wrapped), Ok(fast));
        }
    }

    #[test]
    fn refuses_garbage() {
        for codec in Codec::ALL {
            for bad in [&b""[..], &[0xC1], &[0x81, 0xA7], &[0x12, 0x05, 0x0A]] {
                assert_eq!(decode(codec, bad), Err(Malformed), "{codec} {bad:?}");
            }
        }
    }
}
