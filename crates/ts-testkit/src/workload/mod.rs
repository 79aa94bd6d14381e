//! The reliability workload (issue 15): a few simulated users on loopback doing a team's real
//! mix through the public gateway, recording every acknowledged write in a ledger, bounded in
//! count and time, then an audit of what the system holds against the ledger.
//!
//! - [`Workload::setup`] signs the users in (email code from the development mailer), gives
//!   each a home folder it manages and shares each home folder with the next user.
//! - [`Workload::run`] / [`Workload::spawn`] drive the mix (module `mix`): mostly reads
//!   (ListFolders, ListItems, GetItem, ListMembers), creates with an AIP-155 `request_id`
//!   (a retry re-sends the same one), updates of the caller's own items by `expected_version`,
//!   invitations between workload users, accepts, access changes and removals. Every call is
//!   retried like the SDK does, more patiently (module `call`); an outcome that stays
//!   unknown is resolved by reading the state back.
//! - [`Workload::audit`] checks the ledger through the API as each user and in the database
//!   (module `audit`).
//!
//! Fault tests run phases (before, during, after a fault) with [`Workload::run`], or
//! [`Workload::spawn`] while they kill dependencies; `make soak` runs it for minutes.

mod audit;
mod call;
mod ledger;
mod mix;
mod stats;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tonic::transport::Channel;
use ts_proto::public::auth_service_client::AuthServiceClient;
use ts_proto::public::{CompleteEmailVerificationRequest, StartEmailVerificationRequest};

pub use self::audit::Audit;
pub use self::ledger::LedgerSummary;
pub use self::stats::Stats;

use self::call::RETRY;
use self::ledger::Ledger;

/// Where the workload runs: a stack's public gateway, its certificates, its development
/// mailer's directory and its database.
#[derive(Debug, Clone)]
pub struct Target {
    /// The gateway's public TLS listener.
    pub gateway: SocketAddr,
    /// The stack's certificates; the gateway's is checked against `ca_cert()` as "localhost".
    pub certs: ts_devca::DevCertPaths,
    /// Auth's internal listener (for operator calls; the workload needs none today: team
    /// sharing needs no license).
    pub auth: SocketAddr,
    /// Where the development mailer writes messages (verification codes are read there).
    pub mail_dir: PathBuf,
    /// The MongoDB(-compatible) server's URI, for the audit.
    pub mongo_uri: String,
    /// The stack's database name.
    pub database: String,
}

/// How much the workload does.
#[derive(Debug, Clone)]
pub struct WorkloadOptions {
    /// Simulated users (each signs in once, in setup).
    pub users: usize,
    /// Operations in flight at once.
    pub concurrency: usize,
    /// How long a run lasts.
    pub duration: Duration,
    /// At most this many operations per run (`None`: only `duration` bounds it).
    pub max_requests: Option<u64>,
    /// Operations per second in all, paced on a fixed schedule; `None`: closed loop (each
    /// worker starts its next operation when the last one ends).
    pub rate: Option<f64>,
    /// Seed of the operation choices (reproducible mixes; ids and markers stay random).
    pub seed: u64,
}

impl Default for WorkloadOptions {
    /// 6 users, 4 in flight, 30 s, closed loop: modest, for a 2-core machine that also runs
    /// the services and the database.
    fn default() -> Self {
        WorkloadOptions {
            users: 6,
            concurrency: 4,
            duration: Duration::from_secs(30),
            max_requests: None,
            rate: None,
            seed: 15,
        }
    }
}

/// A signed-in workload user.
struct User {
    email: String,
    user_id: String,
    /// (access token, refresh token).
    tokens: Mutex<(String, String)>,
    /// One RefreshSession at a time.
    refresh_lock: tokio::sync::Mutex<()>,
    /// Local pacing of CreateInvitation, below the gateway's per-inviter send rate.
    invite_bucket: Mutex<Bucket>,
}

impl User {
    fn access(&self) -> String {
        lock(&self.tokens).0.clone()
    }

    fn refresh_token(&self) -> String {
        lock(&self.tokens).1.clone()
    }

    fn set_tokens(&self, access: String, refresh: String) {
        *lock(&self.tokens) = (access, refresh);
    }
}

/// A token bucket: 20 at once, then 1.5 a minute (the gateway allows 25, then 2 a minute).
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new() -> Bucket {
        Bucket { tokens: 20.0, at: Instant::now() }
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * 1.5 / 60.0).min(20.0);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The workload: its users, one shared (lazily connecting) gateway channel, the ledger of
/// acknowledged writes and the secrets it saw.
pub struct Workload {
    target: Target,
    options: WorkloadOptions,
    channel: Channel,
    users: Vec<User>,
    ledger: Mutex<Ledger>,
    secrets: Mutex<Vec<crate::hygiene::Secret>>,
    runs: AtomicU64,
}

impl std::fmt::Debug for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workload").field("users", &self.users.len()).field("options", &self.options).finish()
    }
}

/// A mutex's guard, also after a panic elsewhere (the data stays usable for an audit).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A random marker, unique enough to grep for in dumps and logs.
fn marker() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

impl Workload {
    /// Signs `options.users` users in (`w<i>-<6 hex>@example.com`, StartEmailVerification then
    /// CompleteEmailVerification with the code from the development mailer), gives each a
    /// home folder it manages, and invites each user into the next one's home folder and
    /// accepts (so that reads cross users from the start). Team sharing needs no license, so
    /// none is set up.
    pub async fn setup(target: &Target, options: WorkloadOptions) -> anyhow::Result<Workload> {
        ts_runtime::tls::install_crypto_provider();
        // Lazy: a restarted gateway is reconnected to on the next call.
        let channel = crate::stack::public_endpoint(&target.certs, target.gateway)?
            .connect_timeout(Duration::from_secs(3))
            .timeout(call::ATTEMPT_TIMEOUT + Duration::from_secs(2))
            .connect_lazy();
        let mut workload = Workload {
            target: target.clone(),
            options: options.clone(),
            channel,
            users: Vec::new(),
            ledger: Mutex::new(Ledger::default()),
            secrets: Mutex::new(Vec::new()),
            runs: AtomicU64::new(0),
        };
        let run_tag = &marker()[..6];
        for i in 0..options.users.max(2) {
            let email = format!("w{i}-{run_tag}@example.com");
            let user = workload.sign_in(&email).await.with_context(|| format!("signing in user {i}"))?;
            workload.users.push(user);
        }
        let mut stats = Stats::new();
        for i in 0..workload.users.len() {
            workload.setup_folder(i, &mut stats).await.with_context(|| format!("home folder of user {i}"))?;
        }
        let n = workload.users.len();
        for i in 0..n {
            workload.setup_share(i, (i + 1) % n, &mut stats).await.with_context(|| format!("sharing user {i}'s"))?;
        }
        anyhow::ensure!(stats.unexpected.is_empty(), "setup: {}", stats.report());
        Ok(workload)
    }

    /// Runs the mix until `duration` or `max_requests` (of `options_override`, else of the
    /// setup options) and returns what it measured. May be called again (phases before,
    /// during and after a fault); the ledger carries over. Operations in flight when the time
    /// is up are finished (at most the retry budget, 20 s, later).
    pub async fn run(&self, options_override: Option<&WorkloadOptions>) -> anyhow::Result<Stats> {
        let options = options_override.unwrap_or(&self.options).clone();
        // Never fired: only the options bound this run.
        let (_never, stop) = watch::channel(false);
        Ok(self.drive(&options, stop).await)
    }

    /// Runs the mix (setup options, but no time or count bound other than one hour) until
    /// `stop` holds `true` or its sender is dropped: for tests that inject faults while it
    /// runs. Operations in flight then are finished first.
    pub fn spawn(self: &Arc<Self>, stop: watch::Receiver<bool>) -> tokio::task::JoinHandle<anyhow::Result<Stats>> {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let options =
                WorkloadOptions { duration: Duration::from_secs(3600), max_requests: None, ..this.options.clone() };
            Ok(this.drive(&options, stop).await)
        })
    }

    /// Counts of the ledger of acknowledged writes.
    pub fn ledger(&self) -> LedgerSummary {
        lock(&self.ledger).summary()
    }

    /// Every secret the workload produced or saw, for a hygiene scan of logs, dumps and
    /// traces: the plaintext item fields and folder names it wrote (each holds a random
    /// 32-hex marker), the verification codes it read, and every access and refresh token.
    pub fn secrets(&self) -> Vec<crate::hygiene::Secret> {
        lock(&self.secrets).clone()
    }

    /// Keeps `values` (secrets of `kind`) for [`Workload::secrets`].
    fn remember<I: IntoIterator<Item = String>>(&self, kind: &'static str, values: I) {
        lock(&self.secrets)
            .extend(values.into_iter().filter(|v| !v.is_empty()).map(|v| crate::hygiene::Secret::text(kind, &v)));
    }

    /// Keeps a verification code for [`Workload::secrets`] (looked for where it stands alone).
    fn remember_code(&self, code: &str) {
        lock(&self.secrets).push(crate::hygiene::Secret::token("verification code", code));
    }

    /// Runs `options.concurrency` workers until the time, the count or `stop`.
    async fn drive(&self, options: &WorkloadOptions, stop: watch::Receiver<bool>) -> Stats {
        let run = self.runs.fetch_add(1, Ordering::Relaxed);
        let deadline = tokio::time::Instant::now() + options.duration;
        let issued = AtomicU64::new(0);
        let workers = options.concurrency.max(1);
        let period = options.rate.filter(|r| *r > 0.0).map(|r| Duration::from_secs_f64(workers as f64 / r));
        let issued = &issued;
        let all = futures::future::join_all((0..workers).map(|w| {
            let mut stop = stop.clone();
            async move {
                let mut stats = Stats::new();
                let mut rng = Rng::new(options.seed ^ run.wrapping_mul(0xA24B_AED4_963E_E407) ^ ((w as u64 + 1) << 48));
                // Workers' ticks are spread evenly over one period.
                let mut ticker = period.map(|p| {
                    let first = tokio::time::Instant::now() + p.mul_f64(w as f64 / workers as f64);
                    let mut t = tokio::time::interval_at(first, p);
                    t.set_missed_tick_behavior(MissedTickBehavior::Delay);
                    t
                });
                loop {
                    if stopped(&stop) || tokio::time::Instant::now() >= deadline {
                        break;
                    }
                    if let Some(t) = ticker.as_mut() {
                        tokio::select! {
                            _ = t.tick() => {}
                            _ = tokio::time::sleep_until(deadline) => break,
                            _ = stop.wait_for(|s| *s) => break,
                        }
                    }
                    if let Some(max) = options.max_requests
                        && issued.fetch_add(1, Ordering::Relaxed) >= max
                    {
                        break;
                    }
                    self.step(&mut rng, &mut stats).await;
                }
                stats
            }
        }))
        .await;
        let mut total = Stats::new();
        for s in &all {
            total.merge(s);
        }
        total
    }

    /// Signs `email` in (codes and tokens are remembered as secrets).
    async fn sign_in(&self, email: &str) -> anyhow::Result<User> {
        let mut stats = Stats::new();
        let start = StartEmailVerificationRequest { email: email.into() };
        let before = crate::users::latest_code(&self.target.mail_dir, email);
        self.call(None, RETRY, &start, &mut stats, |ch, r| async move {
            AuthServiceClient::new(ch).start_email_verification(r).await
        })
        .await
        .map_err(|f| anyhow::anyhow!("StartEmailVerification: {f}"))?;
        // The mail may land a moment after the answer.
        let mut code = None;
        for _ in 0..50 {
            code = crate::users::latest_code(&self.target.mail_dir, email).filter(|c| Some(c) != before.as_ref());
            if code.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let code = code.context("no verification email arrived")?;
        self.remember_code(&code);
        let complete = CompleteEmailVerificationRequest { email: email.into(), code };
        let reply = self
            .call(None, RETRY, &complete, &mut stats, |ch, r| async move {
                AuthServiceClient::new(ch).complete_email_verification(r).await
            })
            .await
            .map_err(|f| anyhow::anyhow!("CompleteEmailVerification: {f}"))?;
        let tokens = reply.tokens.context("no tokens")?;
        let user = reply.user.context("no user")?;
        self.remember("token", [tokens.access_token.clone(), tokens.refresh_token.clone()]);
        Ok(User {
            email: user.email,
            user_id: user.id,
            tokens: Mutex::new((tokens.access_token, tokens.refresh_token)),
            refresh_lock: tokio::sync::Mutex::new(()),
            invite_bucket: Mutex::new(Bucket::new()),
        })
    }
}

/// Whether `stop` fired (or its sender is gone).
fn stopped(stop: &watch::Receiver<bool>) -> bool {
    *stop.borrow() || stop.has_changed().is_err()
}

/// SplitMix64: the operation choices, from the seed.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number below `n` (0 when `n` is 0).
    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next() % n as u64) as usize }
    }

    /// One of `items`, if any.
    fn pick<T: Clone>(&mut self, items: &[T]) -> Option<T> {
        if items.is_empty() { None } else { Some(items[self.below(items.len())].clone()) }
    }
}
