//! What every fault test shares: a stack of processes with its dependencies behind fault
//! proxies, the workload on it, load running in the background while a fault lasts, probes
//! that time a single call, and the end-of-test checks.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::{Mutex, MutexGuard, watch};
use tokio::task::JoinHandle;
use ts_testkit::stack::{ProcessStack, StackOptions};
use ts_testkit::workload::{Stats, Workload, WorkloadOptions};

/// One stack at a time in this binary.
static SERIAL: Mutex<()> = Mutex::const_new(());

/// The longest any single call may take while a dependency is down or slow: the gateway's
/// downstream deadline (5 s) plus the time to answer.
pub const NO_HANG: Duration = Duration::from_secs(8);

/// The `teamshare` binary next to this test binary (`make unit` builds every binary first).
pub fn teamshare_bin() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().and_then(Path::parent).context("target directory")?;
    let bin = dir.join("teamshare");
    anyhow::ensure!(bin.exists(), "{} is missing: cargo build -p teamshare", bin.display());
    Ok(bin)
}

/// A stack of processes and a workload on it, for one test.
pub struct Fixture {
    /// The stack; the test breaks and mends it.
    pub stack: ProcessStack,
    /// The simulated users.
    pub workload: Arc<Workload>,
    _serial: MutexGuard<'static, ()>,
}

/// The workload the fault tests run: a handful of users, a few requests in flight.
pub fn workload_options() -> WorkloadOptions {
    WorkloadOptions {
        users: 6,
        concurrency: 4,
        duration: Duration::from_secs(4),
        max_requests: None,
        rate: None,
        seed: 15,
    }
}

impl Fixture {
    /// Starts a stack with MongoDB durable (so a restart keeps what was synced) and every
    /// dependency behind a fault proxy, then signs the workload's users in.
    pub async fn start() -> anyhow::Result<Fixture> {
        Fixture::start_with(|_| {}).await
    }

    /// As [`Fixture::start`], with `adjust` applied to the stack's options first.
    pub async fn start_with(adjust: impl FnOnce(&mut StackOptions)) -> anyhow::Result<Fixture> {
        let serial = SERIAL.lock().await;
        let mut options = StackOptions::new(teamshare_bin()?);
        options.faults = true;
        options.durable_mongo = true;
        // The production default (the bench's stack waits longer for its huge first reads).
        options.extra_toml = "[gateway]\ndownstream_timeout_ms = 5000\n".into();
        adjust(&mut options);
        let stack = ProcessStack::start(&options).await?;
        let workload = Arc::new(Workload::setup(&stack.target(), workload_options()).await?);
        Ok(Fixture { stack, workload, _serial: serial })
    }

    /// Runs the workload in the background until [`Load::finish`].
    pub fn load(&self) -> Load {
        let (stop, rx) = watch::channel(false);
        Load { stop, task: self.workload.spawn(rx) }
    }

    /// A bounded phase of the workload in the foreground.
    pub async fn phase(&self, requests: u64) -> anyhow::Result<Stats> {
        self.workload.run(Some(&phase_options(requests))).await
    }

    /// A bounded phase of the workload in a task of its own, so that the test can break and
    /// mend the stack while it runs.
    pub fn spawn_phase(&self, requests: u64) -> JoinHandle<anyhow::Result<Stats>> {
        let workload = self.workload.clone();
        tokio::spawn(async move { workload.run(Some(&phase_options(requests))).await })
    }

    /// The consistency audit; fails the test with every violation found.
    pub async fn audit(&self) -> anyhow::Result<()> {
        let audit = self.workload.audit().await?;
        anyhow::ensure!(
            audit.violations.is_empty(),
            "the audit found {} violations:\n{}",
            audit.violations.len(),
            audit.violations.join("\n")
        );
        anyhow::ensure!(audit.items_checked > 0 && audit.folders_checked > 0, "the audit checked nothing: {audit:?}");
        // Error paths log the most: no secret the run produced may be in a log, MongoDB or
        // Redis after a fault either.
        let scan = ts_testkit::hygiene::scan_stack(&self.stack, self.workload.secrets()).await?;
        anyhow::ensure!(scan.hits.is_empty(), "secrets found after the fault: {:?}", scan.hits);
        Ok(())
    }
}

/// The workload running in the background.
pub struct Load {
    stop: watch::Sender<bool>,
    task: JoinHandle<anyhow::Result<Stats>>,
}

impl Load {
    /// Stops the workload and returns what it saw.
    pub async fn finish(self) -> anyhow::Result<Stats> {
        let _ = self.stop.send(true);
        self.task.await.context("the workload panicked")?
    }
}

/// Fails unless the workload saw no unexpected answer and made progress.
pub fn assert_no_unexpected(stats: &Stats, during: &str) {
    assert!(stats.ok > 0, "no request succeeded {during}: {}", stats.report());
    assert!(stats.unexpected.is_empty(), "unexpected answers {during}:\n{}", stats.report());
}

/// Runs `call` once and returns its result and how long it took; fails if it took longer
/// than [`NO_HANG`] (the client's own deadline is twice that, so a hang shows as a failure
/// here, not as a stuck test).
pub async fn timed<T, F>(what: &str, call: F) -> (Result<T, tonic::Status>, Duration)
where
    F: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let start = Instant::now();
    let result = match tokio::time::timeout(NO_HANG * 2, call).await {
        Ok(result) => result,
        Err(_) => panic!("{what} hung for {:?}", NO_HANG * 2),
    };
    let took = start.elapsed();
    assert!(took <= NO_HANG, "{what} took {took:?}, more than {NO_HANG:?}");
    (result, took)
}

/// Asserts `status` is UNAVAILABLE with a `RetryInfo` hint (what the SDKs retry on), and says
/// nothing of what failed inside.
pub fn assert_unavailable_with_hint(status: &tonic::Status, what: &str) {
    assert_eq!(status.code(), tonic::Code::Unavailable, "{what}: {status:?}");
    assert!(ts_contract::status::retry_delay(status).is_some(), "{what}: no RetryInfo in {status:?}");
    let message = status.message().to_ascii_lowercase();
    for inner in ["mongo", "redis", "kms", "127.0.0.1", "connection refused", "keyvault"] {
        assert!(!message.contains(inner), "{what}: the message names {inner:?}: {status:?}");
    }
}

/// Calls `attempt` until it succeeds or `within` passes; returns the last result.
pub async fn until_ok<T, F, Fut>(within: Duration, mut attempt: F) -> Result<T, tonic::Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let start = Instant::now();
    loop {
        let result = attempt().await;
        if result.is_ok() || start.elapsed() >= within {
            return result;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A small team of its own beside the workload, for the probes: alice manages a folder with
/// one item, bob edits it, carol views it (both joined through invitations).
pub struct Team {
    /// The gateway (a lazy channel: it reconnects after the gateway restarts).
    pub gateway: tonic::transport::Channel,
    /// The manager.
    pub alice: ts_testkit::Session,
    /// An editor.
    pub bob: ts_testkit::Session,
    /// A viewer.
    pub carol: ts_testkit::Session,
    /// The folder.
    pub folder_id: String,
    /// The item in it.
    pub item_id: String,
}

impl Team {
    /// Signs the three in and builds the folder.
    pub async fn start(stack: &ProcessStack) -> anyhow::Result<Team> {
        use ts_proto::public::AccessLevel;
        let gateway = lazy_gateway(stack)?;
        let alice = sign_in(stack, &gateway, "alice").await?;
        let bob = sign_in(stack, &gateway, "bob").await?;
        let carol = sign_in(stack, &gateway, "carol").await?;
        let folder_id = ts_testkit::Folders::new(&gateway, &alice).create("Probes").await?;
        let item = ts_testkit::Items::new(&gateway, &alice)
            .create(&folder_id, "Orders", ts_testkit::query_content("{}"))
            .await?;
        let item_id = item.item.and_then(|i| i.summary).map(|s| s.id).context("created item")?;
        for (who, access) in [(&bob, AccessLevel::Edit), (&carol, AccessLevel::View)] {
            let invitation =
                ts_testkit::Invitations::new(&gateway, &alice).send(&folder_id, &who.email, access).await?;
            ts_testkit::Invitations::new(&gateway, who).accept(&invitation.id).await?;
        }
        Ok(Team { gateway, alice, bob, carol, folder_id, item_id })
    }

    /// `who` creates an item named `name` in the team's folder.
    pub async fn create_item(&self, who: &ts_testkit::Session, name: &str) -> Result<String, tonic::Status> {
        let reply = ts_testkit::Items::new(&self.gateway, who)
            .create(&self.folder_id, name, ts_testkit::query_content("{}"))
            .await?;
        Ok(reply.item.and_then(|i| i.summary).map(|s| s.id).unwrap_or_default())
    }

    /// `who` reads the team's item.
    pub async fn get_item(&self, who: &ts_testkit::Session) -> Result<(), tonic::Status> {
        use ts_proto::public::GetItemRequest;
        use ts_proto::public::item_service_client::ItemServiceClient;
        let request = GetItemRequest { folder_id: self.folder_id.clone(), item_id: self.item_id.clone() };
        ItemServiceClient::new(self.gateway.clone()).get_item(who.request(request)).await.map(drop)
    }

    /// `who` lists the team folder's items.
    pub async fn list_items(&self, who: &ts_testkit::Session) -> Result<(), tonic::Status> {
        use ts_proto::public::ListItemsRequest;
        use ts_proto::public::item_service_client::ItemServiceClient;
        let request = ListItemsRequest { folder_id: self.folder_id.clone(), page: None };
        ItemServiceClient::new(self.gateway.clone()).list_items(who.request(request)).await.map(drop)
    }

    /// `who` creates a folder (which needs a new data key from KMS).
    pub async fn create_folder(&self, who: &ts_testkit::Session, name: &str) -> Result<String, tonic::Status> {
        ts_testkit::Folders::new(&self.gateway, who).create(name).await
    }
}

/// A channel to the stack's gateway that connects on first use and again after the gateway
/// restarts, as a client SDK's does.
pub fn lazy_gateway(stack: &ProcessStack) -> anyhow::Result<tonic::transport::Channel> {
    let gateway = stack.addr(teamshare::Service::Gateway);
    Ok(ts_testkit::stack::public_endpoint(&stack.certs, gateway)?
        .connect_timeout(Duration::from_secs(2))
        .connect_lazy())
}

/// Signs in a fresh address starting with `name`.
pub async fn sign_in(
    stack: &ProcessStack,
    gateway: &tonic::transport::Channel,
    name: &str,
) -> anyhow::Result<ts_testkit::Session> {
    let email = format!("{name}-{}@example.com", uuid::Uuid::new_v4().simple());
    ts_testkit::users::sign_in(gateway.clone(), &stack.mail_dir, &email).await
}

/// A phase of `requests` operations (at most 45 s).
fn phase_options(requests: u64) -> WorkloadOptions {
    WorkloadOptions { max_requests: Some(requests), duration: Duration::from_secs(45), ..workload_options() }
}
