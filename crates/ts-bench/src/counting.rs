//! Counting what one request costs: MongoDB commands, KMS calls and internal RPCs from the
//! services' own OpenTelemetry metrics (counters, and the count of `rpc.server.call.duration`;
//! through the bench's OTLP receiver), and Redis
//! commands from the Redis server's `INFO commandstats`. A counting pass reads every counter,
//! runs exactly K requests, reads again and divides the difference by K.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use ts_testkit::otlp::{Counters, Snapshot};

/// The services whose RPCs count as internal (everything behind the gateway).
pub const INTERNAL: [&str; 4] = ["auth", "keyvault", "folders", "invitations"];
/// Every service process of the stack, as its `service.name`.
pub const ALL_SERVICES: [&str; 5] = ["auth", "keyvault", "folders", "invitations", "gateway"];

/// How long after the last answer background work (audit records sent after the reply,
/// cache fills) is given to land before counters are read.
const SETTLE: Duration = Duration::from_millis(300);

/// Every counter at one moment.
#[derive(Debug, Clone)]
pub struct Reading {
    otel: Snapshot,
    redis: HashMap<String, u64>,
    at: std::time::Instant,
}

/// What one request cost on average over a counting pass (totals divided by K).
#[derive(Debug, Clone, Default)]
pub struct PerRequest {
    /// Requests in the pass.
    pub requests: u64,
    /// How long the counters were apart (the pass plus waiting for fresh exports).
    pub window: Duration,
    /// MongoDB commands sent by every service.
    pub mongo: f64,
    /// Redis commands executed (scripts' own calls included), less the bench's INFO.
    pub redis: f64,
    /// KMS calls (every provider operation).
    pub kms: f64,
    /// RPCs served by auth, keyvault, folders and invitations (health checks excluded).
    pub internal: f64,
    /// RPCs served by the gateway: 1.00 when the pass was counted right.
    pub gateway: f64,
    /// The same, by kind: `mongo find`, `redis evalsha`, `rpc folders ItemService/GetItem`…
    pub detail: BTreeMap<String, f64>,
}

/// Reads the counters of one stack: the OTLP receiver's and Redis's.
#[derive(Debug, Clone)]
pub struct Meter {
    counters: Counters,
    redis_port: u16,
    fresh_timeout: Duration,
}

impl Meter {
    /// Counters from `counters` (exported by the services every `export_interval`) and the
    /// Redis on `redis_port`.
    pub fn new(counters: Counters, redis_port: u16, export_interval: Duration) -> Self {
        Meter { counters, redis_port, fresh_timeout: export_interval * 10 + Duration::from_secs(5) }
    }

    /// Every counter, once in-flight work has settled and every service has exported a
    /// collection made after that.
    pub async fn read(&self) -> anyhow::Result<Reading> {
        tokio::time::sleep(SETTLE).await;
        let after = SystemTime::now();
        self.counters.wait_fresh(&ALL_SERVICES, after, self.fresh_timeout).await?;
        let otel = self.counters.snapshot();
        let redis = commandstats(self.redis_port).await?;
        Ok(Reading { otel, redis, at: std::time::Instant::now() })
    }

    /// The counts between `before` and `after`, divided by `requests`.
    pub fn per_request(&self, before: &Reading, after: &Reading, requests: u64) -> PerRequest {
        let k = requests.max(1) as f64;
        let mut out = PerRequest { requests, window: after.at.duration_since(before.at), ..PerRequest::default() };
        let mut add = |detail: String, n: f64| {
            if n != 0.0 {
                *out.detail.entry(detail).or_default() += n / k;
            }
        };
        for (series, value) in &after.otel {
            let n = value - before.otel.get(series).copied().unwrap_or(0.0);
            match series.metric.as_str() {
                "mongodb.commands" => add(format!("mongo {}", series.attr("command")), n),
                "kms.requests" => add(format!("kms {} {}", series.attr("provider"), series.attr("op")), n),
                // Each call served is one measurement of the duration histogram.
                "rpc.server.call.duration" if !series.attr("rpc.service").starts_with("grpc.") => {
                    let service = series.attr("rpc.service").rsplit('.').next().unwrap_or_default();
                    add(format!("rpc {} {service}/{}", series.service, series.attr("rpc.method")), n);
                }
                _ => {}
            }
        }
        for (command, calls) in &after.redis {
            let mut n = calls.saturating_sub(before.redis.get(command).copied().unwrap_or(0));
            if command == "info" {
                // The INFO that took `before` is counted in `after`; `after`'s own is not.
                n = n.saturating_sub(1);
            }
            add(format!("redis {command}"), n as f64);
        }
        for (detail, n) in &out.detail {
            let mut parts = detail.splitn(3, ' ');
            match (parts.next(), parts.next()) {
                (Some("mongo"), _) => out.mongo += n,
                (Some("redis"), _) => out.redis += n,
                (Some("kms"), _) => out.kms += n,
                (Some("rpc"), Some("gateway")) => out.gateway += n,
                (Some("rpc"), Some(service)) if INTERNAL.contains(&service) => out.internal += n,
                _ => {}
            }
        }
        out
    }
}

/// Calls per command from `INFO commandstats` of the Redis on `port`, over a connection of
/// its own (connecting sends no command).
pub async fn commandstats(port: u16) -> anyhow::Result<HashMap<String, u64>> {
    let text = info(port, "commandstats").await?;
    let mut calls = HashMap::new();
    for line in text.lines() {
        // cmdstat_get:calls=12,usec=34,usec_per_call=2.83,rejected_calls=0,failed_calls=0
        let Some((name, fields)) = line.strip_prefix("cmdstat_").and_then(|l| l.split_once(':')) else { continue };
        let n = fields
            .split(',')
            .find_map(|f| f.strip_prefix("calls="))
            .and_then(|v| v.parse::<u64>().ok())
            .with_context(|| format!("unexpected INFO commandstats line: {line}"))?;
        calls.insert(name.to_owned(), n);
    }
    Ok(calls)
}

/// The text of `INFO <section>`, spoken in RESP by hand: one command, one bulk reply.
async fn info(port: u16, section: &str) -> anyhow::Result<String> {
    let stream =
        TcpStream::connect(("127.0.0.1", port)).await.with_context(|| format!("cannot reach redis on {port}"))?;
    let mut stream = BufReader::new(stream);
    let command = format!("*2\r\n$4\r\nINFO\r\n${}\r\n{section}\r\n", section.len());
    stream.get_mut().write_all(command.as_bytes()).await?;
    let mut header = String::new();
    stream.read_line(&mut header).await?;
    let Some(len) = header.trim_end().strip_prefix('$').and_then(|n| n.parse::<usize>().ok()) else {
        bail!("redis answered INFO with {header:?}");
    };
    let mut body = vec![0u8; len + 2];
    stream.read_exact(&mut body).await?;
    body.truncate(len);
    String::from_utf8(body).context("INFO reply is not UTF-8")
}
