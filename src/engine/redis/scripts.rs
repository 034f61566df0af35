//! The Lua scripts the engine runs, loaded once on every primary and called
//! with EVALSHA, and the readers of their replies. Each script is one
//! atomic step on the server that owns the room's slot; each file says
//! what it takes and returns.

use bytes::Bytes;
use fred::prelude::{Client, Error as RedisError, LuaInterface};
use fred::types::scripts::Script;
use fred::types::Value;

use crate::protocol::{Epoch, Offset, Publication, StreamPosition};

/// Every script, with its SHA-1.
pub(crate) struct Scripts {
    pub(crate) publish: Script,
    pub(crate) follow: Script,
    pub(crate) range: Script,
    pub(crate) history: Script,
    pub(crate) join: Script,
    pub(crate) leave: Script,
    pub(crate) presence: Script,
    pub(crate) refresh: Script,
    pub(crate) rebase: Script,
}

impl Scripts {
    pub(crate) fn new() -> Scripts {
        Scripts {
            publish: Script::from_lua(include_str!("publish.lua")),
            follow: Script::from_lua(include_str!("follow.lua")),
            range: Script::from_lua(include_str!("range.lua")),
            history: Script::from_lua(include_str!("history.lua")),
            join: Script::from_lua(include_str!("join.lua")),
            leave: Script::from_lua(include_str!("leave.lua")),
            presence: Script::from_lua(include_str!("presence.lua")),
            refresh: Script::from_lua(include_str!("refresh.lua")),
            rebase: Script::from_lua(include_str!("rebase.lua")),
        }
    }

    fn all(&self) -> [&Script; 9] {
        [
            &self.publish,
            &self.follow,
            &self.range,
            &self.history,
            &self.join,
            &self.leave,
            &self.presence,
            &self.refresh,
            &self.rebase,
        ]
    }

    /// Loads every script on every primary (`SCRIPT LOAD`).
    pub(crate) async fn load(&self, client: &Client) -> Result<(), RedisError> {
        for script in self.all() {
            script.load(client).await?;
        }
        Ok(())
    }
}

/// Runs `script`, repeating it while the answer says it did not run:
///
/// * NOSCRIPT: the server lost its scripts (restarted, or a new primary
///   after a failover): they are loaded again;
/// * TRYAGAIN, ASK, MOVED: the room's slot is moving between masters of a
///   Redis Cluster. fred follows no redirection for us (its ASKING path
///   reads a reply off a pipelined connection, and would take another
///   command's); it learns the new owner from a MOVED, and the call is
///   repeated every [`SLOT_RETRY`] until `give_up`.
///
/// The command is queued on the first poll of the returned future (fred
/// sends before its first real wait), which is what keeps a room's
/// operations in the order the engine started them.
pub(crate) async fn run(
    client: &Client,
    script: &Script,
    keys: Vec<Bytes>,
    args: Vec<Value>,
    give_up: tokio::time::Instant,
) -> Result<Value, RedisError> {
    let keys: Vec<fred::types::Key> = keys.into_iter().map(Into::into).collect();
    let mut loaded = false;
    loop {
        let call =
            client.evalsha::<Value, _, _, _>(script.sha1().clone(), keys.clone(), args.clone());
        let error = match call.await {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        if error.details().starts_with("NOSCRIPT") && !loaded {
            script.load(client).await?;
            loaded = true;
        } else if slot_moving(&error) && tokio::time::Instant::now() + SLOT_RETRY < give_up {
            tokio::time::sleep(SLOT_RETRY).await;
        } else {
            return Err(error);
        }
    }
}

/// How soon a call refused during a slot migration is repeated.
const SLOT_RETRY: std::time::Duration = std::time::Duration::from_millis(10);

/// Whether the command was refused, unrun, because its slot is moving.
pub(crate) fn slot_moving(error: &RedisError) -> bool {
    let details = error.details();
    details.starts_with("TRYAGAIN")
        || details.starts_with("ASK")
        || details.starts_with("MOVED")
        || *error.kind() == fred::error::ErrorKind::Routing
        || *error.kind() == fred::error::ErrorKind::Cluster
}

/// A reply that is not the shape its script returns: a bug, or another
/// program writing our keys.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("redis answered a {0} script with an unexpected reply")]
pub(crate) struct Malformed(pub(crate) &'static str);

pub(crate) fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.to_string()),
        Value::Bytes(b) => std::str::from_utf8(b).ok().map(str::to_owned),
        Value::Integer(n) => Some(n.to_string()),
        _ => None,
    }
}

pub(crate) fn number(value: &Value) -> Option<u64> {
    match value {
        Value::Integer(n) => u64::try_from(*n).ok(),
        other => text(other)?.parse().ok(),
    }
}

pub(crate) fn bytes(value: Value) -> Option<Bytes> {
    match value {
        Value::Bytes(b) => Some(b),
        Value::String(s) => Some(s.into_inner()),
        _ => None,
    }
}

fn position(epoch: &Value, offset: &Value) -> Option<StreamPosition> {
    Some(StreamPosition {
        epoch: Epoch(text(epoch)?),
        offset: Offset(number(offset)?),
    })
}

/// publish.lua: the position given and whether the key was a duplicate.
pub(crate) fn published(value: Value) -> Result<(StreamPosition, bool), Malformed> {
    let malformed = Malformed("publish");
    let items = value.into_array();
    let [epoch, offset, duplicate] = &items[..] else {
        return Err(malformed);
    };
    let at = position(epoch, offset).ok_or(malformed.clone())?;
    Ok((at, number(duplicate).ok_or(malformed)? == 1))
}

/// follow.lua and rebase.lua (one room): its position.
pub(crate) fn followed(value: Value) -> Result<StreamPosition, Malformed> {
    let items = value.into_array();
    match &items[..] {
        [epoch, offset] => position(epoch, offset).ok_or(Malformed("follow")),
        _ => Err(Malformed("follow")),
    }
}

/// follow.lua (several rooms): each room's position, in order.
pub(crate) fn positions(value: Value) -> Result<Vec<StreamPosition>, Malformed> {
    let items = value.into_array();
    items
        .chunks(2)
        .map(|pair| match pair {
            [epoch, offset] => position(epoch, offset).ok_or(Malformed("follow")),
            _ => Err(Malformed("follow")),
        })
        .collect()
}

/// range.lua: the room's position, and the publications when every one
/// of the range was kept.
pub(crate) struct Range {
    pub(crate) position: StreamPosition,
    pub(crate) publications: Option<Vec<Publication>>,
}

pub(crate) fn range(value: Value) -> Result<Range, Malformed> {
    let malformed = Malformed("range");
    let mut items = value.into_array().into_iter();
    let (Some(epoch), Some(last), Some(complete)) = (items.next(), items.next(), items.next())
    else {
        return Err(malformed);
    };
    let position = position(&epoch, &last).ok_or(malformed.clone())?;
    if number(&complete) != Some(1) {
        return Ok(Range {
            position,
            publications: None,
        });
    }
    let publications = publications(items).ok_or(malformed)?;
    Ok(Range {
        position,
        publications: Some(publications),
    })
}

/// history.lua: the room's position and one page.
pub(crate) fn history(value: Value) -> Result<(StreamPosition, Vec<Publication>), Malformed> {
    let malformed = Malformed("history");
    let mut items = value.into_array().into_iter();
    let (Some(epoch), Some(last)) = (items.next(), items.next()) else {
        return Err(malformed);
    };
    let position = position(&epoch, &last).ok_or(malformed.clone())?;
    Ok((position, publications(items).ok_or(malformed)?))
}

/// Pairs of offset and data.
fn publications(mut items: impl Iterator<Item = Value>) -> Option<Vec<Publication>> {
    let mut out = Vec::new();
    while let Some(offset) = items.next() {
        let offset = Offset(number(&offset)?);
        let data = bytes(items.next()?)?;
        out.push(Publication { offset, data });
    }
    Some(out)
}
