//! Who a connection is and what it may do: the JWT checked before the
//! upgrade, the identity it yields, and the permission checks of each
//! operation.
//!
//! The accepted algorithm is fixed by configuration (HS256 with a shared
//! secret, or RS256/ES256 with a PEM public key), never read from the token,
//! so `alg: none` and HS/RS confusion are refused. `exp` is required, `nbf`
//! is checked, `iss`/`aud` when configured, all with the configured leeway.
//! Tokens are never logged: errors say why a token failed, never what it was.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;

use crate::rules::Glob;

/// The JWT algorithms roomcast accepts (one, chosen by configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtAlgorithm {
    Hs256,
    Rs256,
    Es256,
}

impl std::str::FromStr for JwtAlgorithm {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "HS256" => Ok(JwtAlgorithm::Hs256),
            "RS256" => Ok(JwtAlgorithm::Rs256),
            "ES256" => Ok(JwtAlgorithm::Es256),
            _ => Err(format!("{s:?} is not HS256, RS256 or ES256")),
        }
    }
}

impl std::fmt::Display for JwtAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            JwtAlgorithm::Hs256 => "HS256",
            JwtAlgorithm::Rs256 => "RS256",
            JwtAlgorithm::Es256 => "ES256",
        })
    }
}

/// Why the verifier could not be built from the configuration.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("jwt_algorithm {0} needs jwt_secret")]
    MissingSecret(JwtAlgorithm),
    #[error("jwt_algorithm {0} needs jwt_public_key (a PEM file)")]
    MissingPublicKey(JwtAlgorithm),
    #[error("cannot read jwt_public_key {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("jwt_public_key is not a {algorithm} public key in PEM: {reason}")]
    Pem {
        algorithm: JwtAlgorithm,
        reason: String,
    },
}

/// Why a token was refused. The text goes into the 401 body and the error
/// reply of a refresh; it never contains the token. docs/SECURITY.md §4
/// lists every one of them (and `tests/security.rs` keeps the two in step).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TokenError {
    #[error("a token is required")]
    Missing,
    #[error("token expired")]
    Expired,
    #[error("token not valid yet")]
    NotYetValid,
    #[error("token signature, algorithm or format is invalid")]
    Invalid,
    #[error("token issuer or audience is not accepted")]
    WrongParty,
    /// Absent, or not of the type RFC 7519 gives it (the library checks
    /// presence and type together).
    #[error("token lacks a required claim ({0})")]
    MissingClaim(RequiredClaim),
    /// Present but of the wrong type.
    #[error("token claim {0} is malformed")]
    MalformedClaim(OptionalClaim),
    /// A `sub` that names no user: the empty user id is anonymous
    /// connections', so presence and `refresh` would take this token's
    /// holder for one of them (and a whitespace-only id, printed, looks
    /// the same).
    #[error("token sub is empty or only whitespace")]
    BlankUser,
    #[error("token is for another user")]
    OtherUser,
}

impl TokenError {
    /// Every refusal there is, for the test that keeps the list of reasons
    /// in docs/SECURITY.md in step with this enum.
    #[cfg(any(test, feature = "test-hooks"))]
    pub(crate) fn every() -> Vec<TokenError> {
        use TokenError::*;
        let mut every = vec![
            Missing,
            Expired,
            NotYetValid,
            Invalid,
            WrongParty,
            BlankUser,
            OtherUser,
        ];
        every.extend(RequiredClaim::ALL.map(MissingClaim));
        every.extend(OptionalClaim::ALL.map(MalformedClaim));
        // A variant added to the enum breaks this match, which leads here:
        // list it above too.
        for error in &every {
            match error {
                Missing | Expired | NotYetValid | Invalid | WrongParty | MissingClaim(_)
                | MalformedClaim(_) | BlankUser | OtherUser => {}
            }
        }
        every
    }
}

/// A claim a token must carry: `exp` and `sub` always, `iss` and `aud`
/// when the node checks them. Without `sub` a token would share anonymous
/// connections' empty user id; without `iss` or `aud` it would pass those
/// checks by leaving the claim out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RequiredClaim {
    Exp,
    Sub,
    Iss,
    Aud,
}

impl RequiredClaim {
    const ALL: [RequiredClaim; 4] = [
        RequiredClaim::Exp,
        RequiredClaim::Sub,
        RequiredClaim::Iss,
        RequiredClaim::Aud,
    ];

    /// The claim's name in a token.
    fn name(self) -> &'static str {
        match self {
            RequiredClaim::Exp => "exp",
            RequiredClaim::Sub => "sub",
            RequiredClaim::Iss => "iss",
            RequiredClaim::Aud => "aud",
        }
    }

    /// The claim jsonwebtoken names in `MissingRequiredClaim`.
    fn from_name(name: &str) -> Option<RequiredClaim> {
        RequiredClaim::ALL
            .into_iter()
            .find(|claim| claim.name() == name)
    }
}

impl std::fmt::Display for RequiredClaim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A claim a token may leave out, but that must have its type when present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OptionalClaim {
    Nbf,
    Role,
    Rooms,
}

impl OptionalClaim {
    #[cfg(any(test, feature = "test-hooks"))]
    const ALL: [OptionalClaim; 3] = [
        OptionalClaim::Nbf,
        OptionalClaim::Role,
        OptionalClaim::Rooms,
    ];
}

impl std::fmt::Display for OptionalClaim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OptionalClaim::Nbf => "nbf",
            OptionalClaim::Role => "role",
            OptionalClaim::Rooms => "rooms",
        })
    }
}

/// `role` may be one string or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// Room permissions in a token: glob patterns per action. (Under `rooms`,
/// because the top-level `sub` claim is the user id.)
#[derive(Debug, Default, Deserialize)]
struct RoomClaims {
    #[serde(default)]
    sub: Vec<String>,
    #[serde(default, rename = "pub")]
    publish: Vec<String>,
    #[serde(default)]
    presence: Vec<String>,
}

/// The claims roomcast reads, each kept as JSON until [`Claims::identity`]
/// checks it. Typed fields would fail the whole payload's deserialization,
/// which jsonwebtoken does before its own checks: a wrong type would then
/// be refused as an unreadable token, without the claim's name, and ahead
/// of expiry. Absent and `null` read as `Value::Null`.
#[derive(Debug, Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Value,
    #[serde(default)]
    exp: Value,
    #[serde(default)]
    role: Value,
    #[serde(default)]
    rooms: Value,
}

impl Claims {
    /// The identity these claims prove, once jsonwebtoken has checked the
    /// signature, the presence and type of the required claims, and the times.
    fn identity(self, leeway: Duration) -> Result<Identity, TokenError> {
        let Value::String(user) = self.sub else {
            return Err(TokenError::MissingClaim(RequiredClaim::Sub));
        };
        if user.trim().is_empty() {
            return Err(TokenError::BlankUser);
        }
        let exp = numeric_date(&self.exp).ok_or(TokenError::MissingClaim(RequiredClaim::Exp))?;
        let roles = match self.role {
            Value::Null => Vec::new(),
            role => match serde_json::from_value(role) {
                Ok(OneOrMany::One(role)) => vec![role],
                Ok(OneOrMany::Many(roles)) => roles,
                Err(_) => return Err(TokenError::MalformedClaim(OptionalClaim::Role)),
            },
        };
        let rooms: RoomClaims = match self.rooms {
            Value::Null => RoomClaims::default(),
            rooms => serde_json::from_value(rooms)
                .map_err(|_| TokenError::MalformedClaim(OptionalClaim::Rooms))?,
        };
        let globs = |patterns: Vec<String>| patterns.iter().map(|p| Glob::new(p)).collect();
        Ok(Identity {
            user,
            roles,
            grants: Grants::Patterns(Box::new(Patterns {
                subscribe: globs(rooms.sub),
                publish: globs(rooms.publish),
                presence: globs(rooms.presence),
            })),
            expires_at: Some(UNIX_EPOCH + Duration::from_secs(exp) + leeway),
        })
    }
}

/// A NumericDate (RFC 7519 §2) read as jsonwebtoken reads it for its
/// checks: whole seconds, a fraction rounded, so the connection's deadline
/// is the `exp` that was checked.
fn numeric_date(value: &Value) -> Option<u64> {
    let Value::Number(number) = value else {
        return None;
    };
    number.as_u64().or_else(|| {
        number
            .as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0 && *f < u64::MAX as f64)
            .map(|f| f.round() as u64)
    })
}

/// What an operation needs permission for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Subscribe, and read history.
    Subscribe,
    Publish,
    /// `presence` and `presence_stats`.
    Presence,
}

impl Action {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Action::Subscribe => "subscribe",
            Action::Publish => "publish",
            Action::Presence => "presence",
        }
    }
}

/// Which rooms a connection may act on. The patterns are boxed: every
/// connection keeps its grants for its life, in its task's future, and
/// unboxed they made every one 64 bytes larger, whether authentication is
/// on or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Grants {
    /// Authentication is off: every room, every action.
    All,
    /// Per action, the room patterns allowed.
    Patterns(Box<Patterns>),
}

/// The room patterns a token allows, per action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Patterns {
    subscribe: Vec<Glob>,
    publish: Vec<Glob>,
    presence: Vec<Glob>,
}

impl Grants {
    pub(crate) fn allows(&self, action: Action, room: &str) -> bool {
        let patterns = match self {
            Grants::All => return true,
            Grants::Patterns(patterns) => match action {
                Action::Subscribe => &patterns.subscribe,
                Action::Publish => &patterns.publish,
                Action::Presence => &patterns.presence,
            },
        };
        patterns.iter().any(|p| p.matches(room))
    }
}

/// A connection's identity, from its token (or anonymous).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    /// The token's `sub`; empty for anonymous connections, which is why
    /// [`Verifier::verify`] refuses a token whose `sub` is blank.
    pub user: String,
    pub roles: Vec<String>,
    pub grants: Grants,
    /// When the token expires (none for anonymous connections).
    pub expires_at: Option<SystemTime>,
}

impl Identity {
    /// Everything allowed: authentication is off.
    pub(crate) fn unrestricted() -> Identity {
        Identity {
            user: String::new(),
            roles: Vec::new(),
            grants: Grants::All,
            expires_at: None,
        }
    }

    /// An anonymous connection on a node with keys: subscribe and presence
    /// in the `anonymous_rooms`, never publish.
    pub(crate) fn anonymous(rooms: &[Glob]) -> Identity {
        Identity {
            user: String::new(),
            roles: Vec::new(),
            grants: Grants::Patterns(Box::new(Patterns {
                subscribe: rooms.to_vec(),
                publish: Vec::new(),
                presence: rooms.to_vec(),
            })),
            expires_at: None,
        }
    }

    pub(crate) fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    /// How long until the token expires (zero if it has).
    pub(crate) fn expires_in(&self) -> Option<Duration> {
        self.expires_at.map(|at| {
            at.duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
        })
    }
}

/// Checks tokens with the configured key and rules.
pub(crate) struct Verifier {
    key: DecodingKey,
    validation: Validation,
    /// Added to `exp` for the connection's deadline, as for the check.
    leeway: Duration,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of debug output, like the tokens.
        f.debug_struct("Verifier")
            .field("algorithms", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

/// What the verifier needs from the configuration.
#[derive(Debug, Clone)]
pub(crate) struct VerifierConfig {
    pub algorithm: JwtAlgorithm,
    pub secret: String,
    pub public_key: String,
    pub issuer: String,
    pub audience: String,
    pub leeway: Duration,
}

impl Verifier {
    /// `None` when no key is configured: authentication is off.
    pub(crate) fn from_config(config: &VerifierConfig) -> Result<Option<Verifier>, KeyError> {
        if config.secret.is_empty() && config.public_key.is_empty() {
            return Ok(None);
        }
        let (key, algorithm) = match config.algorithm {
            JwtAlgorithm::Hs256 => {
                if config.secret.is_empty() {
                    return Err(KeyError::MissingSecret(config.algorithm));
                }
                (
                    DecodingKey::from_secret(config.secret.as_bytes()),
                    Algorithm::HS256,
                )
            }
            JwtAlgorithm::Rs256 | JwtAlgorithm::Es256 => {
                if config.public_key.is_empty() {
                    return Err(KeyError::MissingPublicKey(config.algorithm));
                }
                let pem = std::fs::read(&config.public_key).map_err(|e| KeyError::Read {
                    path: config.public_key.clone(),
                    reason: e.to_string(),
                })?;
                let pem_error = |e: jsonwebtoken::errors::Error| KeyError::Pem {
                    algorithm: config.algorithm,
                    reason: e.to_string(),
                };
                if config.algorithm == JwtAlgorithm::Rs256 {
                    (
                        DecodingKey::from_rsa_pem(&pem).map_err(pem_error)?,
                        Algorithm::RS256,
                    )
                } else {
                    (
                        DecodingKey::from_ec_pem(&pem).map_err(pem_error)?,
                        Algorithm::ES256,
                    )
                }
            }
        };
        let mut validation = Validation::new(algorithm);
        let mut required = vec![RequiredClaim::Exp, RequiredClaim::Sub];
        if !config.issuer.is_empty() {
            required.push(RequiredClaim::Iss);
        }
        if !config.audience.is_empty() {
            required.push(RequiredClaim::Aud);
        }
        let required: Vec<&str> = required.into_iter().map(RequiredClaim::name).collect();
        validation.set_required_spec_claims(&required);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = config.leeway.as_secs();
        if !config.issuer.is_empty() {
            validation.set_issuer(&[&config.issuer]);
        }
        if config.audience.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&[&config.audience]);
        }
        Ok(Some(Verifier {
            key,
            validation,
            leeway: config.leeway,
        }))
    }

    /// The identity a token proves.
    pub(crate) fn verify(&self, token: &str) -> Result<Identity, TokenError> {
        use jsonwebtoken::errors::ErrorKind;
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(
            |e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                ErrorKind::InvalidIssuer | ErrorKind::InvalidAudience => TokenError::WrongParty,
                ErrorKind::MissingRequiredClaim(name) => RequiredClaim::from_name(name)
                    .map_or(TokenError::Invalid, TokenError::MissingClaim),
                // `exp` never gets here: one that does not parse is missing.
                ErrorKind::InvalidClaimFormat(name) if name == "nbf" => {
                    TokenError::MalformedClaim(OptionalClaim::Nbf)
                }
                _ => TokenError::Invalid,
            },
        )?;
        data.claims.identity(self.leeway)
    }
}

/// The subprotocol entry that carries a token, for browsers that cannot set
/// headers: `roomcast.jwt.<token>` beside the codec's entry.
pub(crate) const TOKEN_SUBPROTOCOL_PREFIX: &str = "roomcast.jwt.";

/// Finds the token of a handshake: `Authorization: Bearer`, then the `token`
/// query parameter, then a `roomcast.jwt.` subprotocol entry; the first
/// place that is there is the one used (docs/SECURITY.md §5).
pub(crate) fn token_from_request<B>(req: &hyper::Request<B>) -> Option<String> {
    use hyper::header::{AUTHORIZATION, SEC_WEBSOCKET_PROTOCOL};
    // Another scheme (Basic credentials for a proxy or a gate in front,
    // which browsers repeat by themselves and a page cannot take off) is
    // not a place for our token: it does not hide the query or the
    // subprotocol entry. A Bearer header with nothing after the scheme is
    // still the place, and its empty token is refused.
    let bearer = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ').unwrap_or((v, ""));
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| token.trim().to_owned())
        });
    if bearer.is_some() {
        return bearer;
    }
    if let Some(query) = req.uri().query() {
        if let Some(token) = query
            .split('&')
            .find_map(|pair| pair.strip_prefix("token="))
        {
            return Some(token.to_owned());
        }
    }
    req.headers()
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|entry| entry.trim().strip_prefix(TOKEN_SUBPROTOCOL_PREFIX))
        .map(str::to_owned)
}

/// The cookie an SSE request may carry its token in: `EventSource` cannot
/// set headers, and a URL ends up in access logs.
pub(crate) const TOKEN_COOKIE: &str = "roomcast_token";

/// Finds the token of a Server-Sent Events request: the places of
/// [`token_from_request`], in its order, then the [`TOKEN_COOKIE`] cookie.
///
/// Only SSE reads the cookie. A browser sends cookies with a WebSocket
/// upgrade from any page, and nothing then keeps that page from reading
/// what comes back (cross-site WebSocket hijacking, which only
/// `allowed_origins` would stop); a page reads an SSE response only where
/// CORS lets it, and the door lets credentialed requests through only from
/// the origins listed in `allowed_origins` (docs/SECURITY.md §5).
pub(crate) fn token_from_sse_request<B>(req: &hyper::Request<B>) -> Option<String> {
    token_from_request(req).or_else(|| {
        req.headers()
            .get_all(hyper::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == TOKEN_COOKIE)
            // RFC 6265 §4.1.1 lets a cookie's value be quoted.
            .map(|(_, value)| value.trim_matches('"').to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    fn hs_config() -> VerifierConfig {
        VerifierConfig {
            algorithm: JwtAlgorithm::Hs256,
            secret: "s3cret".into(),
            public_key: String::new(),
            issuer: "roomcast-tests".into(),
            audience: String::new(),
            leeway: Duration::from_secs(2),
        }
    }

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn sign(claims: serde_json::Value, secret: &str) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    #[test]
    fn a_good_token_yields_the_user_roles_and_room_grants() {
        let verifier = Verifier::from_config(&hs_config()).unwrap().unwrap();
        let token = sign(
            json!({"sub": "ann", "exp": now() + 60, "iss": "roomcast-tests", "role": "admin",
                   "rooms": {"sub": ["ticks.*"], "pub": ["chat.room-42"]}}),
            "s3cret",
        );
        let who = verifier.verify(&token).unwrap();
        assert_eq!(who.user, "ann");
        assert!(who.has_role("admin"));
        assert!(who.grants.allows(Action::Subscribe, "ticks.btc"));
        assert!(!who.grants.allows(Action::Publish, "ticks.btc"));
        assert!(who.grants.allows(Action::Publish, "chat.room-42"));
        assert!(!who.grants.allows(Action::Presence, "chat.room-42"));
    }

    #[test]
    fn bad_tokens_are_refused_for_a_stated_reason() {
        let verifier = Verifier::from_config(&hs_config()).unwrap().unwrap();
        let good = json!({"sub": "ann", "exp": now() + 60, "iss": "roomcast-tests"});
        assert_eq!(
            verifier.verify(&sign(good.clone(), "wrong")),
            Err(TokenError::Invalid)
        );
        let expired = json!({"sub": "ann", "exp": now() - 60, "iss": "roomcast-tests"});
        assert_eq!(
            verifier.verify(&sign(expired, "s3cret")),
            Err(TokenError::Expired)
        );
        let early =
            json!({"sub": "ann", "exp": now() + 60, "nbf": now() + 60, "iss": "roomcast-tests"});
        assert_eq!(
            verifier.verify(&sign(early, "s3cret")),
            Err(TokenError::NotYetValid)
        );
        let no_exp = json!({"sub": "ann", "iss": "roomcast-tests"});
        assert_eq!(
            verifier.verify(&sign(no_exp, "s3cret")),
            Err(TokenError::MissingClaim(RequiredClaim::Exp))
        );
        let string_exp =
            json!({"sub": "ann", "exp": format!("{}", now() - 60), "iss": "roomcast-tests"});
        assert!(
            verifier.verify(&sign(string_exp, "s3cret")).is_err(),
            "a string exp never skips the check"
        );
        let other_issuer = json!({"sub": "ann", "exp": now() + 60, "iss": "elsewhere"});
        assert_eq!(
            verifier.verify(&sign(other_issuer, "s3cret")),
            Err(TokenError::WrongParty)
        );
        // alg: none, hand-made: header {"alg":"none","typ":"JWT"}.
        let none = format!(
            "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.",
            base64_url(&serde_json::to_vec(&good).unwrap())
        );
        assert_eq!(verifier.verify(&none), Err(TokenError::Invalid));
        assert_eq!(verifier.verify("not a token"), Err(TokenError::Invalid));
        // No `sub`: it would share anonymous connections' empty user id.
        let anonymous = json!({"exp": now() + 60, "iss": "roomcast-tests"});
        assert_eq!(
            verifier.verify(&sign(anonymous, "s3cret")),
            Err(TokenError::MissingClaim(RequiredClaim::Sub))
        );
        // Nor with one that names nobody.
        for blank in ["", " ", "\t\u{a0}\n"] {
            let anonymous = json!({"sub": blank, "exp": now() + 60, "iss": "roomcast-tests"});
            assert_eq!(
                verifier.verify(&sign(anonymous, "s3cret")),
                Err(TokenError::BlankUser),
                "sub {blank:?}"
            );
        }
        // An issuer is configured: leaving `iss` out does not get around it.
        let no_issuer = json!({"sub": "ann", "exp": now() + 60});
        assert_eq!(
            verifier.verify(&sign(no_issuer, "s3cret")),
            Err(TokenError::MissingClaim(RequiredClaim::Iss))
        );
    }

    #[test]
    fn the_deadline_includes_the_leeway_the_check_allowed() {
        let verifier = Verifier::from_config(&hs_config()).unwrap().unwrap();
        let exp = now() + 60;
        let who = verifier
            .verify(&sign(
                json!({"sub": "ann", "exp": exp, "iss": "roomcast-tests"}),
                "s3cret",
            ))
            .unwrap();
        assert_eq!(
            who.expires_at,
            Some(UNIX_EPOCH + Duration::from_secs(exp + 2))
        );
    }

    fn base64_url(bytes: &[u8]) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n =
                chunk.iter().fold(0u32, |n, b| (n << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
            for i in 0..=chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }

    #[test]
    fn no_key_means_no_authentication_and_a_half_configured_key_is_an_error() {
        let mut config = hs_config();
        config.secret.clear();
        assert!(Verifier::from_config(&config).unwrap().is_none());
        config.algorithm = JwtAlgorithm::Rs256;
        config.secret = "s3cret".into();
        assert!(matches!(
            Verifier::from_config(&config),
            Err(KeyError::MissingPublicKey(JwtAlgorithm::Rs256))
        ));
    }

    #[test]
    fn an_sse_request_may_carry_its_token_in_a_cookie_after_the_other_places() {
        let req = |uri: &str, cookie: &str| {
            hyper::Request::get(uri)
                .header("cookie", cookie)
                .body(())
                .unwrap()
        };
        assert_eq!(
            token_from_sse_request(&req("/sse", "theme=dark; roomcast_token=c.o.k; x=1")),
            Some("c.o.k".into())
        );
        assert_eq!(
            token_from_sse_request(&req("/sse", "roomcast_token=\"q.u.o\"")),
            Some("q.u.o".into())
        );
        assert_eq!(
            token_from_sse_request(&req("/sse?token=q.r.s", "roomcast_token=c.o.k")),
            Some("q.r.s".into()),
            "the query comes first"
        );
        assert_eq!(token_from_sse_request(&req("/sse", "other=1")), None);
        assert_eq!(
            token_from_request(&req("/ws", "roomcast_token=c.o.k")),
            None,
            "a WebSocket upgrade never reads the cookie"
        );
    }

    #[test]
    fn the_token_is_found_in_the_header_the_query_or_a_subprotocol_entry() {
        let req = |uri: &str, header: Option<(&str, &str)>| {
            let mut builder = hyper::Request::get(uri);
            if let Some((name, value)) = header {
                builder = builder.header(name, value);
            }
            builder.body(()).unwrap()
        };
        assert_eq!(
            token_from_request(&req("/ws", Some(("authorization", "Bearer abc.def.ghi")))),
            Some("abc.def.ghi".into())
        );
        assert_eq!(
            token_from_request(&req("/ws?x=1&token=t.o.k", None)),
            Some("t.o.k".into())
        );
        assert_eq!(
            token_from_request(&req(
                "/ws",
                Some((
                    "sec-websocket-protocol",
                    "roomcast.v1.msgpack, roomcast.jwt.a.b.c"
                ))
            )),
            Some("a.b.c".into())
        );
        assert_eq!(token_from_request(&req("/ws", None)), None);
        // A proxy's Basic credentials do not hide the token in the query.
        assert_eq!(
            token_from_request(&req(
                "/ws?token=q.r.s",
                Some(("authorization", "Basic dXNlcg=="))
            )),
            Some("q.r.s".into())
        );
        // A Bearer header does, even an empty one.
        assert_eq!(
            token_from_request(&req("/ws?token=q.r.s", Some(("authorization", "Bearer")))),
            Some(String::new())
        );
    }
}
