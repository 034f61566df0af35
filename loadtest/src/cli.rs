//! The command line, and the plan each scenario resolves it into (the
//! scenario's defaults filled in, rooms named, connections laid out).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use roomcast::protocol::{Codec, RoomName};

/// `roomcast-load`'s command line.
#[derive(Debug, Parser)]
#[command(
    name = "roomcast-load",
    version,
    about = "Load generator for roomcast: one JSON line of results on stdout, a table on stderr."
)]
pub(crate) struct Args {
    /// What to run.
    #[arg(value_enum)]
    pub(crate) scenario: Scenario,
    /// Server address (publishers, and subscribers unless --subscriber-addr).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub(crate) addr: SocketAddr,
    /// Where subscribers connect, round robin over the addresses given
    /// (repeat the flag); for a cluster: publishers on --addr, subscribers
    /// spread over the nodes [--addr].
    #[arg(long = "subscriber-addr")]
    pub(crate) subscriber_addrs: Vec<SocketAddr>,
    /// WebSocket path.
    #[arg(long, default_value = "/ws")]
    pub(crate) path: String,
    /// Envelope encoding, offered as the subprotocol.
    #[arg(long, value_enum, default_value = "msgpack")]
    pub(crate) codec: CodecArg,
    /// Bytes of `data` per publication (at least 8: the send timestamp).
    #[arg(long, default_value_t = 128)]
    pub(crate) payload: usize,
    /// Subscribers in the room [fanout: 1000, latency: 100].
    #[arg(long)]
    pub(crate) subscribers: Option<usize>,
    /// Publisher connections into the room [fanout, latency: 1].
    #[arg(long)]
    pub(crate) publishers: Option<usize>,
    /// Rooms [rooms: 100; connections: 0 = connections subscribe to nothing].
    #[arg(long)]
    pub(crate) rooms: Option<usize>,
    /// Subscribers per room [rooms: 10].
    #[arg(long)]
    pub(crate) per_room: Option<usize>,
    /// Open-loop publish rate, messages per second over all publishers.
    /// Without it, each publisher sends as fast as the server acknowledges,
    /// with at most --window publishes unacknowledged [latency: 1000].
    #[arg(long)]
    pub(crate) rate: Option<f64>,
    /// Unacknowledged publishes per publisher when no --rate is given.
    #[arg(long, default_value_t = 64)]
    pub(crate) window: usize,
    /// Length of the measured window.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub(crate) duration: Duration,
    /// Load before the measured window starts (not counted).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub(crate) warmup: Duration,
    /// After publishing stops, how long to wait for in-flight deliveries.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub(crate) drain_timeout: Duration,
    /// Generator threads, each with its own runtime [available cores].
    #[arg(long)]
    pub(crate) threads: Option<usize>,
    /// The server's process id: report its CPU time (and, for
    /// `connections`, its memory per connection).
    #[arg(long)]
    pub(crate) server_pid: Option<u32>,
    /// Connections to open [connections: 10000].
    #[arg(long)]
    pub(crate) connections: Option<usize>,
    /// How long `connections` holds its connections open.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub(crate) hold: Duration,
    /// Connections per 127.0.0.x source address before moving to the next
    /// (loopback servers only). The kernel's search for a free ephemeral
    /// port slows down sharply as one source's range fills (it runs out
    /// near 28 000): 19,000 connections from one source opened at 5.0 k/s,
    /// in blocks of 5,000 at 26.5 k/s, against the same server. A larger
    /// block measures the generator's kernel, not the server.
    #[arg(long, default_value_t = 5_000)]
    pub(crate) per_source_ip: usize,
    /// Connection attempts in flight at once, over all threads.
    #[arg(long, default_value_t = 256)]
    pub(crate) connect_concurrency: usize,
    /// Subscribers that read slowly (a small receive buffer and a sleep
    /// between reads), to make the server's slow-consumer policy act.
    #[arg(long, default_value_t = 0)]
    pub(crate) slow_subscribers: usize,
    /// No progress line each second on stderr (the summary and the JSON
    /// line are printed either way).
    #[arg(long)]
    pub(crate) quiet: bool,
    /// How long a slow subscriber sleeps after each read.
    #[arg(long, default_value = "10ms", value_parser = parse_duration)]
    pub(crate) slow_read_delay: Duration,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (expected e.g. 500ms, 10s)"))
}

/// The scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Scenario {
    /// S subscribers in one room, P publishers.
    Fanout,
    /// R rooms, k subscribers and one publisher each.
    Rooms,
    /// Publish-to-delivery latency at a fixed rate.
    Latency,
    /// Open N connections and hold them.
    Connections,
}

impl Scenario {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Scenario::Fanout => "fanout",
            Scenario::Rooms => "rooms",
            Scenario::Latency => "latency",
            Scenario::Connections => "connections",
        }
    }
}

/// `--codec`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum CodecArg {
    Msgpack,
    Proto,
}

impl From<CodecArg> for Codec {
    fn from(arg: CodecArg) -> Codec {
        match arg {
            CodecArg::Msgpack => Codec::MsgPack,
            CodecArg::Proto => Codec::Proto,
        }
    }
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) addr: SocketAddr,
    /// The `Host` header.
    pub(crate) host: String,
    pub(crate) path: String,
    pub(crate) codec: Codec,
}

/// How publishers pace themselves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum PublishMode {
    /// Open loop: this many messages per second from each publisher,
    /// fire-and-forget (id 0), whatever the server does.
    Rate { per_publisher: f64 },
    /// Closed loop: at most this many unacknowledged publishes per publisher.
    Window(usize),
}

/// One subscriber connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SubscriberSpec {
    /// Index into [`PubSubPlan::rooms`].
    pub(crate) room: usize,
    /// Reads slowly (`--slow-subscribers`).
    pub(crate) slow: bool,
}

/// A resolved `fanout`, `rooms` or `latency` run.
#[derive(Debug, Clone)]
pub(crate) struct PubSubPlan {
    pub(crate) scenario: Scenario,
    /// No progress lines.
    pub(crate) quiet: bool,
    pub(crate) target: Target,
    /// Where subscriber `i` connects: `subscriber_targets[i % len]`.
    pub(crate) subscriber_targets: Vec<Target>,
    pub(crate) payload: usize,
    /// Room names, unique to this run so offsets start fresh.
    pub(crate) rooms: Vec<RoomName>,
    pub(crate) subscribers: Vec<SubscriberSpec>,
    /// The room of each publisher connection.
    pub(crate) publishers: Vec<usize>,
    pub(crate) mode: PublishMode,
    /// Total publish rate asked for, if open loop.
    pub(crate) rate: Option<f64>,
    pub(crate) warmup: Duration,
    pub(crate) duration: Duration,
    pub(crate) drain_timeout: Duration,
    pub(crate) threads: usize,
    pub(crate) connect_concurrency: usize,
    pub(crate) slow_read_delay: Duration,
    pub(crate) server_pid: Option<u32>,
}

impl PubSubPlan {
    /// Where subscriber `i` connects.
    pub(crate) fn subscriber_target(&self, i: usize) -> &Target {
        &self.subscriber_targets[i % self.subscriber_targets.len()]
    }
}

/// A resolved `connections` run.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionsPlan {
    pub(crate) target: Target,
    /// No progress lines.
    pub(crate) quiet: bool,
    pub(crate) connections: usize,
    /// Each connection subscribes to room `i % rooms` (none when empty).
    pub(crate) rooms: Vec<RoomName>,
    pub(crate) hold: Duration,
    pub(crate) per_source_ip: usize,
    pub(crate) threads: usize,
    pub(crate) connect_concurrency: usize,
    pub(crate) server_pid: Option<u32>,
}

/// What `args` asks for, with the scenario's defaults.
pub(crate) enum Plan {
    PubSub(PubSubPlan),
    Connections(ConnectionsPlan),
}

impl Args {
    pub(crate) fn plan(&self) -> anyhow::Result<Plan> {
        let threads = self
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        if threads == 0 {
            bail!("--threads must be at least 1");
        }
        let target = Target {
            addr: self.addr,
            host: self.addr.to_string(),
            path: self.path.clone(),
            codec: self.codec.into(),
        };
        let run_id = format!("{:x}", std::process::id());
        let room =
            |i: usize| RoomName::new(&format!("load-{run_id}-{i}")).context("building a room name");
        let connect_concurrency = self.connect_concurrency.max(1);
        if self.scenario == Scenario::Connections {
            let rooms = (0..self.rooms.unwrap_or(0))
                .map(room)
                .collect::<anyhow::Result<_>>()?;
            return Ok(Plan::Connections(ConnectionsPlan {
                target,
                quiet: self.quiet,
                connections: self.connections.unwrap_or(10_000),
                rooms,
                hold: self.hold,
                per_source_ip: self.per_source_ip.max(1),
                threads,
                connect_concurrency,
                server_pid: self.server_pid,
            }));
        }

        if self.payload < 8 {
            bail!("--payload must be at least 8 bytes: the first 8 carry the send timestamp");
        }
        let (room_count, per_room, publishers_per_room, rate) = match self.scenario {
            Scenario::Fanout => (
                1,
                self.subscribers.unwrap_or(1000),
                self.publishers.unwrap_or(1),
                self.rate,
            ),
            Scenario::Latency => (
                1,
                self.subscribers.unwrap_or(100),
                self.publishers.unwrap_or(1),
                Some(self.rate.unwrap_or(1000.0)),
            ),
            Scenario::Rooms => (
                self.rooms.unwrap_or(100),
                self.per_room.unwrap_or(10),
                self.publishers.unwrap_or(1),
                self.rate,
            ),
            Scenario::Connections => unreachable!("handled above"),
        };
        if room_count == 0 || publishers_per_room == 0 {
            bail!("a run needs at least one room and one publisher");
        }
        let rooms = (0..room_count)
            .map(room)
            .collect::<anyhow::Result<Vec<_>>>()?;
        // Subscribers are laid out room by room; the slow ones are spread
        // evenly over them.
        let total = room_count * per_room;
        let slow = self.slow_subscribers.min(total);
        let stride = total.div_ceil(slow.max(1)).max(1);
        let subscribers = (0..total)
            .map(|i| SubscriberSpec {
                room: i / per_room,
                slow: i % stride == 0 && i / stride < slow,
            })
            .collect();
        let publishers: Vec<usize> = (0..room_count * publishers_per_room)
            .map(|i| i % room_count)
            .collect();
        let mode = match rate {
            Some(rate) if rate > 0.0 && rate.is_finite() => PublishMode::Rate {
                per_publisher: rate / publishers.len() as f64,
            },
            Some(_) => bail!("--rate must be a positive number of messages per second"),
            None if self.window == 0 => bail!("--window must be at least 1"),
            None => PublishMode::Window(self.window),
        };
        let subscriber_targets = if self.subscriber_addrs.is_empty() {
            vec![target.clone()]
        } else {
            self.subscriber_addrs
                .iter()
                .map(|&addr| Target {
                    addr,
                    host: addr.to_string(),
                    ..target.clone()
                })
                .collect()
        };
        Ok(Plan::PubSub(PubSubPlan {
            scenario: self.scenario,
            quiet: self.quiet,
            target,
            subscriber_targets,
            payload: self.payload,
            rooms,
            subscribers,
            publishers,
            mode,
            rate,
            warmup: self.warmup,
            duration: self.duration,
            drain_timeout: self.drain_timeout,
            threads,
            connect_concurrency,
            slow_read_delay: self.slow_read_delay,
            server_pid: self.server_pid,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(line: &str) -> PubSubPlan {
        let args = Args::try_parse_from(line.split_whitespace()).unwrap();
        match args.plan().unwrap() {
            Plan::PubSub(plan) => plan,
            Plan::Connections(_) => panic!("not a pub/sub plan"),
        }
    }

    #[test]
    fn scenario_defaults() {
        let fanout = plan("roomcast-load fanout --threads 2");
        assert_eq!((fanout.rooms.len(), fanout.subscribers.len()), (1, 1000));
        assert_eq!(fanout.mode, PublishMode::Window(64));

        let rooms = plan("roomcast-load rooms --rate 1000");
        assert_eq!((rooms.rooms.len(), rooms.subscribers.len()), (100, 1000));
        assert_eq!(rooms.publishers.len(), 100);
        assert_eq!(rooms.subscribers[15].room, 1);
        assert_eq!(
            rooms.mode,
            PublishMode::Rate {
                per_publisher: 10.0
            }
        );

        let latency = plan("roomcast-load latency --publishers 2");
        assert_eq!(latency.subscribers.len(), 100);
        assert_eq!(
            latency.mode,
            PublishMode::Rate {
                per_publisher: 500.0
            }
        );
    }

    #[test]
    fn slow_subscribers_are_spread_and_counted() {
        let p = plan("roomcast-load rooms --rooms 10 --per-room 10 --slow-subscribers 5");
        let slow: Vec<usize> = (0..p.subscribers.len())
            .filter(|&i| p.subscribers[i].slow)
            .collect();
        assert_eq!(slow, vec![0, 20, 40, 60, 80]);
        let p = plan("roomcast-load fanout --subscribers 3 --slow-subscribers 9");
        assert!(p.subscribers.iter().all(|s| s.slow));
    }

    #[test]
    fn subscribers_spread_over_the_nodes_given_publishers_stay_on_addr() {
        let p = plan(
            "roomcast-load fanout --addr 127.0.0.1:1 --subscriber-addr 127.0.0.1:2 --subscriber-addr 127.0.0.1:3",
        );
        let ports: Vec<u16> = (0..4).map(|i| p.subscriber_target(i).addr.port()).collect();
        assert_eq!(ports, vec![2, 3, 2, 3]);
        assert_eq!(p.target.addr.port(), 1);
        let single = plan("roomcast-load fanout --addr 127.0.0.1:1");
        assert_eq!(single.subscriber_target(5).addr.port(), 1);
    }

    #[test]
    fn refuses_a_payload_without_room_for_the_timestamp() {
        let args = Args::try_parse_from(["roomcast-load", "fanout", "--payload", "4"]).unwrap();
        assert!(args.plan().is_err());
    }
}
