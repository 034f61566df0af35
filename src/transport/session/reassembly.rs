//! Data frames into messages: a fragmented message is put back together
//! within `max_message_size` and `max_fragments`, and every ordering rule of
//! RFC 6455 §5.4 is checked. No I/O: frames in, messages or the violation to
//! close with out, so every rule is unit-tested here.

use bytes::{Bytes, BytesMut};

use crate::limits::close_code;

/// Why a connection must be closed, and with which code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Violation {
    pub(crate) code: u16,
    pub(crate) reason: &'static str,
}

pub(crate) fn violation(code: u16, reason: &'static str) -> Violation {
    Violation { code, reason }
}

/// A data frame's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DataFrame {
    Binary,
    Text,
    Continuation,
}

/// One complete message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Message {
    pub(crate) payload: Bytes,
    pub(crate) text: bool,
}

/// A fragmented message being put back together.
struct Assembling {
    buffer: BytesMut,
    fragments: usize,
    text: bool,
}

/// One connection's reassembly.
pub(crate) struct Reassembly {
    /// Boxed: a connection keeps this for its life, and most never send a
    /// fragmented message (40 bytes less in every connection's future).
    assembling: Option<Box<Assembling>>,
    /// The bounds, as `u32`s (saturated): 8 bytes less in every
    /// connection's future.
    max_message_size: u32,
    max_fragments: u32,
    /// Text messages are refused (1003) unless allowed (the echo endpoint).
    text_allowed: bool,
}

impl Reassembly {
    pub(crate) fn new(max_message_size: usize, max_fragments: usize, text_allowed: bool) -> Self {
        Reassembly {
            assembling: None,
            max_message_size: u32::try_from(max_message_size).unwrap_or(u32::MAX),
            max_fragments: u32::try_from(max_fragments).unwrap_or(u32::MAX),
            text_allowed,
        }
    }

    /// Takes one data frame. An unfragmented message is passed on without
    /// a copy; fragments are copied into one buffer.
    pub(crate) fn frame(
        &mut self,
        kind: DataFrame,
        fin: bool,
        payload: Bytes,
    ) -> Result<Option<Message>, Violation> {
        match kind {
            DataFrame::Binary | DataFrame::Text => {
                if self.assembling.is_some() {
                    return Err(violation(
                        close_code::PROTOCOL_ERROR,
                        "new message inside a fragmented one",
                    ));
                }
                let text = kind == DataFrame::Text;
                if text && !self.text_allowed {
                    return Err(violation(
                        close_code::UNSUPPORTED_DATA,
                        "text frames are not supported",
                    ));
                }
                if fin {
                    return Ok(Some(Message { payload, text }));
                }
                self.assembling = Some(Box::new(Assembling {
                    buffer: BytesMut::from(&payload[..]),
                    fragments: 1,
                    text,
                }));
                Ok(None)
            }
            DataFrame::Continuation => {
                let Some(assembling) = self.assembling.as_mut() else {
                    return Err(violation(
                        close_code::PROTOCOL_ERROR,
                        "continuation without a message",
                    ));
                };
                assembling.fragments += 1;
                if assembling.fragments > self.max_fragments as usize {
                    return Err(violation(close_code::MESSAGE_TOO_BIG, "too many fragments"));
                }
                if assembling.buffer.len() + payload.len() > self.max_message_size as usize {
                    return Err(violation(close_code::MESSAGE_TOO_BIG, "message too big"));
                }
                assembling.buffer.extend_from_slice(&payload);
                if !fin {
                    return Ok(None);
                }
                Ok(self.assembling.take().map(|a| Message {
                    payload: a.buffer.freeze(),
                    text: a.text,
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(b: &'static [u8]) -> Bytes {
        Bytes::from_static(b)
    }

    #[test]
    fn a_whole_message_passes_through_without_a_copy() {
        let mut r = Reassembly::new(100, 4, false);
        let payload = bytes(b"hello");
        let message = r.frame(DataFrame::Binary, true, payload.clone()).unwrap();
        let message = message.expect("complete");
        assert_eq!(message.payload.as_ptr(), payload.as_ptr());
        assert!(!message.text);
    }

    #[test]
    fn fragments_are_joined_in_order() {
        let mut r = Reassembly::new(100, 4, false);
        assert_eq!(r.frame(DataFrame::Binary, false, bytes(b"ab")), Ok(None));
        assert_eq!(
            r.frame(DataFrame::Continuation, false, bytes(b"cd")),
            Ok(None)
        );
        let message = r.frame(DataFrame::Continuation, true, bytes(b"e")).unwrap();
        assert_eq!(message.map(|m| m.payload), Some(bytes(b"abcde")));
        // And the next message starts afresh.
        assert!(r
            .frame(DataFrame::Binary, true, bytes(b"x"))
            .unwrap()
            .is_some());
    }

    #[test]
    fn ordering_rules_are_protocol_errors() {
        let mut r = Reassembly::new(100, 4, false);
        let stray = r.frame(DataFrame::Continuation, true, bytes(b"x"));
        assert_eq!(stray.map_err(|v| v.code), Err(1002));
        let mut r = Reassembly::new(100, 4, false);
        r.frame(DataFrame::Binary, false, bytes(b"x")).unwrap();
        let interleaved = r.frame(DataFrame::Binary, true, bytes(b"y"));
        assert_eq!(interleaved.map_err(|v| v.code), Err(1002));
    }

    #[test]
    fn size_and_fragment_limits_close_with_1009() {
        let mut r = Reassembly::new(4, 8, false);
        r.frame(DataFrame::Binary, false, bytes(b"abc")).unwrap();
        let big = r.frame(DataFrame::Continuation, true, bytes(b"de"));
        assert_eq!(big, Err(violation(1009, "message too big")));
        let mut r = Reassembly::new(100, 2, false);
        r.frame(DataFrame::Binary, false, bytes(b"a")).unwrap();
        r.frame(DataFrame::Continuation, false, bytes(b"b"))
            .unwrap();
        let many = r.frame(DataFrame::Continuation, true, bytes(b"c"));
        assert_eq!(many, Err(violation(1009, "too many fragments")));
    }

    #[test]
    fn text_is_refused_with_1003_unless_allowed() {
        let mut broker = Reassembly::new(100, 4, false);
        let text = broker.frame(DataFrame::Text, true, bytes(b"hi"));
        assert_eq!(text.map_err(|v| v.code), Err(1003));
        let mut echo = Reassembly::new(100, 4, true);
        let text = echo.frame(DataFrame::Text, false, bytes(b"h")).unwrap();
        assert!(text.is_none());
        let whole = echo
            .frame(DataFrame::Continuation, true, bytes(b"i"))
            .unwrap();
        assert_eq!(
            whole,
            Some(Message {
                payload: bytes(b"hi"),
                text: true
            })
        );
    }
}
