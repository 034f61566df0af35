//! One MessagePack tree type for the tests. Trees are built by hand, so an
//! envelope can be as wrong as a test likes (a field of the wrong type,
//! duplicate keys, a str that is not UTF-8, raw bytes anywhere), and written
//! in the shortest form, which every encoder of this protocol writes. Read
//! back with rmp-serde, a tree is what the library alone sees in a test
//! vector, without our codec's structs.

use rmp::encode::{
    write_array_len, write_bin, write_bool, write_map_len, write_sint, write_str, write_str_len,
    write_uint,
};

/// A MessagePack value of the kinds the protocol uses, map entries in wire
/// order, and a few that only hostile envelopes use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mp {
    Uint(u64),
    /// Written, never read: no field of the protocol is signed.
    Int(i64),
    Bool(bool),
    Str(String),
    /// A str whose bytes need not be UTF-8. Written, never read.
    StrBytes(Vec<u8>),
    Bin(Vec<u8>),
    Array(Vec<Mp>),
    Map(Vec<(String, Mp)>),
    /// Bytes written as they are. Written, never read.
    Raw(Vec<u8>),
}

impl Mp {
    /// The value in the shortest MessagePack form.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut Vec<u8>) {
        const INTO_A_VEC: &str = "writing into a Vec cannot fail";
        match self {
            Mp::Uint(n) => {
                write_uint(out, *n).expect(INTO_A_VEC);
            }
            Mp::Int(n) => {
                write_sint(out, *n).expect(INTO_A_VEC);
            }
            Mp::Bool(b) => write_bool(out, *b).expect(INTO_A_VEC),
            Mp::Str(s) => write_str(out, s).expect(INTO_A_VEC),
            Mp::StrBytes(b) => {
                write_str_len(out, b.len() as u32).expect(INTO_A_VEC);
                out.extend_from_slice(b);
            }
            Mp::Bin(b) => write_bin(out, b).expect(INTO_A_VEC),
            Mp::Array(items) => {
                write_array_len(out, items.len() as u32).expect(INTO_A_VEC);
                items.iter().for_each(|item| item.write(out));
            }
            Mp::Map(entries) => {
                write_map_len(out, entries.len() as u32).expect(INTO_A_VEC);
                for (key, value) in entries {
                    write_str(out, key).expect(INTO_A_VEC);
                    value.write(out);
                }
            }
            Mp::Raw(bytes) => out.extend_from_slice(bytes),
        }
    }
}

/// Reads the kinds the protocol uses (unsigned integers, bools, strs, bins,
/// arrays and maps with str keys) and refuses any other.
impl<'de> serde::Deserialize<'de> for Mp {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Mp, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Mp;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an unsigned integer, bool, str, bin, array or map")
            }

            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Mp, E> {
                Ok(Mp::Uint(n))
            }

            fn visit_bool<E: serde::de::Error>(self, b: bool) -> Result<Mp, E> {
                Ok(Mp::Bool(b))
            }

            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Mp, E> {
                Ok(Mp::Str(s.to_owned()))
            }

            fn visit_bytes<E: serde::de::Error>(self, b: &[u8]) -> Result<Mp, E> {
                Ok(Mp::Bin(b.to_vec()))
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Mp, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Mp::Array(items))
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Mp, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Mp::Map(entries))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

pub fn uint(n: u64) -> Mp {
    Mp::Uint(n)
}

pub fn text(s: &str) -> Mp {
    Mp::Str(s.to_owned())
}

pub fn bin(b: &[u8]) -> Mp {
    Mp::Bin(b.to_vec())
}

/// A map with these entries, in this order.
pub fn map<'a>(entries: impl IntoIterator<Item = (&'a str, Mp)>) -> Mp {
    Mp::Map(
        entries
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
    )
}

/// The request envelope `{"id": id, op: body}`, written.
pub fn envelope(id: u64, op: &str, body: Mp) -> Vec<u8> {
    map([("id", uint(id)), (op, body)]).to_bytes()
}

/// `depth` nested one-element arrays around a nil.
pub fn nested_arrays(depth: usize) -> Vec<u8> {
    let mut out = vec![0x91; depth];
    out.push(0xc0);
    out
}

/// `depth` nested one-entry maps `{"k": {"k": ... nil}}`.
pub fn nested_maps(depth: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(depth * 3 + 1);
    for _ in 0..depth {
        out.extend_from_slice(&[0x81, 0xa1, b'k']);
    }
    out.push(0xc0);
    out
}
