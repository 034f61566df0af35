//! Settings: one table declares each setting once (name, type, default,
//! environment variable, parser, doc); the command-line flags, the TOML file
//! keys, the resolved [`Config`] and `roomcast print-config` all come from it.
//!
//! Precedence: flag, then `ROOMCAST_*` environment variable, then the TOML
//! file given with `--config`, then the default. Every value, wherever it came
//! from, goes through the same parser, so errors read the same and name the
//! setting.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

pub use crate::auth::JwtAlgorithm;
pub use crate::limits::SlowConsumerPolicy;
use crate::limits::{Limits, OutboundLimits};
use crate::rules::{RoomOptions, RoomPolicy};
pub use crate::rules::{RoomRule, RoomRules};

/// A setting that could not be used; the message names it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid value for `{setting}`: {reason}")]
    Invalid {
        setting: &'static str,
        reason: String,
    },
    #[error("unknown setting `{0}` in the config file")]
    Unknown(String),
    #[error("cannot read config file {path}: {reason}")]
    File { path: PathBuf, reason: String },
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse()
        .map_err(|e| format!("{e} (expected HOST:PORT, e.g. 127.0.0.1:8080)"))
}

fn parse_count(s: &str) -> Result<usize, String> {
    s.replace('_', "")
        .parse()
        .map_err(|e| format!("{e} (expected a whole number)"))
}

fn parse_bool(s: &str) -> Result<bool, String> {
    match s {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(format!("{s:?} is not true or false")),
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (expected e.g. 250ms, 10s, 5m)"))
}

fn parse_path(s: &str) -> Result<String, String> {
    if s.starts_with('/') && !s.contains(char::is_whitespace) {
        Ok(s.to_owned())
    } else {
        Err(format!("{s:?} must start with '/' and contain no spaces"))
    }
}

/// `off`, or an address for a listener of its own.
fn parse_admin_listen(s: &str) -> Result<String, String> {
    if s == "off" {
        return Ok(s.to_owned());
    }
    parse_addr(s).map(|_| s.to_owned())
}

/// A path, or empty for "off".
fn parse_optional_path(s: &str) -> Result<String, String> {
    if s.is_empty() {
        Ok(String::new())
    } else {
        parse_path(s)
    }
}

fn parse_policy(s: &str) -> Result<SlowConsumerPolicy, String> {
    s.parse()
}

fn parse_algorithm(s: &str) -> Result<JwtAlgorithm, String> {
    s.parse()
}

fn parse_text(s: &str) -> Result<String, String> {
    Ok(s.to_owned())
}

fn parse_rate(s: &str) -> Result<u32, String> {
    s.replace('_', "")
        .parse()
        .map_err(|e| format!("{e} (expected a whole number, 0 for no limit)"))
}

/// A secret setting: `Debug` (and so any log of the config) shows it redacted.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(pub String);

impl Secret {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() {
            "\"\""
        } else {
            "<redacted>"
        })
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Secret {
        Secret(s.to_owned())
    }
}

fn parse_secret(s: &str) -> Result<Secret, String> {
    Ok(Secret(s.to_owned()))
}

/// A list of strings from one setting (a newtype, so clap takes it as one value).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct List(pub Vec<String>);

fn parse_list(s: &str) -> Result<List, String> {
    parse_items(s).map(List)
}

/// A list, as `a,b` or as a TOML array `["a", "b"]`.
fn parse_items(s: &str) -> Result<Vec<String>, String> {
    let s = s.trim();
    if s.starts_with('[') {
        #[derive(serde::Deserialize)]
        struct Doc {
            list: Vec<String>,
        }
        let doc: Doc = toml::from_str(&format!("list = {s}"))
            .map_err(|e| format!("{} (expected a list of strings)", e.message()))?;
        return Ok(doc.list);
    }
    Ok(s.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
        .collect())
}

fn parse_rules(s: &str) -> Result<RoomRules, String> {
    RoomRules::parse(s)
}

fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

macro_rules! settings {
    ($(
        $(#[doc = $doc:literal])+
        $name:ident: $ty:ty = $default:expr, env $env:literal, parse $parse:path, shown $shown:literal;
    )+) => {
        /// Every setting, resolved. Field docs give the meaning and the default.
        #[derive(Debug, Clone)]
        pub struct Config {
            $( $(#[doc = $doc])+ pub $name: $ty, )+
        }

        impl Default for Config {
            fn default() -> Self {
                Config { $( $name: $default, )+ }
            }
        }

        /// Settings given on the command line or in the environment.
        #[derive(Debug, Clone, Default, clap::Args)]
        pub struct SettingArgs {
            $(
                $(#[doc = $doc])+
                #[arg(long, env = $env, value_parser = $parse, value_name = stringify!($ty))]
                pub $name: Option<$ty>,
            )+
        }

        /// Each setting's name, environment variable, default as shown, and doc.
        pub const SETTINGS: &[SettingDoc] = &[
            $( SettingDoc {
                name: stringify!($name),
                env: $env,
                default: $shown,
                doc: concat!($($doc, "\n"),+),
            }, )+
        ];

        impl SettingArgs {
            /// Fills each unset setting from a TOML table, parsing the value as text.
            fn fill_from_file(&mut self, table: &toml::Table) -> Result<(), ConfigError> {
                for (key, value) in table {
                    let text = match value {
                        toml::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    match key.replace('-', "_").as_str() {
                        $( stringify!($name) => {
                            if self.$name.is_none() {
                                self.$name = Some($parse(&text).map_err(|reason| ConfigError::Invalid {
                                    setting: stringify!($name),
                                    reason,
                                })?);
                            }
                        } )+
                        _ => return Err(ConfigError::Unknown(key.clone())),
                    }
                }
                Ok(())
            }

            fn resolve(self) -> Config {
                let defaults = Config::default();
                Config { $( $name: self.$name.unwrap_or(defaults.$name), )+ }
            }
        }
    };
}

settings! {
    /// Address every worker listens on (each with its own SO_REUSEPORT socket).
    listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 8080)), env "ROOMCAST_LISTEN", parse parse_addr, shown "127.0.0.1:8080";
    /// Worker threads, one per core, each with its own runtime and room shard.
    workers: usize = default_workers(), env "ROOMCAST_WORKERS", parse parse_count, shown "available cores";
    /// Pin worker n to core n where the OS allows.
    pin_cores: bool = true, env "ROOMCAST_PIN_CORES", parse parse_bool, shown "true";
    /// HTTP path of the WebSocket endpoint; other paths get 404.
    path: String = "/ws".to_owned(), env "ROOMCAST_PATH", parse parse_path, shown "/ws";
    /// Time the kernel holds a new connection that has sent nothing before a core accepts it (Linux's TCP_DEFER_ACCEPT; 0s: off). Clients speak first, so a core wakes once per connection, not twice.
    tcp_defer_accept: Duration = Duration::from_secs(1), env "ROOMCAST_TCP_DEFER_ACCEPT", parse parse_duration, shown "1s";
    /// Time a client has to finish the HTTP upgrade before it is dropped.
    handshake_timeout: Duration = Duration::from_secs(10), env "ROOMCAST_HANDSHAKE_TIMEOUT", parse parse_duration, shown "10s";
    /// Concurrent WebSocket connections per node; past it, upgrades get 503.
    max_connections: usize = 100_000, env "ROOMCAST_MAX_CONNECTIONS", parse parse_count, shown "100000";
    /// Bytes of HTTP request head accepted in a handshake (at least 8192); more gets 431.
    max_header_bytes: usize = 8192, env "ROOMCAST_MAX_HEADER_BYTES", parse parse_count, shown "8192";
    /// Header lines accepted in a handshake; more gets 431.
    max_headers: usize = 64, env "ROOMCAST_MAX_HEADERS", parse parse_count, shown "64";
    /// Largest client message in bytes, after reassembling fragments; larger closes with 1009.
    max_message_size: usize = 64 * 1024, env "ROOMCAST_MAX_MESSAGE_SIZE", parse parse_count, shown "65536";
    /// Frames one fragmented client message may span; more closes with 1009.
    max_fragments: usize = 64, env "ROOMCAST_MAX_FRAGMENTS", parse parse_count, shown "64";
    /// Rooms one connection may be subscribed to at once; more gets error 103.
    max_rooms_per_connection: usize = 1024, env "ROOMCAST_MAX_ROOMS_PER_CONNECTION", parse parse_count, shown "1024";
    /// Bytes queued for one subscriber before the slow-consumer policy applies.
    outbound_max_bytes: usize = 256 * 1024, env "ROOMCAST_OUTBOUND_MAX_BYTES", parse parse_count, shown "262144";
    /// Messages queued for one subscriber before the slow-consumer policy applies.
    outbound_max_messages: usize = 4096, env "ROOMCAST_OUTBOUND_MAX_MESSAGES", parse parse_count, shown "4096";
    /// Age of the oldest queued message before the slow-consumer policy applies.
    outbound_max_age: Duration = Duration::from_secs(10), env "ROOMCAST_OUTBOUND_MAX_AGE", parse parse_duration, shown "10s";
    /// What happens to a subscriber whose queue is full: `close` (1013) or `drop-oldest`.
    slow_consumer: SlowConsumerPolicy = SlowConsumerPolicy::Close, env "ROOMCAST_SLOW_CONSUMER", parse parse_policy, shown "close";
    /// Capacity of each queue between workers (messages); a full one pauses the publisher.
    core_queue_capacity: usize = 4096, env "ROOMCAST_CORE_QUEUE_CAPACITY", parse parse_count, shown "4096";
    /// Interval between server pings (a ping is sent once the previous one is answered).
    ping_interval: Duration = Duration::from_secs(25), env "ROOMCAST_PING_INTERVAL", parse parse_duration, shown "25s";
    /// Time after a ping within which the client must send something (a pong or any frame), or be closed with 4000.
    pong_timeout: Duration = Duration::from_secs(20), env "ROOMCAST_PONG_TIMEOUT", parse parse_duration, shown "20s";
    /// On shutdown, closes (1012) are spread over this period so clients do not reconnect at once.
    drain_period: Duration = Duration::from_secs(5), env "ROOMCAST_DRAIN_PERIOD", parse parse_duration, shown "5s";
    /// Time to wait for the peer's close frame after sending ours.
    close_timeout: Duration = Duration::from_secs(2), env "ROOMCAST_CLOSE_TIMEOUT", parse parse_duration, shown "2s";
    /// Publications each room keeps for history and recovery (0: none), unless a `rooms` rule says otherwise.
    history_size: usize = 0, env "ROOMCAST_HISTORY_SIZE", parse parse_count, shown "0";
    /// How long a kept publication stays, unless a `rooms` rule says otherwise.
    history_ttl: Duration = Duration::from_secs(300), env "ROOMCAST_HISTORY_TTL", parse parse_duration, shown "5m";
    /// Whether rooms track presence, unless a `rooms` rule says otherwise.
    presence: bool = false, env "ROOMCAST_PRESENCE", parse parse_bool, shown "false";
    /// Whether subscribers of presence rooms may ask for join and leave events, unless a `rooms` rule says otherwise.
    join_leave: bool = false, env "ROOMCAST_JOIN_LEAVE", parse parse_bool, shown "false";
    /// Per-room-pattern options, first match wins: a TOML array such as `[{ match = "ticks.*", history_size = 1000, history_ttl = "5m", presence = true, join_leave = true }]`.
    rooms: RoomRules = RoomRules::default(), env "ROOMCAST_ROOMS", parse parse_rules, shown "[]";
    /// Publications most returned by one `history` request (a larger limit is capped).
    history_max_page: usize = 1000, env "ROOMCAST_HISTORY_MAX_PAGE", parse parse_count, shown "1000";
    /// How long a publish's idempotency key is remembered: a retry within it is not published again.
    idempotency_window: Duration = Duration::from_secs(300), env "ROOMCAST_IDEMPOTENCY_WINDOW", parse parse_duration, shown "5m";
    /// Idempotency keys remembered per room; past it the oldest is forgotten early.
    idempotency_max_keys: usize = 10_000, env "ROOMCAST_IDEMPOTENCY_MAX_KEYS", parse parse_count, shown "10000";
    /// The one JWT algorithm accepted: HS256 (with `jwt_secret`), RS256 or ES256 (with `jwt_public_key`).
    jwt_algorithm: JwtAlgorithm = JwtAlgorithm::Hs256, env "ROOMCAST_JWT_ALGORITHM", parse parse_algorithm, shown "HS256";
    /// HS256 shared secret. Setting it (or `jwt_public_key`) turns authentication on.
    jwt_secret: Secret = Secret::default(), env "ROOMCAST_JWT_SECRET", parse parse_secret, shown "";
    /// Path of the PEM public key for RS256 or ES256.
    jwt_public_key: String = String::new(), env "ROOMCAST_JWT_PUBLIC_KEY", parse parse_text, shown "";
    /// Required `iss` claim (empty: not checked).
    jwt_issuer: String = String::new(), env "ROOMCAST_JWT_ISSUER", parse parse_text, shown "";
    /// Required `aud` claim (empty: not checked).
    jwt_audience: String = String::new(), env "ROOMCAST_JWT_AUDIENCE", parse parse_text, shown "";
    /// Clock skew allowed on `exp` and `nbf`.
    jwt_leeway: Duration = Duration::from_secs(5), env "ROOMCAST_JWT_LEEWAY", parse parse_duration, shown "5s";
    /// With a key configured, also accept connections without a token (they may only subscribe to `anonymous_rooms`).
    allow_anonymous: bool = false, env "ROOMCAST_ALLOW_ANONYMOUS", parse parse_bool, shown "false";
    /// Room patterns anonymous connections may subscribe to and ask presence of, e.g. `public.*`.
    anonymous_rooms: List = List::default(), env "ROOMCAST_ANONYMOUS_ROOMS", parse parse_list, shown "";
    /// Origins allowed to connect, e.g. `https://app.example.com` (empty: any; requests without `Origin` are not browsers and pass).
    allowed_origins: List = List::default(), env "ROOMCAST_ALLOWED_ORIGINS", parse parse_list, shown "";
    /// Publishes per second one connection may make (0: no limit); over it, error 109.
    publish_rate: u32 = 10_000, env "ROOMCAST_PUBLISH_RATE", parse parse_rate, shown "10000";
    /// Publishes one connection may make at once above `publish_rate`.
    publish_burst: u32 = 10_000, env "ROOMCAST_PUBLISH_BURST", parse parse_rate, shown "10000";
    /// Publish payload bytes per second one connection may send (0: no limit); over it, error 109.
    publish_bytes_rate: u32 = 16 * 1024 * 1024, env "ROOMCAST_PUBLISH_BYTES_RATE", parse parse_rate, shown "16777216";
    /// Payload bytes one connection may publish at once above `publish_bytes_rate` (at least `max_message_size`).
    publish_bytes_burst: u32 = 16 * 1024 * 1024, env "ROOMCAST_PUBLISH_BYTES_BURST", parse parse_rate, shown "16777216";
    /// Rate-limited publishes in a row after which the connection is closed with 1008.
    rate_limit_close_after: usize = 100, env "ROOMCAST_RATE_LIMIT_CLOSE_AFTER", parse parse_count, shown "100";
    /// Concurrent WebSocket connections from one IP address (0: no limit); past it, 429.
    max_connections_per_ip: usize = 0, env "ROOMCAST_MAX_CONNECTIONS_PER_IP", parse parse_count, shown "0";
    /// Handshakes per second from one IP address (0: no limit); past it, 429.
    handshake_rate_per_ip: u32 = 0, env "ROOMCAST_HANDSHAKE_RATE_PER_IP", parse parse_rate, shown "0";
    /// IP addresses whose limiter state is kept at most; the least recent are forgotten first.
    max_tracked_ips: usize = 100_000, env "ROOMCAST_MAX_TRACKED_IPS", parse parse_count, shown "100000";
    /// Handshakes in progress per node; a connection over it is answered 503 and closed before its request is read.
    max_handshakes_in_progress: usize = 1024, env "ROOMCAST_MAX_HANDSHAKES_IN_PROGRESS", parse parse_count, shown "1024";
    /// PEM certificate chain: serve `wss://` (with `tls_key`).
    tls_cert: String = String::new(), env "ROOMCAST_TLS_CERT", parse parse_text, shown "";
    /// PEM private key for `tls_cert`.
    tls_key: String = String::new(), env "ROOMCAST_TLS_KEY", parse parse_text, shown "";
    /// Redis that makes this node one of a cluster: `redis://[user:pass@]host:port[/db]` (standalone) or `redis-cluster://host:port?node=host:port&node=...` (Redis Cluster); Redis 7.0 or newer. Empty: rooms live in this node's memory.
    redis_url: String = String::new(), env "ROOMCAST_REDIS_URL", parse parse_text, shown "";
    /// Time limit of every Redis command; past it the operation fails with error 110 (the node keeps reconnecting).
    redis_command_timeout: Duration = Duration::from_secs(1), env "ROOMCAST_REDIS_COMMAND_TIMEOUT", parse parse_duration, shown "1s";
    /// Address of the admin listener (HTTP API, `/metrics`, `/health`, `/ready`, `/stats`, `/dashboard`); `off` turns it off. Keep it off the public network: docs/SECURITY.md.
    admin_listen: String = "127.0.0.1:9090".to_owned(), env "ROOMCAST_ADMIN_LISTEN", parse parse_admin_listen, shown "127.0.0.1:9090";
    /// Also answer `GET /stats` on the public listener (it is always on the admin listener).
    stats_on_public: bool = false, env "ROOMCAST_STATS_ON_PUBLIC", parse parse_bool, shown "false";
    /// Key backends send in `X-API-Key` to use the HTTP API on the admin listener. Empty: the API is off (404), never open.
    api_key: Secret = Secret::default(), env "ROOMCAST_API_KEY", parse parse_secret, shown "";
    /// Largest HTTP API request body in bytes; larger gets 413.
    api_max_body_bytes: usize = 1024 * 1024, env "ROOMCAST_API_MAX_BODY_BYTES", parse parse_count, shown "1048576";
    /// Path of the Server-Sent Events endpoint on the public listener (empty: off).
    sse_path: String = "/sse".to_owned(), env "ROOMCAST_SSE_PATH", parse parse_optional_path, shown "/sse";
    /// Room patterns whose payloads are UTF-8 text: SSE sends them as text instead of base64.
    sse_text_rooms: List = List::default(), env "ROOMCAST_SSE_TEXT_ROOMS", parse parse_list, shown "";
    /// Interval between SSE heartbeat comments on an otherwise quiet stream.
    sse_heartbeat: Duration = Duration::from_secs(15), env "ROOMCAST_SSE_HEARTBEAT", parse parse_duration, shown "15s";
    /// Path of an echo endpoint for protocol conformance tests (Autobahn), through the same reader, writer and limits as `path` (empty: off).
    echo_path: String = String::new(), env "ROOMCAST_ECHO_PATH", parse parse_text, shown "";
}

/// One row of the settings table.
#[derive(Debug, Clone, Copy)]
pub struct SettingDoc {
    pub name: &'static str,
    pub env: &'static str,
    pub default: &'static str,
    pub doc: &'static str,
}

/// The most workers: interest sets are 128-bit masks.
pub const MAX_WORKERS: usize = 128;

/// `roomcast`'s command line.
#[derive(Debug, Parser)]
#[command(
    name = "roomcast",
    version,
    about = "A binary-protocol WebSocket broker: rooms, encode-once fan-out, bounded queues."
)]
pub struct Cli {
    /// TOML file with settings (keys as below, without the leading dashes).
    #[arg(long, env = "ROOMCAST_CONFIG", global = true)]
    pub config: Option<PathBuf>,

    #[command(flatten)]
    pub settings: SettingArgs,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands; none runs the broker.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print a commented example config file with every setting and its default.
    PrintConfig,
}

impl Config {
    /// Resolves flags and environment (already in `args`) over the file over defaults.
    pub fn resolve(
        mut args: SettingArgs,
        file: Option<&std::path::Path>,
    ) -> Result<Config, ConfigError> {
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
            let table: toml::Table =
                text.parse()
                    .map_err(|e: toml::de::Error| ConfigError::File {
                        path: path.to_owned(),
                        reason: e.to_string(),
                    })?;
            args.fill_from_file(&table)?;
        }
        let config = args.resolve();
        config.validate()?;
        Ok(config)
    }

    /// Where the admin listener binds, or `None` when it is off.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_listen.parse().ok()
    }

    /// The options of `room`: the first matching `rooms` rule over the flat defaults.
    pub fn room_options(&self, room: &str) -> RoomOptions {
        self.room_policy().options(room)
    }

    /// The rules and flat defaults that decide every room's options.
    pub(crate) fn room_policy(&self) -> RoomPolicy {
        let defaults = RoomOptions {
            history_size: self.history_size,
            history_ttl: self.history_ttl,
            presence: self.presence,
            join_leave: self.presence && self.join_leave,
        };
        RoomPolicy::new(self.rooms.clone(), defaults)
    }

    /// The per-connection bounds, as the hot path reads them.
    pub(crate) fn limits(&self) -> Limits {
        Limits {
            max_message_size: self.max_message_size,
            max_fragments: self.max_fragments,
            max_rooms_per_connection: self.max_rooms_per_connection,
            outbound: OutboundLimits {
                max_bytes: self.outbound_max_bytes,
                max_messages: self.outbound_max_messages,
                max_age: self.outbound_max_age,
                policy: self.slow_consumer,
            },
            ping_interval: self.ping_interval,
            pong_timeout: self.pong_timeout,
            close_timeout: self.close_timeout,
        }
    }

    /// Checks ranges and relations between settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |setting, reason: &str| {
            Err(ConfigError::Invalid {
                setting,
                reason: reason.to_owned(),
            })
        };
        if self.workers == 0 || self.workers > MAX_WORKERS {
            return invalid("workers", "must be between 1 and 128");
        }
        if self.max_header_bytes < 8192 {
            return invalid(
                "max_header_bytes",
                "must be at least 8192 (hyper's minimum)",
            );
        }
        if self.max_headers == 0 {
            return invalid("max_headers", "must be at least 1");
        }
        if self.max_message_size == 0 {
            return invalid("max_message_size", "must be at least 1");
        }
        if self.max_fragments == 0 {
            return invalid("max_fragments", "must be at least 1");
        }
        if self.max_connections == 0 {
            return invalid("max_connections", "must be at least 1");
        }
        if self.max_rooms_per_connection == 0 {
            return invalid("max_rooms_per_connection", "must be at least 1");
        }
        if self.outbound_max_bytes < 1024 {
            return invalid("outbound_max_bytes", "must be at least 1024");
        }
        if self.outbound_max_bytes < self.max_message_size.saturating_add(1024) {
            return invalid(
                "outbound_max_bytes",
                "must hold at least one message of max_message_size plus 1024 bytes of framing",
            );
        }
        if self.outbound_max_messages == 0 {
            return invalid("outbound_max_messages", "must be at least 1");
        }
        if !self.redis_url.is_empty()
            && !["redis://", "redis-cluster://"]
                .iter()
                .any(|scheme| self.redis_url.starts_with(scheme))
        {
            return invalid(
                "redis_url",
                "must start with redis:// (standalone) or redis-cluster:// (Redis Cluster)",
            );
        }
        if self.redis_command_timeout.is_zero() {
            return invalid("redis_command_timeout", "must be more than 0");
        }
        if self.jwt_secret.is_empty() != self.jwt_public_key.is_empty() {
            let needs_secret = self.jwt_algorithm == JwtAlgorithm::Hs256;
            if needs_secret && self.jwt_secret.is_empty() {
                return invalid(
                    "jwt_secret",
                    "HS256 needs jwt_secret (jwt_public_key is for RS256 and ES256)",
                );
            }
            if !needs_secret && self.jwt_public_key.is_empty() {
                return invalid(
                    "jwt_public_key",
                    "RS256 and ES256 need jwt_public_key (jwt_secret is for HS256)",
                );
            }
        } else if !self.jwt_secret.is_empty() {
            return invalid("jwt_secret", "set jwt_secret or jwt_public_key, not both");
        }
        if self.publish_bytes_rate != 0
            && (self.publish_bytes_burst as usize) < self.max_message_size
        {
            return invalid(
                "publish_bytes_burst",
                "must be at least max_message_size, or no message could ever be published",
            );
        }
        if self.tls_cert.is_empty() != self.tls_key.is_empty() {
            return invalid("tls_key", "tls_cert and tls_key go together");
        }
        if !self.echo_path.is_empty()
            && (parse_path(&self.echo_path).is_err() || self.echo_path == self.path)
        {
            return invalid(
                "echo_path",
                "must start with '/', contain no spaces and differ from path",
            );
        }
        if !self.sse_path.is_empty()
            && (self.sse_path == self.path || self.sse_path == self.echo_path)
        {
            return invalid("sse_path", "must differ from path and echo_path");
        }
        if self.api_max_body_bytes == 0 {
            return invalid("api_max_body_bytes", "must be at least 1");
        }
        if self.sse_heartbeat.is_zero() {
            return invalid("sse_heartbeat", "must be longer than zero");
        }
        if self.history_max_page == 0 {
            return invalid("history_max_page", "must be at least 1");
        }
        if self.idempotency_max_keys == 0 {
            return invalid("idempotency_max_keys", "must be at least 1");
        }
        if self.core_queue_capacity == 0 {
            return invalid("core_queue_capacity", "must be at least 1");
        }
        for (name, d) in [
            ("handshake_timeout", self.handshake_timeout),
            ("ping_interval", self.ping_interval),
            ("pong_timeout", self.pong_timeout),
            ("outbound_max_age", self.outbound_max_age),
            ("close_timeout", self.close_timeout),
            ("history_ttl", self.history_ttl),
            ("idempotency_window", self.idempotency_window),
        ] {
            if d.is_zero() {
                return invalid(name, "must be longer than zero");
            }
        }
        Ok(())
    }

    /// A commented TOML file listing every setting with its default.
    pub fn example_toml() -> String {
        let mut out = String::from("# roomcast configuration. Every key is optional; shown are the defaults.\n# Flags and ROOMCAST_* environment variables override this file.\n");
        for s in SETTINGS {
            out.push('\n');
            for line in s.doc.lines() {
                out.push('#');
                out.push_str(line);
                out.push('\n');
            }
            out.push_str(&format!("# env: {}\n", s.env));
            let value = match s.default.parse::<f64>() {
                Ok(_) => s.default.to_owned(),
                Err(_) if s.default == "true" || s.default == "false" => s.default.to_owned(),
                Err(_) => format!("{:?}", s.default),
            };
            out.push_str(&format!("# {} = {}\n", s.name, value));
        }
        out
    }
}
