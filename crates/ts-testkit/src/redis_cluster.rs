//! A real Redis Cluster on loopback: three masters (`redis-server --cluster-enabled yes`)
//! joined by `redis-cli --cluster create`, shared by every test of one test binary, as
//! ElastiCache or Memorystore in cluster mode would be.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::procs::{ServerProcess, free_port, redis_dump};

/// A running Redis Cluster; its nodes stop with the test binary.
#[derive(Debug)]
pub struct RedisCluster {
    /// The masters, each holding a third of the slots.
    pub nodes: Vec<ServerProcess>,
}

static CLUSTER: OnceLock<Result<RedisCluster, String>> = OnceLock::new();

/// The Redis Cluster of this test binary, started on first use.
pub fn redis_cluster() -> anyhow::Result<&'static RedisCluster> {
    CLUSTER
        .get_or_init(|| RedisCluster::start(3).map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow::anyhow!("{e}"))
}

fn redis_cli() -> anyhow::Result<PathBuf> {
    ["/usr/bin/redis-cli", "/usr/local/bin/redis-cli"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .context("redis-cli not found: run `make test` (or deploy/install-prereqs.sh) to install it")
}

impl RedisCluster {
    /// Starts `masters` cluster-enabled nodes and joins them (no replicas).
    pub fn start(masters: usize) -> anyhow::Result<RedisCluster> {
        let server = ["/usr/bin/redis-server", "/usr/local/bin/redis-server"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .context("redis-server not found: run `make test` to install it")?;
        let mut nodes = Vec::new();
        for _ in 0..masters {
            let mut last = None;
            for _ in 0..5 {
                let dir = tempfile::tempdir()?;
                let port = free_port();
                let dir_arg = dir.path().to_string_lossy().into_owned();
                let args = [
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    &dir_arg,
                ]
                .map(str::to_owned);
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                match ServerProcess::start_on("redis-cluster", &server, &args, &[], port, crate::procs::redis_ready) {
                    Ok(mut node) => {
                        node.keep_dir(dir);
                        nodes.push(node);
                        last = None;
                        break;
                    }
                    Err(e) => last = Some(e),
                }
            }
            if let Some(e) = last {
                return Err(e);
            }
        }
        let cluster = RedisCluster { nodes };
        let addrs: Vec<String> = cluster.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let out = Command::new(redis_cli()?)
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()?;
        if !out.status.success() {
            bail!("redis-cli --cluster create failed: {}", String::from_utf8_lossy(&out.stdout));
        }
        cluster.wait_ok()?;
        Ok(cluster)
    }

    fn wait_ok(&self) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            let states: Vec<bool> = self
                .nodes
                .iter()
                .map(|n| self.cli(n.port, &["CLUSTER", "INFO"]).is_ok_and(|s| s.contains("cluster_state:ok")))
                .collect();
            if states.iter().all(|ok| *ok) {
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(30) {
                bail!("the Redis Cluster did not become ok: {states:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs one `redis-cli` command against one node and returns its output.
    pub fn cli(&self, port: u16, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(redis_cli()?).args(["-p", &port.to_string()]).args(args).output()?;
        if !out.status.success() {
            bail!("redis-cli {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The URL the services take: cluster mode, every node given as a seed.
    pub fn url(&self) -> String {
        let mut nodes = self.nodes.iter();
        let first = nodes.next().map_or(0, |n| n.port);
        let rest: Vec<String> = nodes.map(|n| format!("node=127.0.0.1:{}", n.port)).collect();
        format!("redis-cluster://127.0.0.1:{first}?{}", rest.join("&"))
    }

    /// The keys each node holds (a node holds only its own slots' keys).
    pub fn keys_per_node(&self) -> anyhow::Result<Vec<Vec<String>>> {
        self.nodes
            .iter()
            .map(|n| Ok(self.cli(n.port, &["--scan"])?.lines().filter(|l| !l.is_empty()).map(str::to_owned).collect()))
            .collect()
    }

    /// Every key and value of every node, as `redis_dump` gives them.
    pub fn dump(&self) -> anyhow::Result<String> {
        let mut all = String::new();
        for n in &self.nodes {
            all.push_str(&redis_dump(n.port)?);
        }
        Ok(all)
    }

    /// How often each node refused a command because its keys span slots (`CROSSSLOT`), from
    /// `INFO errorstats`: the one error a client cannot recover from by following a redirect.
    pub fn cross_slot_errors(&self) -> anyhow::Result<u64> {
        let mut total = 0;
        for n in &self.nodes {
            let stats = self.cli(n.port, &["INFO", "errorstats"])?;
            for line in stats.lines().filter(|l| l.starts_with("errorstat_CROSSSLOT:")) {
                let count = line.split("count=").nth(1).and_then(|c| c.trim().parse::<u64>().ok()).unwrap_or(1);
                total += count;
            }
        }
        Ok(total)
    }
}
