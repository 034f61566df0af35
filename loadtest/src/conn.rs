//! One generator connection: TCP connect (optionally from a chosen source
//! address), the WebSocket upgrade, a subscribe, and the publish frame
//! template that publishers stamp.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use roomcast::protocol::{ClientOp, ClientRequest, Codec, RequestId, RoomName};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

use crate::cli::Target;
use crate::envelope::{self, Envelope};
use crate::ws::{self, Frame, Parsed, ReadBuffer, WsError};

/// Time allowed for connect + upgrade (+ subscribe) of one connection.
pub(crate) const SETUP_TIMEOUT: Duration = Duration::from_secs(15);

/// The request id of a subscribe during setup.
const SUBSCRIBE_ID: u64 = 1;

/// Why a connection could not be set up.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SetupError {
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("{0}")]
    WebSocket(#[from] WsError),
    #[error("subscribe refused: error {code}: {message}")]
    Refused { code: u32, message: String },
    #[error("server sent an envelope we cannot decode")]
    Malformed,
    #[error("server closed the connection (code {0:?})")]
    Closed(Option<u16>),
    #[error("setup took longer than {SETUP_TIMEOUT:?}")]
    Timeout,
}

/// How to open a connection.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ConnectOptions {
    /// Bind to this source address (port chosen by the kernel) first.
    pub(crate) source: Option<IpAddr>,
    /// `SO_RCVBUF`, set before connecting (slow subscribers use a small one).
    pub(crate) recv_buffer: Option<u32>,
    /// Initial size of the read buffer.
    pub(crate) read_capacity: usize,
}

/// An upgraded connection.
pub(crate) struct Conn {
    pub(crate) stream: TcpStream,
    /// Bytes read and not parsed yet.
    pub(crate) buffer: ReadBuffer,
    /// This connection's masking key.
    pub(crate) key: [u8; 4],
    pub(crate) codec: Codec,
}

impl Conn {
    /// Connects and upgrades; `number` picks the masking key.
    pub(crate) async fn open(
        target: &Target,
        number: u64,
        options: ConnectOptions,
    ) -> Result<Conn, SetupError> {
        let socket = match target.addr {
            SocketAddr::V4(_) => TcpSocket::new_v4(),
            SocketAddr::V6(_) => TcpSocket::new_v6(),
        }
        .map_err(SetupError::Connect)?;
        if let Some(size) = options.recv_buffer {
            socket
                .set_recv_buffer_size(size)
                .map_err(SetupError::Connect)?;
        }
        if let Some(source) = options.source {
            socket
                .bind(SocketAddr::new(source, 0))
                .map_err(SetupError::Connect)?;
        }
        let mut stream = socket
            .connect(target.addr)
            .await
            .map_err(SetupError::Connect)?;
        stream.set_nodelay(true).map_err(SetupError::Connect)?;
        let mut buffer = ReadBuffer::with_capacity(options.read_capacity);
        ws::handshake(
            &mut stream,
            &target.host,
            &target.path,
            target.codec,
            &mut buffer,
        )
        .await?;
        Ok(Conn {
            stream,
            buffer,
            key: ws::mask_key(number),
            codec: target.codec,
        })
    }

    /// Subscribes to `room` and waits for the ack; returns the room's
    /// current offset (the next delivery has offset + 1).
    pub(crate) async fn subscribe(&mut self, room: &RoomName) -> Result<u64, SetupError> {
        let envelope = self.codec.encode_request(&ClientRequest {
            id: RequestId(SUBSCRIBE_ID),
            op: ClientOp::subscribe(room.clone()),
        });
        let mut frame = Vec::with_capacity(envelope.len() + 14);
        ws::write_masked_frame(ws::opcode::BINARY, &envelope, self.key, &mut frame);
        self.stream.write_all(&frame).await.map_err(WsError::from)?;
        loop {
            let (frame, used) = match ws::parse_frame(self.buffer.data())? {
                Parsed::Frame(frame, used) => (frame, used),
                Parsed::Incomplete(need) => {
                    let read = self.buffer.fill(&mut self.stream, need, usize::MAX).await;
                    if read.map_err(WsError::from)? == 0 {
                        return Err(SetupError::Closed(None));
                    }
                    continue;
                }
            };
            let mut pong = None;
            match frame {
                Frame::Binary(payload) => match envelope::decode(self.codec, payload) {
                    Ok(Envelope::Ack { id, offset }) if id == SUBSCRIBE_ID => {
                        self.buffer.consume(used);
                        return Ok(offset);
                    }
                    Ok(Envelope::Error { id, code, message }) if id == SUBSCRIBE_ID => {
                        return Err(SetupError::Refused {
                            code,
                            message: String::from_utf8_lossy(message).into_owned(),
                        });
                    }
                    // Nothing is published before every subscriber is in.
                    Ok(_) => {}
                    Err(_) => return Err(SetupError::Malformed),
                },
                Frame::Ping(payload) => pong = Some(self.pong_frame(payload)),
                Frame::Close(code) => return Err(SetupError::Closed(code)),
                Frame::Pong | Frame::Other(_) => {}
            }
            self.buffer.consume(used);
            if let Some(pong) = pong {
                self.stream.write_all(&pong).await.map_err(WsError::from)?;
            }
        }
    }

    /// The masked pong answering a ping with `payload`.
    pub(crate) fn pong_frame(&self, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(payload.len() + 14);
        ws::write_masked_frame(ws::opcode::PONG, payload, self.key, &mut out);
        out
    }

    /// The masked close frame (1000) a connection sends when it is done.
    pub(crate) fn close_frame(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16);
        ws::write_masked_frame(
            ws::opcode::CLOSE,
            &1000u16.to_be_bytes(),
            self.key,
            &mut out,
        );
        out
    }
}

/// The first 8 bytes of `data` of the publication that closes a
/// publisher's run: "no more from me".
pub(crate) const END_MARKER: u64 = u64::MAX;

/// A masked publish frame built once; each publish copies it and stamps
/// the send time into the first 8 bytes of `data`.
pub(crate) struct PublishTemplate {
    frame: Vec<u8>,
    /// Where the timestamp sits in `frame`.
    stamp_at: usize,
    /// The masking key bytes that apply to the timestamp's 8 bytes.
    stamp_mask: [u8; 8],
}

impl PublishTemplate {
    /// A publish of `payload` bytes to `room` with request id `id` (0: no ack).
    pub(crate) fn new(
        codec: Codec,
        room: &RoomName,
        payload: usize,
        id: u64,
        key: [u8; 4],
    ) -> PublishTemplate {
        // Filler the server never looks at; the stamp overwrites the start.
        let data: Vec<u8> = (0..payload).map(|i| b'a' + (i % 26) as u8).collect();
        let envelope = codec.encode_request(&ClientRequest {
            id: RequestId(id),
            op: ClientOp::publish(room.clone(), Bytes::from(data.clone())),
        });
        // Both codecs write `data` last (msgpack: the last entry of the
        // publish map; protobuf: field 2 of Publish, the last field).
        assert!(
            envelope.ends_with(&data),
            "publish envelope does not end with its data"
        );
        let data_at = envelope.len() - payload;
        let mut frame = Vec::with_capacity(envelope.len() + 14);
        let payload_at = ws::write_masked_frame(ws::opcode::BINARY, &envelope, key, &mut frame);
        let mut stamp_mask = [0u8; 8];
        for (i, m) in stamp_mask.iter_mut().enumerate() {
            *m = key[(data_at + i) & 3];
        }
        PublishTemplate {
            frame,
            stamp_at: payload_at + data_at,
            stamp_mask,
        }
    }

    /// Bytes of one publish frame on the wire.
    pub(crate) fn len(&self) -> usize {
        self.frame.len()
    }

    /// Appends one publish frame carrying `stamp`.
    pub(crate) fn write(&self, stamp: u64, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&self.frame);
        let at = start + self.stamp_at;
        let stamp = stamp.to_le_bytes();
        for i in 0..8 {
            out[at + i] = stamp[i] ^ self.stamp_mask[i];
        }
    }
}

/// The send timestamp in a delivered `data`, if it has one.
pub(crate) fn read_stamp(data: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = data.get(..8)?.try_into().ok()?;
    Some(u64::from_le_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unmasks a client frame the way the server does.
    fn unmask(frame: &[u8]) -> Vec<u8> {
        let len_code = frame[1] & 0x7F;
        let header = match len_code {
            126 => 4,
            127 => 10,
            _ => 2,
        };
        let key = &frame[header..header + 4];
        frame[header + 4..]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ key[i & 3])
            .collect()
    }

    #[test]
    fn a_stamped_publish_decodes_on_the_server_with_the_stamp() {
        let room = RoomName::new("load-1-0").unwrap();
        for codec in Codec::ALL {
            for payload in [8, 9, 128, 1000] {
                for id in [0, 1] {
                    let template = PublishTemplate::new(codec, &room, payload, id, ws::mask_key(3));
                    let mut out = Vec::new();
                    template.write(0x0102_0304_0506_0708, &mut out);
                    template.write(END_MARKER, &mut out);
                    assert_eq!(out.len(), 2 * template.len());
                    for (frame, stamp) in [
                        (&out[..template.len()], 0x0102_0304_0506_0708),
                        (&out[template.len()..], END_MARKER),
                    ] {
                        let envelope = Bytes::from(unmask(frame));
                        let request = codec.decode_request(&envelope).unwrap();
                        assert_eq!(request.id, RequestId(id));
                        match request.op {
                            ClientOp::Publish { room: r, data, .. } => {
                                assert_eq!(r, room);
                                assert_eq!(data.len(), payload);
                                assert_eq!(read_stamp(&data), Some(stamp));
                            }
                            other => panic!("not a publish: {other:?}"),
                        }
                    }
                }
            }
        }
    }
}
