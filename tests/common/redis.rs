//! Real Redis servers for the tests: a standalone `redis-server`, or a
//! 3-master Redis Cluster made with `redis-cli --cluster create`, each on
//! free ports of 127.0.0.1, each stopped by pid when dropped.
//! `scripts/test.sh` installs `redis-server` and `redis-tools` (Debian).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    let probe = TcpListener::bind("127.0.0.1:0").expect("bind a probe");
    probe.local_addr().expect("its address").port()
}

/// One `redis-server` process.
pub struct Redis {
    child: Child,
    pub port: u16,
    dir: PathBuf,
    args: Vec<String>,
}

impl Redis {
    /// A standalone server without persistence.
    pub fn start() -> Redis {
        Redis::start_with(&["--save", "", "--appendonly", "no"])
    }

    /// A server with these extra arguments (e.g. `--appendonly yes`), in a
    /// directory of its own.
    pub fn start_with(args: &[&str]) -> Redis {
        Redis::start_on(free_port(), args)
    }

    /// A server on `port` (to restart one where it was).
    pub fn start_on(port: u16, args: &[&str]) -> Redis {
        let dir =
            std::env::temp_dir().join(format!("roomcast-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a directory for redis");
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let child = spawn(port, &dir, &args);
        let redis = Redis {
            child,
            port,
            dir,
            args,
        };
        redis.wait_until_ready();
        redis
    }

    /// Kills the server (SIGKILL) and keeps it down until [`Redis::revive`].
    pub fn crash(&mut self) {
        self.stop();
    }

    /// Starts the server again on the same port, with the same arguments,
    /// in the same directory (so an append-only file is read back).
    pub fn revive(&mut self) {
        self.child = spawn(self.port, &self.dir, &self.args);
        self.wait_until_ready();
    }

    /// `redis://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Runs `redis-cli` against this server; its standard output, trimmed.
    pub fn cli(&self, args: &[&str]) -> String {
        cli(self.port, args)
    }

    fn wait_until_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if cli(self.port, &["ping"]) == "PONG" {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on port {} did not answer PING", self.port);
    }

    /// Stops the server at once (SIGKILL), as a crash would.
    pub fn kill(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn spawn(port: u16, dir: &std::path::Path, args: &[String]) -> Child {
    Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .arg("--dir")
        .arg(dir)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server runs (scripts/test.sh installs it)")
}

/// `redis-cli -p port args...`: its standard output, trimmed.
pub fn cli(port: u16, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli runs (scripts/test.sh installs redis-tools)");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// A Redis Cluster of three masters, with or without a replica each.
pub struct Cluster {
    pub nodes: Vec<Redis>,
}

impl Cluster {
    /// Three masters, no replicas.
    pub fn start() -> Cluster {
        Cluster::start_with_replicas(0)
    }

    /// Three masters with `replicas` replicas each.
    pub fn start_with_replicas(replicas: usize) -> Cluster {
        let count = 3 * (1 + replicas);
        let nodes: Vec<Redis> = (0..count)
            .map(|_| {
                Redis::start_with(&[
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--cluster-enabled",
                    "yes",
                    "--cluster-node-timeout",
                    "2000",
                ])
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let replicas = replicas.to_string();
        let mut create = vec!["--cluster", "create"];
        create.extend(addrs.iter().map(String::as_str));
        create.extend(["--cluster-replicas", &replicas, "--cluster-yes"]);
        let made = cli(nodes[0].port, &create);
        assert!(made.contains("[OK]"), "cluster create failed: {made}");
        let cluster = Cluster { nodes };
        let known = format!("cluster_known_nodes:{count}");
        let deadline = Instant::now() + Duration::from_secs(15);
        // Every node must see the whole cluster (each one answers
        // CLUSTERDOWN until it does), not only the one that created it.
        while Instant::now() < deadline {
            let ready = cluster.nodes.iter().all(|node| {
                let info = node.cli(&["cluster", "info"]);
                info.contains("cluster_state:ok") && info.contains(&known)
            });
            if ready {
                return cluster;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the cluster did not reach cluster_state:ok on every node");
    }

    /// fred's URL form for a cluster: one seed node, the others as `node=`.
    pub fn url(&self) -> String {
        let mut url = format!("redis-cluster://127.0.0.1:{}", self.nodes[0].port);
        for (i, node) in self.nodes.iter().enumerate().skip(1) {
            url.push(if i == 1 { '?' } else { '&' });
            url.push_str(&format!("node=127.0.0.1:{}", node.port));
        }
        url
    }
}

impl Cluster {
    /// The masters' ports.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }
}

/// Moves `slot` from the master that owns it to another, the way
/// `redis-cli --cluster reshard` does: IMPORTING and MIGRATING, every key
/// with MIGRATE, then the new owner announced to every master. Clients see
/// ASK and MOVED redirections (and TRYAGAIN) meanwhile.
pub fn migrate_slot(ports: &[u16], slot: u16) {
    let id = |port: u16| cli(port, &["cluster", "myid"]);
    let owner = *ports
        .iter()
        .find(|&&port| owns(port, slot))
        .expect("some master owns the slot");
    let target = *ports.iter().find(|&&p| p != owner).expect("another master");
    let (slot_arg, owner_id, target_id) = (slot.to_string(), id(owner), id(target));
    cli(
        target,
        &["cluster", "setslot", &slot_arg, "importing", &owner_id],
    );
    cli(
        owner,
        &["cluster", "setslot", &slot_arg, "migrating", &target_id],
    );
    loop {
        let keys = cli(owner, &["cluster", "getkeysinslot", &slot_arg, "100"]);
        let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
        if keys.is_empty() {
            break;
        }
        let target_port = target.to_string();
        let mut migrate = vec![
            "migrate",
            "127.0.0.1",
            &target_port,
            "",
            "0",
            "5000",
            "keys",
        ];
        migrate.extend(keys);
        let answer = cli(owner, &migrate);
        assert!(
            answer.contains("OK") || answer.contains("NOKEY"),
            "MIGRATE: {answer}"
        );
    }
    for &port in ports {
        cli(port, &["cluster", "setslot", &slot_arg, "node", &target_id]);
    }
}

/// Whether the master on `port` owns `slot` now.
fn owns(port: u16, slot: u16) -> bool {
    let nodes = cli(port, &["cluster", "nodes"]);
    let Some(me) = nodes.lines().find(|line| line.contains("myself")) else {
        return false;
    };
    me.split_whitespace().skip(8).any(|range| {
        let mut bounds = range.split('-').map(|b| b.parse::<u16>().ok());
        match (bounds.next().flatten(), bounds.next().flatten()) {
            (Some(lo), Some(hi)) => (lo..=hi).contains(&slot),
            (Some(single), None) => single == slot,
            _ => false,
        }
    })
}

/// A manual failover of the master that owns `slot`: its replica asks for
/// it (`CLUSTER FAILOVER`), the master hands over once the replica has
/// everything it wrote, and the roles swap. Returns once the replica is the
/// master and every node agrees the cluster is fine.
pub fn fail_over(ports: &[u16], slot: u16) {
    let owner = *ports
        .iter()
        .find(|&&port| owns(port, slot))
        .expect("some master owns the slot");
    let owner_id = cli(owner, &["cluster", "myid"]);
    // The replica as any node lists it (a node learns of replicas a little
    // after the cluster is up).
    let replica_of = |port: u16| -> Option<u16> {
        cli(port, &["cluster", "nodes"])
            .lines()
            .find(|line| {
                line.contains("slave") && line.split_whitespace().nth(3) == Some(owner_id.as_str())
            })
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|addr| addr.split('@').next())
            .and_then(|addr| addr.rsplit(':').next())
            .and_then(|port| port.parse().ok())
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let replica = loop {
        if let Some(replica) = ports.iter().find_map(|&port| replica_of(port)) {
            break replica;
        }
        assert!(Instant::now() < deadline, "the master has a replica");
        std::thread::sleep(Duration::from_millis(50));
    };
    // A replica still in its first full sync cannot take over.
    while !cli(replica, &["info", "replication"]).contains("master_link_status:up") {
        assert!(Instant::now() < deadline, "the replica never synced");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(cli(replica, &["cluster", "failover"]), "OK");
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut asked = Instant::now();
    while Instant::now() < deadline {
        // A manual failover the master did not join in time is dropped
        // (after twice the node timeout): ask again.
        if asked.elapsed() > Duration::from_secs(5)
            && !cli(replica, &["role"]).starts_with("master")
        {
            cli(replica, &["cluster", "failover"]);
            asked = Instant::now();
        }
        let promoted = cli(replica, &["role"]).starts_with("master");
        let settled = ports
            .iter()
            .all(|&port| cli(port, &["cluster", "info"]).contains("cluster_state:ok"));
        if promoted && settled && owns(replica, slot) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("the replica on port {replica} did not take over slot {slot}");
}
