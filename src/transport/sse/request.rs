//! What a Server-Sent Events request asks for: the rooms, in the order of
//! its `room` parameters, and where to resume each, from `Last-Event-ID`
//! or the `since` parameters. No I/O: the door hands it the query and the
//! header, and answers 400 with the error's text.

use std::collections::HashSet;

use crate::protocol::{Epoch, Offset, RoomName, RoomNameError, StreamPosition};

/// The longest epoch accepted from a client. The server's epochs are 16
/// hex digits; a client's is echoed in event ids until its room's answer,
/// so it is held to a short, safe alphabet (see [`parse_position`]).
const MAX_EPOCH_LEN: usize = 64;

/// One room of a stream, and where to resume it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Wanted {
    pub(super) room: RoomName,
    /// `None`: a plain subscribe (live publications only).
    pub(super) from: Option<StreamPosition>,
}

/// Why a request was answered 400: each variant's text is the body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum BadRequest {
    #[error("name at least one room: ?room=<name>")]
    NoRoom,
    #[error("at most {0} rooms per stream")]
    TooManyRooms(usize),
    #[error(transparent)]
    InvalidRoom(RoomNameError),
    #[error("room {0} is named twice")]
    DuplicateRoom(String),
    #[error("the {0} parameter is not valid percent-encoded UTF-8")]
    BadEncoding(&'static str),
    #[error("since must be <room>:<epoch>:<offset>, the epoch of letters and digits")]
    BadSince,
    #[error("since names room {0}, which is not among the stream's rooms")]
    SinceForOtherRoom(String),
    #[error("since names room {0} twice")]
    SinceTwice(String),
    #[error("Last-Event-ID must hold one <epoch>:<offset> (or nothing) per room, comma-separated, in the order of the room parameters")]
    BadLastEventId,
}

/// The rooms of a request and where to resume each.
///
/// A non-empty `last_event_id` decides every room's resume position, and
/// the `since` parameters are then not looked at: a browser reconnecting
/// sends the query it first sent (its `since` included) with the id of the
/// last event it received, which is newer.
pub(super) fn parse(
    query: Option<&str>,
    last_event_id: Option<&str>,
    max_rooms: usize,
) -> Result<Vec<Wanted>, BadRequest> {
    let mut rooms: Vec<Wanted> = Vec::new();
    let mut names = HashSet::new();
    let mut since: Vec<String> = Vec::new();
    for pair in query.unwrap_or("").split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "room" => {
                let name = decode(value).ok_or(BadRequest::BadEncoding("room"))?;
                let room = RoomName::new(&name).map_err(BadRequest::InvalidRoom)?;
                if !names.insert(name.clone()) {
                    return Err(BadRequest::DuplicateRoom(name));
                }
                if rooms.len() == max_rooms {
                    return Err(BadRequest::TooManyRooms(max_rooms));
                }
                rooms.push(Wanted { room, from: None });
            }
            "since" => since.push(decode(value).ok_or(BadRequest::BadEncoding("since"))?),
            // `token` is the door's; others (cache busters) are ignored.
            _ => {}
        }
    }
    if rooms.is_empty() {
        return Err(BadRequest::NoRoom);
    }
    match last_event_id.filter(|id| !id.is_empty()) {
        Some(id) => {
            let entries: Vec<&str> = id.split(',').collect();
            if entries.len() != rooms.len() {
                return Err(BadRequest::BadLastEventId);
            }
            for (wanted, entry) in rooms.iter_mut().zip(entries) {
                if !entry.is_empty() {
                    wanted.from = Some(parse_position(entry).ok_or(BadRequest::BadLastEventId)?);
                }
            }
        }
        None => {
            for entry in since {
                // Room names may hold `:`; an epoch and an offset never do.
                let (room, position) = entry
                    .rsplitn(3, ':')
                    .nth(2)
                    .map(|room| (room, &entry[room.len() + 1..]))
                    .ok_or(BadRequest::BadSince)?;
                let position = parse_position(position).ok_or(BadRequest::BadSince)?;
                let wanted = rooms
                    .iter_mut()
                    .find(|w| w.room.as_str() == room)
                    .ok_or_else(|| BadRequest::SinceForOtherRoom(room.to_owned()))?;
                if wanted.from.is_some() {
                    return Err(BadRequest::SinceTwice(room.to_owned()));
                }
                wanted.from = Some(position);
            }
        }
    }
    Ok(rooms)
}

/// `<epoch>:<offset>`: an epoch of 1 to 64 ASCII letters and digits, and a
/// decimal offset. The alphabet keeps a client's epoch safe to echo in an
/// event's `id:` line (no line break, no `,` or `:`).
pub(super) fn parse_position(text: &str) -> Option<StreamPosition> {
    let (epoch, offset) = text.split_once(':')?;
    let epoch_ok = (1..=MAX_EPOCH_LEN).contains(&epoch.len())
        && epoch.bytes().all(|b| b.is_ascii_alphanumeric());
    let offset_ok = !offset.is_empty() && offset.bytes().all(|b| b.is_ascii_digit());
    if !epoch_ok || !offset_ok {
        return None;
    }
    Some(StreamPosition {
        epoch: Epoch(epoch.to_owned()),
        offset: Offset(offset.parse().ok()?),
    })
}

/// Percent-decodes a query value into UTF-8. `+` stays `+`: a room name
/// may hold one, and never a space (which `+` would stand for in a form).
fn decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl Wanted {
    /// A room of a request, for tests.
    #[cfg(test)]
    fn new(room: &str, from: Option<(&str, u64)>) -> Wanted {
        Wanted {
            room: RoomName::new(room).unwrap(),
            from: from.map(|(epoch, offset)| StreamPosition {
                epoch: Epoch(epoch.to_owned()),
                offset: Offset(offset),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_come_in_order_percent_decoded_with_other_parameters_ignored() {
        let rooms = parse(
            Some("room=a&token=x.y.z&room=caf%C3%A9&_=17&room=a+b"),
            None,
            64,
        );
        assert_eq!(
            rooms,
            Ok(vec![
                Wanted::new("a", None),
                Wanted::new("café", None),
                Wanted::new("a+b", None),
            ])
        );
    }

    #[test]
    fn bad_room_lists_are_refused_for_a_stated_reason() {
        assert_eq!(parse(None, None, 64), Err(BadRequest::NoRoom));
        assert_eq!(parse(Some("token=t"), None, 64), Err(BadRequest::NoRoom));
        assert_eq!(
            parse(Some("room=a&room=a"), None, 64),
            Err(BadRequest::DuplicateRoom("a".into()))
        );
        assert_eq!(
            parse(Some("room=a&room=b&room=c"), None, 2),
            Err(BadRequest::TooManyRooms(2))
        );
        assert!(matches!(
            parse(Some("room="), None, 64),
            Err(BadRequest::InvalidRoom(_))
        ));
        assert!(matches!(
            parse(Some("room=a%20b"), None, 64),
            Err(BadRequest::InvalidRoom(_))
        ));
        assert_eq!(
            parse(Some("room=%zz"), None, 64),
            Err(BadRequest::BadEncoding("room"))
        );
        assert_eq!(
            parse(Some("room=%ff"), None, 64),
            Err(BadRequest::BadEncoding("room"))
        );
    }

    #[test]
    fn since_names_a_room_and_its_position_even_when_the_room_holds_colons() {
        let rooms = parse(
            Some("room=a:b&room=c&since=a%3Ab:00ff00ff00ff00ff:7"),
            None,
            64,
        );
        assert_eq!(
            rooms,
            Ok(vec![
                Wanted::new("a:b", Some(("00ff00ff00ff00ff", 7))),
                Wanted::new("c", None),
            ])
        );
        for bad in [
            "a:e", "a:e:x", "a::3", ":e:3", "a:e:-1", "a:e f:3", "a:e:+3",
        ] {
            let query = format!("room=a&since={bad}");
            assert!(parse(Some(&query), None, 64).is_err(), "since={bad}");
        }
        assert_eq!(
            parse(Some("room=a&since=b:e:1"), None, 64),
            Err(BadRequest::SinceForOtherRoom("b".into()))
        );
        assert_eq!(
            parse(Some("room=a&since=a:e:1&since=a:e:2"), None, 64),
            Err(BadRequest::SinceTwice("a".into()))
        );
    }

    #[test]
    fn last_event_id_holds_one_position_per_room_and_outranks_since() {
        let rooms = parse(Some("room=a&room=b&since=a:old:1"), Some("e1:5,"), 64);
        assert_eq!(
            rooms,
            Ok(vec![
                Wanted::new("a", Some(("e1", 5))),
                Wanted::new("b", None)
            ])
        );
        assert_eq!(
            parse(Some("room=a"), Some("e1:5"), 64),
            Ok(vec![Wanted::new("a", Some(("e1", 5)))])
        );
        assert_eq!(
            parse(Some("room=a&since=a:e:2"), Some(""), 64),
            Ok(vec![Wanted::new("a", Some(("e", 2)))]),
            "an empty Last-Event-ID is none"
        );
        for bad in [
            "e1:5",
            "e1:5,e2:6,e3:7",
            "e1:5,x",
            "e1:5,e2:",
            "e\n1:5,e2:6",
        ] {
            assert_eq!(
                parse(Some("room=a&room=b"), Some(bad), 64),
                Err(BadRequest::BadLastEventId),
                "{bad:?}"
            );
        }
        let long = format!("{}:1", "a".repeat(65));
        assert_eq!(
            parse(Some("room=a"), Some(&long), 64),
            Err(BadRequest::BadLastEventId)
        );
    }
}
