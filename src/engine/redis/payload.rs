//! What travels on a room's shard channel: a 26-byte header, then the data.
//!
//! `[0xB1][kind][epoch: 16 ASCII hex digits][offset: u64 big-endian][data]`.
//! The scripts write it (publish.lua, join.lua, leave.lua); the engine
//! reads it here, slicing the data out of the received buffer without a
//! copy. `0xB1` cannot start UTF-8, so the client library's text check
//! stops at the first byte.

use bytes::Bytes;

use crate::protocol::{ClientInfo, Epoch, Offset, PresenceChange};

const MAGIC: u8 = 0xB1;
const HEADER: usize = 26;

/// One message from a room's channel.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ChannelMessage {
    Publication {
        epoch: Epoch,
        offset: Offset,
        data: Bytes,
    },
    Presence {
        change: PresenceChange,
        info: ClientInfo,
    },
}

/// Why a channel message was not understood: a bug or a foreign writer on
/// our channel, counted and dropped.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a roomcast channel message")]
pub(crate) struct Foreign;

pub(crate) fn decode(message: Bytes) -> Result<ChannelMessage, Foreign> {
    if message.len() < HEADER || message[0] != MAGIC {
        return Err(Foreign);
    }
    let epoch = std::str::from_utf8(&message[2..18]).map_err(|_| Foreign)?;
    let offset = u64::from_be_bytes(message[18..26].try_into().map_err(|_| Foreign)?);
    match message[1] {
        1 => Ok(ChannelMessage::Publication {
            epoch: Epoch(epoch.to_owned()),
            offset: Offset(offset),
            data: message.slice(HEADER..),
        }),
        kind @ (2 | 3) => {
            let change = if kind == 2 {
                PresenceChange::Join
            } else {
                PresenceChange::Leave
            };
            let info = decode_info(&message[HEADER..]).ok_or(Foreign)?;
            Ok(ChannelMessage::Presence { change, info })
        }
        _ => Err(Foreign),
    }
}

/// A presence entry as the presence scripts keep and send it:
/// `joined_at_ms` (u64 BE), the client id's length (u16 BE), the client id,
/// then the user id.
pub(crate) fn encode_info(info: &ClientInfo) -> Vec<u8> {
    let mut out = Vec::with_capacity(10 + info.client.len() + info.user.len());
    out.extend_from_slice(&info.joined_at_ms.to_be_bytes());
    out.extend_from_slice(&(info.client.len() as u16).to_be_bytes());
    out.extend_from_slice(info.client.as_bytes());
    out.extend_from_slice(info.user.as_bytes());
    out
}

pub(crate) fn decode_info(bytes: &[u8]) -> Option<ClientInfo> {
    let joined_at_ms = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
    let len = u16::from_be_bytes(bytes.get(8..10)?.try_into().ok()?) as usize;
    let client = std::str::from_utf8(bytes.get(10..10 + len)?).ok()?;
    let user = std::str::from_utf8(bytes.get(10 + len..)?).ok()?;
    Some(ClientInfo {
        client: client.to_owned(),
        user: user.to_owned(),
        joined_at_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: u8, epoch: &str, offset: u64) -> Vec<u8> {
        let mut out = vec![MAGIC, kind];
        out.extend_from_slice(epoch.as_bytes());
        out.extend_from_slice(&offset.to_be_bytes());
        out
    }

    #[test]
    fn a_publication_is_sliced_out_of_the_message() {
        let mut message = header(1, "00000000deadbeef", 0x0a0a);
        message.extend_from_slice(b"\n\x00data");
        let decoded = decode(Bytes::from(message)).unwrap();
        assert_eq!(
            decoded,
            ChannelMessage::Publication {
                epoch: Epoch("00000000deadbeef".into()),
                offset: Offset(0x0a0a),
                data: Bytes::from_static(b"\n\x00data"),
            }
        );
    }

    #[test]
    fn joins_and_leaves_carry_the_entry() {
        let info = ClientInfo {
            client: "ab12cd34-0-7".into(),
            user: "ada".into(),
            joined_at_ms: 1_700_000_000_123,
        };
        let mut message = header(3, "0000000000000000", 0);
        message.extend_from_slice(&encode_info(&info));
        let decoded = decode(Bytes::from(message)).unwrap();
        let change = PresenceChange::Leave;
        assert_eq!(decoded, ChannelMessage::Presence { change, info });
    }

    #[test]
    fn anything_else_is_foreign() {
        assert_eq!(decode(Bytes::from_static(b"hello")), Err(Foreign));
        let mut wrong_kind = header(9, "0000000000000000", 1);
        wrong_kind.push(0);
        assert_eq!(decode(Bytes::from(wrong_kind)), Err(Foreign));
        let truncated_info = header(2, "0000000000000000", 0);
        assert_eq!(decode(Bytes::from(truncated_info)), Err(Foreign));
    }
}
