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

use crate::limits::SlowConsumerPolicy;
use crate::rules::{RoomOptions, RoomRules};

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

fn parse_policy(s: &str) -> Result<SlowConsumerPolicy, String> {
    s.parse()
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

    /// The options of `room`: the first matching `rooms` rule over the flat defaults.
    pub fn room_options(&self, room: &str) -> RoomOptions {
        self.rooms.resolve(room, self.default_room_options())
    }

    /// The options of a room no `rooms` rule matches.
    pub fn default_room_options(&self) -> RoomOptions {
        RoomOptions {
            history_size: self.history_size,
            history_ttl: self.history_ttl,
            presence: self.presence,
            join_leave: self.presence && self.join_leave,
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
