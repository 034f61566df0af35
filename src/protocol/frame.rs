//! Server WebSocket frames, built once and shared.
//!
//! Server frames are unmasked (RFC 6455 §5.1), so one frame's bytes are valid
//! for every connection: a publication is encoded once per codec into a
//! single [`Bytes`] and every subscriber's queue holds a reference to it.

use bytes::Bytes;

use super::{ClientInfo, Codec, Offset, PresenceChange, Reply, RoomName};

/// The longest WebSocket frame header a server writes (no mask).
pub const MAX_HEADER_LEN: usize = 10;

const FIN: u8 = 0x80;

/// WebSocket opcodes the server writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    Text = 0x1,
    Binary = 0x2,
    Close = 0x8,
    Ping = 0x9,
    Pong = 0xA,
}

/// Builds one unmasked final frame around an envelope written by `write`.
///
/// The envelope is written after room for the longest header, then the real
/// header is placed right before it, so the payload is copied exactly once.
fn build(opcode: Opcode, capacity_hint: usize, write: impl FnOnce(&mut Vec<u8>)) -> Bytes {
    let mut buf = Vec::with_capacity(MAX_HEADER_LEN + capacity_hint);
    buf.resize(MAX_HEADER_LEN, 0);
    write(&mut buf);
    let len = buf.len() - MAX_HEADER_LEN;
    let mut header = [0u8; MAX_HEADER_LEN];
    let header_len = write_header(opcode, len, &mut header);
    let start = MAX_HEADER_LEN - header_len;
    buf[start..MAX_HEADER_LEN].copy_from_slice(&header[..header_len]);
    Bytes::from(buf).slice(start..)
}

/// Writes a frame header for a payload of `len` bytes; returns its length.
pub fn write_header(opcode: Opcode, len: usize, out: &mut [u8; MAX_HEADER_LEN]) -> usize {
    out[0] = FIN | opcode as u8;
    if len < 126 {
        out[1] = len as u8;
        2
    } else if let Ok(short) = u16::try_from(len) {
        out[1] = 126;
        out[2..4].copy_from_slice(&short.to_be_bytes());
        4
    } else {
        out[1] = 127;
        out[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    }
}

/// The frame delivering one publication to subscribers using `codec`.
pub fn message(codec: Codec, room: &RoomName, offset: Offset, data: &[u8]) -> Bytes {
    build(
        Opcode::Binary,
        40 + room.as_bytes().len() + data.len(),
        |out| codec.encode_message(room, offset, data, out),
    )
}

/// A data frame carrying `payload` as it is (the echo endpoint).
pub fn data(opcode: Opcode, payload: &[u8]) -> Bytes {
    build(opcode, payload.len(), |out| out.extend_from_slice(payload))
}

/// The frame carrying one reply.
pub fn reply(codec: Codec, reply: &Reply) -> Bytes {
    build(Opcode::Binary, 48, |out| codec.encode_reply(reply, out))
}

/// The frame carrying a join or leave event.
pub fn presence(codec: Codec, change: PresenceChange, room: &RoomName, info: &ClientInfo) -> Bytes {
    build(Opcode::Binary, 64 + room.as_bytes().len(), |out| {
        codec.encode_presence(change, room, info, out)
    })
}

/// A close frame with a status code and a reason (truncated to fit 125 bytes
/// on a character boundary).
pub fn close(code: u16, reason: &str) -> Bytes {
    let mut cut = reason.len().min(123);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    build(Opcode::Close, 2 + cut, |out| {
        out.extend_from_slice(&code.to_be_bytes());
        out.extend_from_slice(&reason.as_bytes()[..cut]);
    })
}

/// A control frame (ping or pong) with at most 125 bytes of payload.
pub fn control(opcode: Opcode, payload: &[u8]) -> Bytes {
    let payload = &payload[..payload.len().min(125)];
    build(opcode, payload.len(), |out| out.extend_from_slice(payload))
}

/// The payload of a binary frame built here: the envelope inside, for a
/// front door that reads the shared frames rather than writing them to a
/// WebSocket (Server-Sent Events). `None` for any other frame (control,
/// text) and for bytes that are not one whole frame.
pub fn binary_payload(frame: &Bytes) -> Option<Bytes> {
    let (&first, rest) = frame.split_first()?;
    if first != FIN | Opcode::Binary as u8 {
        return None;
    }
    let (&short, rest) = rest.split_first()?;
    let (len, header) = match short {
        0..=125 => (usize::from(short), 2),
        126 => (
            usize::from(u16::from_be_bytes(rest.get(..2)?.try_into().ok()?)),
            4,
        ),
        127 => (
            usize::try_from(u64::from_be_bytes(rest.get(..8)?.try_into().ok()?)).ok()?,
            10,
        ),
        // A mask bit: a client's frame, never one built here.
        _ => return None,
    };
    (frame.len() == header + len).then(|| frame.slice(header..))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_payload_of_a_built_frame_is_the_envelope_for_every_header_length() {
        for len in [0, 125, 126, 65_535, 65_536] {
            let payload = vec![7u8; len];
            let frame = data(Opcode::Binary, &payload);
            assert_eq!(
                binary_payload(&frame).as_deref(),
                Some(&payload[..]),
                "{len} bytes"
            );
        }
        assert_eq!(binary_payload(&data(Opcode::Text, b"x")), None);
        assert_eq!(binary_payload(&control(Opcode::Ping, b"")), None);
        let whole = data(Opcode::Binary, b"abc");
        assert_eq!(binary_payload(&whole.slice(..whole.len() - 1)), None);
        assert_eq!(binary_payload(&Bytes::new()), None);
    }
}
