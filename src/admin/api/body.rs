//! Reading a request: its body (bounded by `api_max_body_bytes`), in JSON
//! or MessagePack as its `Content-Type` says, and its query string. A
//! payload is base64 text in JSON and raw `bin` in MessagePack; answers
//! are always JSON, with payloads in base64.
//!
//! Nothing here trusts the peer: every failure is an [`ApiError`] (400,
//! 413 or 415), never a panic. What it does not check: a room name's
//! rules and the operations' own bounds (the caller's).

use std::fmt;
use std::time::Duration;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE};
use hyper::HeaderMap;
use serde::de::{self, DeserializeOwned, Visitor};
use serde::{Deserialize, Deserializer};

use crate::limits::{API_DISCARD_MAX, MAX_ENVELOPE_DEPTH};

use super::error::ApiError;

/// How a request body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyFormat {
    /// `application/json` (with any parameters, such as a charset).
    Json,
    /// `application/msgpack`, or its older names `application/x-msgpack`
    /// and `application/vnd.msgpack`.
    MsgPack,
}

impl BodyFormat {
    /// The format a request's `Content-Type` names; 415 for any other, or
    /// for none.
    pub(crate) fn of(headers: &HeaderMap) -> Result<BodyFormat, ApiError> {
        let value = headers
            .get(CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default();
        let essence = value
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "application/json" => Ok(BodyFormat::Json),
            "application/msgpack" | "application/x-msgpack" | "application/vnd.msgpack" => {
                Ok(BodyFormat::MsgPack)
            }
            _ => Err(ApiError::UnsupportedMediaType(value)),
        }
    }
}

/// Reads a whole body of at most `limit` bytes. A larger one is 413: when
/// it is not much larger ([`API_DISCARD_MAX`]), the rest is read and thrown
/// away first (within `patience`), so the client reads the 413 rather than
/// a reset; otherwise the connection is closed.
pub(crate) async fn read(
    headers: &HeaderMap,
    mut body: Incoming,
    limit: usize,
    patience: Duration,
) -> Result<Bytes, ApiError> {
    let too_large = |unread| ApiError::TooLarge {
        what: "the request body",
        limit,
        unread,
    };
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit.saturating_add(API_DISCARD_MAX)) {
        return Err(too_large(true));
    }
    let mut buf = BytesMut::new();
    let mut over = false;
    let mut seen = 0usize;
    let reading = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|error| {
                ApiError::InvalidField(format!("the body was cut off: {error}"))
            })?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            seen = seen.saturating_add(data.len());
            if seen > limit.saturating_add(API_DISCARD_MAX) {
                return Err(too_large(true));
            }
            if seen > limit {
                over = true;
                buf.clear();
            } else {
                buf.extend_from_slice(&data);
            }
        }
        Ok(())
    };
    match tokio::time::timeout(patience, reading).await {
        Ok(Ok(())) if over => Err(too_large(false)),
        Ok(Ok(())) => Ok(buf.freeze()),
        Ok(Err(error)) => Err(error),
        Err(_) if over => Err(too_large(true)),
        Err(_) => Err(ApiError::InvalidField(format!(
            "the body did not arrive within {patience:?}"
        ))),
    }
}

/// Decodes a body into `T`. A syntax error, a wrong type, a missing field:
/// 400 with error 101, naming what is wrong.
pub(crate) fn decode<T: DeserializeOwned>(format: BodyFormat, body: &[u8]) -> Result<T, ApiError> {
    let malformed = |error: &dyn fmt::Display| ApiError::InvalidField(format!("{error}"));
    match format {
        BodyFormat::Json => serde_json::from_slice(body).map_err(|e| malformed(&e)),
        BodyFormat::MsgPack => {
            let mut decoder = rmp_serde::Deserializer::from_read_ref(body);
            // The API's bodies nest four levels; deeper input is refused
            // before it costs stack.
            decoder.set_max_depth(MAX_ENVELOPE_DEPTH);
            T::deserialize(&mut decoder).map_err(|e| malformed(&e))
        }
    }
}

/// Base64 as the API reads it: the standard alphabet, padding optional.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A payload in a request: a base64 string (JSON, or a MessagePack `str`),
/// or raw bytes (a MessagePack `bin`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Payload(pub(crate) Bytes);

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Payload, D::Error> {
        struct PayloadVisitor;

        impl Visitor<'_> for PayloadVisitor {
            type Value = Payload;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a base64 string or MessagePack bin")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<Payload, E> {
                LENIENT
                    .decode(text)
                    .map(|bytes| Payload(Bytes::from(bytes)))
                    .map_err(|error| E::custom(format_args!("data is not base64: {error}")))
            }

            fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<Payload, E> {
                Ok(Payload(Bytes::copy_from_slice(bytes)))
            }
        }

        deserializer.deserialize_any(PayloadVisitor)
    }
}

/// Bytes as an answer carries them: standard base64 with padding.
pub(crate) fn base64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// A query string's parameters, percent-decoded. A name given twice is
/// refused (400), so that no two readers of one URL disagree on it.
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    pub(crate) fn parse(query: Option<&str>) -> Result<Query, ApiError> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for (name, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            if pairs.iter().any(|(seen, _)| *seen == name) {
                return Err(ApiError::InvalidField(format!(
                    "query parameter {name} given twice"
                )));
            }
            pairs.push((name.into_owned(), value.into_owned()));
        }
        Ok(Query(pairs))
    }

    /// A parameter's text, if given.
    pub(crate) fn text(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// A required parameter's text.
    pub(crate) fn required(&self, name: &str) -> Result<&str, ApiError> {
        self.text(name)
            .ok_or_else(|| ApiError::InvalidField(format!("query parameter {name} is required")))
    }

    /// An optional number (a default when absent).
    pub(crate) fn number<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T, ApiError>
    where
        T::Err: fmt::Display,
    {
        match self.text(name) {
            None => Ok(default),
            Some(text) => text.parse().map_err(|error| {
                ApiError::InvalidField(format!("query parameter {name}={text:?}: {error}"))
            }),
        }
    }

    /// An optional boolean, `true` or `false` (false when absent).
    pub(crate) fn flag(&self, name: &str) -> Result<bool, ApiError> {
        match self.text(name) {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(other) => Err(ApiError::InvalidField(format!(
                "query parameter {name}={other:?}: expected true or false"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Publish {
        room: String,
        data: Payload,
    }

    #[test]
    fn a_payload_is_base64_in_json_and_bin_in_msgpack() {
        let json: Publish = decode(BodyFormat::Json, br#"{"room":"a","data":"aGk"}"#).unwrap();
        assert_eq!((json.room.as_str(), &json.data.0[..]), ("a", &b"hi"[..]));
        #[derive(serde::Serialize)]
        struct Raw<'a> {
            room: &'a str,
            #[serde(with = "serde_bytes")]
            data: &'a [u8],
        }
        let packed = rmp_serde::to_vec_named(&Raw {
            room: "a",
            data: b"\xff\x00",
        })
        .unwrap();
        let msgpack: Publish = decode(BodyFormat::MsgPack, &packed).unwrap();
        assert_eq!(&msgpack.data.0[..], b"\xff\x00");
    }

    #[test]
    fn bad_bodies_are_invalid_fields_not_panics() {
        for body in [
            &b"{"[..],
            br#"{"room":1,"data":""}"#,
            br#"{"room":"a","data":"not base64!"}"#,
            br#"{"data":""}"#,
            b"\xc1",
        ] {
            for format in [BodyFormat::Json, BodyFormat::MsgPack] {
                let error = decode::<Publish>(format, body).unwrap_err();
                assert_eq!(error.code(), 101, "{error}");
            }
        }
        let deep = [0x91u8; 64];
        assert!(decode::<Publish>(BodyFormat::MsgPack, &deep).is_err());
    }

    #[test]
    fn content_types_pick_the_format_and_anything_else_is_415() {
        let mut headers = HeaderMap::new();
        let cases = [
            ("application/json; charset=utf-8", Some(BodyFormat::Json)),
            ("Application/MsgPack", Some(BodyFormat::MsgPack)),
            ("application/x-msgpack", Some(BodyFormat::MsgPack)),
            ("text/plain", None),
            ("application/x-www-form-urlencoded", None),
        ];
        for (value, format) in cases {
            headers.insert(CONTENT_TYPE, value.parse().unwrap());
            assert_eq!(BodyFormat::of(&headers).ok(), format, "{value}");
        }
        headers.remove(CONTENT_TYPE);
        assert_eq!(BodyFormat::of(&headers).unwrap_err().code(), 415);
    }

    #[test]
    fn a_query_is_percent_decoded_and_a_repeated_name_is_refused() {
        let query = Query::parse(Some("room=caf%C3%A9&limit=3&reverse=true")).unwrap();
        assert_eq!(query.required("room").unwrap(), "café");
        assert_eq!(query.number("limit", 0u32).unwrap(), 3);
        assert_eq!(query.number("since", 7u64).unwrap(), 7);
        assert!(query.flag("reverse").unwrap());
        assert_eq!(query.number::<u32>("room", 0).unwrap_err().code(), 101);
        assert!(Query::parse(Some("room=a&room=b")).is_err());
        assert!(Query::parse(None).unwrap().required("room").is_err());
    }
}
