//! Tokens for a broker configured with a JWT secret.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::Value;

/// Seconds since the Unix epoch, for `exp` and `nbf` claims.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A token carrying `claims`, signed with `secret` by `algorithm`.
pub fn sign(algorithm: Algorithm, claims: &Value, secret: &str) -> String {
    encode(
        &Header::new(algorithm),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}
