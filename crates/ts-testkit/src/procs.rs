//! Real servers as child processes: the MongoDB-compatible server, Redis and a KMS API, on
//! free loopback ports. Each child runs under a tiny shell watchdog that kills it when this
//! process goes away, however it goes, so that no test leaves servers behind.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The transaction lifetime of the durable MongoDB-compatible server: a transaction whose
/// client died (a service killed mid-write) holds its documents this long at most.
pub const TRANSACTION_LIFETIME_SECS: u64 = 10;

/// How long a child may take to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The repository root (where `.venv` lives).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repository root exists")
}

/// A program in the repository's Python virtual environment (made by `make test`/`make dev`).
pub fn venv_bin(name: &str) -> anyhow::Result<PathBuf> {
    let path = repo_root().join(".venv/bin").join(name);
    if !path.exists() {
        bail!("{} is missing: run `make test` (or deploy/install-prereqs.sh) to install it", path.display());
    }
    Ok(path)
}

/// A port that was free a moment ago. Children cannot be handed a bound socket, so a start
/// that loses the race is retried with another port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("loopback is available")
}

/// A running child server. Dropping it stops the server.
#[derive(Debug)]
pub struct ServerProcess {
    /// What it is, for messages.
    pub name: &'static str,
    /// Its loopback port.
    pub port: u16,
    child: Child,
    log: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

impl ServerProcess {
    /// Starts `program args…` (with `{port}` replaced) under the watchdog, retrying on a
    /// port race, and waits until `ready` succeeds against the port.
    fn start(
        name: &'static str,
        program: &Path,
        args: &[&str],
        dir: Option<tempfile::TempDir>,
        ready: fn(u16) -> bool,
    ) -> anyhow::Result<ServerProcess> {
        let mut last_err = None;
        for _ in 0..5 {
            let port = free_port();
            let args: Vec<String> = args.iter().map(|a| a.replace("{port}", &port.to_string())).collect();
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            match Self::start_on(name, program, &args, &[], port, ready) {
                Ok(mut proc) => {
                    proc._dir = dir;
                    return Ok(proc);
                }
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("{name} did not start")))
    }

    /// Starts `program args…` with the extra environment `envs` under the watchdog, for a
    /// server whose configuration already names `port` (so there is no retry on another
    /// port), and waits until `ready` succeeds against the port. Its output goes to a log
    /// in `$TMPDIR/teamshare-test-logs/`.
    pub fn start_on(
        name: &'static str,
        program: &Path,
        args: &[&str],
        envs: &[(String, String)],
        port: u16,
        ready: fn(u16) -> bool,
    ) -> anyhow::Result<ServerProcess> {
        let logs = std::env::temp_dir().join("teamshare-test-logs");
        std::fs::create_dir_all(&logs)?;
        let log = logs.join(format!("{name}-{}-{port}.log", std::process::id()));
        // Appended: a server restarted on the same port keeps the log of the one before.
        let out = std::fs::OpenOptions::new().create(true).append(true).open(&log)?;
        // The watchdog: run the server in the background, block on our stdin, and kill
        // the server when stdin closes (we exited or dropped the handle).
        let child = Command::new("sh")
            .arg("-c")
            .arg(r#""$@" & server=$!; trap 'kill $server 2>/dev/null; wait $server' EXIT; read _ignored; exit 0"#)
            .arg("watchdog")
            .arg(program)
            .args(args)
            .env("PYTHONUNBUFFERED", "1")
            .envs(envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("cannot start {}", program.display()))?;
        let mut proc = ServerProcess { name, port, child, log, _dir: None };
        proc.wait_ready(ready)?;
        Ok(proc)
    }

    /// The process id of the server itself (the watchdog's child), while it runs.
    pub fn server_pid(&self) -> Option<u32> {
        let watchdog = self.child.id();
        let entries = std::fs::read_dir("/proc").ok()?;
        entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()).find(|pid| {
            // /proc/<pid>/stat: "pid (comm) state ppid ..."; comm may hold spaces, so read
            // the fields after its closing parenthesis.
            std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().and_then(|stat| {
                stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse().ok())
            }) == Some(watchdog)
        })
    }

    /// Keeps `dir` (the server's working directory) until the server stops.
    pub fn keep_dir(&mut self, dir: tempfile::TempDir) {
        self._dir = Some(dir);
    }

    /// Where the server's output goes.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    fn wait_ready(&mut self, ready: fn(u16) -> bool) -> anyhow::Result<()> {
        let start = Instant::now();
        while start.elapsed() < READY_TIMEOUT {
            if let Some(status) = self.child.try_wait()? {
                bail!("{} exited with {status} before accepting connections; log: {}", self.name, self.tail_log());
            }
            if ready(self.port) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("{} did not accept connections within {READY_TIMEOUT:?}; log: {}", self.name, self.tail_log())
    }

    fn tail_log(&self) -> String {
        let mut s = String::new();
        let _ = std::fs::File::open(&self.log).and_then(|mut f| f.read_to_string(&mut s));
        s.lines().rev().take(15).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// Stops the server now (SIGTERM through the watchdog) and waits for it.
    pub fn stop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }

    /// Kills the server the hard way (SIGKILL: nothing it has not synced survives, as when
    /// its host dies), then waits until it is gone and reaps the watchdog. A server that has
    /// already stopped is left as it is.
    pub fn kill(&mut self) {
        if let Some(pid) = self.server_pid() {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).stderr(Stdio::null()).status();
        }
        self.stop();
    }

    /// Starts a MongoDB-compatible server with an in-memory store.
    pub fn mongo() -> anyhow::Result<ServerProcess> {
        let bin = venv_bin("secantusd-py")?;
        Self::start(
            "mongo",
            &bin,
            &["--host", "127.0.0.1", "--port", "{port}", "--storage-path", ":memory:", "--log-level", "WARNING"],
            None,
            tcp_ready,
        )
    }

    /// Starts a MongoDB-compatible server with an in-memory store on `port` (one "restarted"
    /// empty where the services expect it).
    pub fn mongo_on(port: u16) -> anyhow::Result<ServerProcess> {
        let bin = venv_bin("secantusd-py")?;
        let port_arg = port.to_string();
        let args = ["--host", "127.0.0.1", "--port", &port_arg, "--storage-path", ":memory:", "--log-level", "WARNING"];
        Self::start_on("mongo", &bin, &args, &[], port, tcp_ready)
    }

    /// Starts a MongoDB-compatible server that stores in `dir` (created if missing), syncs
    /// every commit to disk before acknowledging it (so that a restart on the same directory
    /// keeps every acknowledged write), and aborts a transaction idle for
    /// [`TRANSACTION_LIFETIME_SECS`] (RELIABILITY.md: the `transactionLifetimeLimitSeconds`
    /// an operator sets for teamshare, whose transactions last milliseconds).
    pub fn mongo_durable(dir: &Path) -> anyhow::Result<ServerProcess> {
        let mut last_err = None;
        for _ in 0..5 {
            match Self::mongo_durable_on(free_port(), dir) {
                Ok(proc) => return Ok(proc),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("mongo did not start")))
    }

    /// [`ServerProcess::mongo_durable`] on `port` (a server "restarted" where the services
    /// expect it, on the same directory).
    pub fn mongo_durable_on(port: u16, dir: &Path) -> anyhow::Result<ServerProcess> {
        let python = venv_bin("python")?;
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let (port_arg, dir_arg) = (port.to_string(), dir.to_string_lossy().into_owned());
        let lifetime = TRANSACTION_LIFETIME_SECS.to_string();
        // secantusd's command line has no flag for the transaction lifetime its server
        // takes (mongod's transactionLifetimeLimitSeconds): run its own entry point with that
        // one argument given.
        let launcher = "import functools, sys\n\
            from secantus import cli, server\n\
            S = server.SecantusDBServer\n\
            S.__init__ = functools.partialmethod(S.__init__, transaction_lifetime_seconds=float(sys.argv.pop(1)))\n\
            sys.exit(cli.main())\n";
        let args = [
            "-c",
            launcher,
            &lifetime,
            "--host",
            "127.0.0.1",
            "--port",
            &port_arg,
            "--storage-path",
            &dir_arg,
            "--sync-on-commit",
            "--log-level",
            "WARNING",
        ];
        Self::start_on("mongo", &python, &args, &[], port, tcp_ready)
    }

    /// Starts a Redis server that keeps nothing on disk.
    pub fn redis() -> anyhow::Result<ServerProcess> {
        let dir = tempfile::tempdir()?;
        let dir_arg = dir.path().to_string_lossy().into_owned();
        let bin = which("redis-server")?;
        Self::start(
            "redis",
            &bin,
            &["--port", "{port}", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", &dir_arg],
            Some(dir),
            redis_ready,
        )
    }

    /// Starts a Redis server that keeps nothing on disk on `port` (a Redis "restarted"
    /// empty where the services expect it).
    pub fn redis_on(port: u16) -> anyhow::Result<ServerProcess> {
        let dir = tempfile::tempdir()?;
        let dir_arg = dir.path().to_string_lossy().into_owned();
        let port_arg = port.to_string();
        let bin = which("redis-server")?;
        let args = ["--port", &port_arg, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", &dir_arg];
        let mut proc = Self::start_on("redis", &bin, &args, &[], port, redis_ready)?;
        proc.keep_dir(dir);
        Ok(proc)
    }

    /// Starts an SMTP server (aiosmtpd) that prints every message it receives to its log.
    pub fn smtp() -> anyhow::Result<ServerProcess> {
        let python = venv_bin("python")?;
        Self::start(
            "smtp",
            &python,
            &["-m", "aiosmtpd", "-n", "-l", "127.0.0.1:{port}", "-c", "aiosmtpd.handlers.Debugging"],
            None,
            tcp_ready,
        )
    }

    /// Starts a static HTTP server for the files in `dir` (Python's http.server).
    pub fn http(dir: &Path) -> anyhow::Result<ServerProcess> {
        let python = venv_bin("python")?;
        let dir = dir.to_string_lossy().into_owned();
        Self::start(
            "http",
            &python,
            &["-m", "http.server", "{port}", "--bind", "127.0.0.1", "--directory", &dir],
            None,
            tcp_ready,
        )
    }

    /// Everything the server has written to its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Starts a KMS API server (moto).
    pub fn kms() -> anyhow::Result<ServerProcess> {
        let bin = venv_bin("moto_server")?;
        Self::start("kms", &bin, &["-H", "127.0.0.1", "-p", "{port}"], None, tcp_ready)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether something accepts TCP connections on loopback `port`.
pub fn tcp_ready(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok()
}

pub(crate) fn redis_ready(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 16];
    s.write_all(b"PING\r\n").is_ok() && s.read(&mut buf).map(|n| buf[..n].starts_with(b"+PONG")).unwrap_or(false)
}

fn which(name: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .with_context(|| format!("{name} not found: run `make test` (or deploy/install-prereqs.sh) to install it"))
}

/// Servers shared by every test in one test binary; each test still gets its own database
/// and its own KMS key.
#[derive(Debug)]
pub struct SharedServers {
    /// MongoDB-compatible server.
    pub mongo: ServerProcess,
    /// Redis.
    pub redis: ServerProcess,
    /// KMS API.
    pub kms: ServerProcess,
}

static SHARED: OnceLock<Result<SharedServers, String>> = OnceLock::new();

/// The servers of this test binary, started on first use. They stop when the process exits.
pub fn shared() -> anyhow::Result<&'static SharedServers> {
    SHARED
        .get_or_init(|| {
            let start = || -> anyhow::Result<SharedServers> {
                Ok(SharedServers {
                    mongo: ServerProcess::mongo()?,
                    redis: ServerProcess::redis()?,
                    kms: ServerProcess::kms()?,
                })
            };
            start().map_err(|e| format!("{e:#}"))
        })
        .as_ref()
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// Every key and every value in the Redis on `port`, whatever its type (strings, hashes,
/// lists, sets, sorted sets, streams), as the raw bytes Redis holds, one key's dump after
/// another. Tests scan it for what must never be cached.
pub fn redis_bytes(port: u16) -> anyhow::Result<Vec<u8>> {
    let cli = which("redis-cli")?;
    let port = port.to_string();
    let run = |args: &[&str]| -> anyhow::Result<Vec<u8>> {
        let out = Command::new(&cli).args(["-p", &port, "--raw"]).args(args).output()?;
        if !out.status.success() {
            bail!("redis-cli {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(out.stdout)
    };
    let keys = run(&["--scan"])?;
    let mut dump = keys.clone();
    for key in String::from_utf8_lossy(&keys).lines().filter(|k| !k.is_empty()) {
        let kind = String::from_utf8_lossy(&run(&["TYPE", key])?).trim().to_owned();
        let values = match kind.as_str() {
            "string" => run(&["GET", key])?,
            "hash" => run(&["HGETALL", key])?,
            "list" => run(&["LRANGE", key, "0", "-1"])?,
            "set" => run(&["SMEMBERS", key])?,
            "zset" => run(&["ZRANGE", key, "0", "-1", "WITHSCORES"])?,
            "stream" => run(&["XRANGE", key, "-", "+"])?,
            "none" => Vec::new(), // expired between the scan and now
            other => bail!("redis key {key} has a type this dump cannot read: {other}"),
        };
        dump.extend_from_slice(&values);
        dump.push(b'\n');
    }
    Ok(dump)
}

/// `redis_bytes` as text (invalid UTF-8 replaced), for tests that look for key names.
pub fn redis_dump(port: u16) -> anyhow::Result<String> {
    Ok(String::from_utf8_lossy(&redis_bytes(port)?).into_owned())
}
