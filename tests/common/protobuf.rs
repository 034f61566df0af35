//! Protobuf written by hand, for messages prost would never write (a length
//! that lies, a room that is not UTF-8, unknown fields).

/// A varint.
pub fn varint(mut n: u64) -> Vec<u8> {
    let mut out = Vec::new();
    while n >= 0x80 {
        out.push(n as u8 | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
    out
}

/// A length-delimited field (wire type 2): its key, the length, the bytes.
pub fn length_delimited(field: u64, bytes: &[u8]) -> Vec<u8> {
    [
        varint((field << 3) | 2),
        varint(bytes.len() as u64),
        bytes.to_vec(),
    ]
    .concat()
}
