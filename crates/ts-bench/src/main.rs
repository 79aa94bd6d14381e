//! `ts-bench`, the load generator behind `make bench`. In one run it measures the ceilings
//! (a bare tonic echo over TLS, and a bare forwarder: TLS in, mTLS to the echo), then the real
//! stack, each service its own `teamshare serve` process with every security feature on,
//! through the gateway: requests per second and p50/p99 latency at a fixed concurrency, and,
//! in a separate counting pass of exactly K requests, what each request cost in MongoDB
//! commands, Redis commands, KMS calls and internal RPCs (counted from the services' own
//! OpenTelemetry counters and Redis's command statistics, never estimated). Then reads at a
//! small and a large size, and each process's peak memory. The table is printed and written
//! into BENCHMARKS.md.
#![forbid(unsafe_code)]

mod ceiling;
mod counting;
mod fixtures;
mod load;
mod report;
mod scenarios;
mod soak;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use ts_testkit::otlp;
use ts_testkit::stack::{ProcessStack, StackOptions, public_channel};

use crate::ceiling::{Ceilings, Listen, Upstreams};
use crate::counting::Meter;
use crate::load::{Call, Load};
use crate::report::{Pair, Report, Row, peak_memory};
use crate::scenarios::{Actor, Crowd};

/// The same allocator as `teamshare`, so that the ceilings (this binary's subcommands) and the
/// stack are compared on the same footing.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The echo ceiling's row name.
pub const ECHO: &str = "echo (TLS)";
/// The forwarder ceiling's row name.
pub const FORWARDER: &str = "forwarder (TLS → mTLS → echo)";

#[derive(Parser)]
#[command(name = "ts-bench", about = "Load-test the teamshare stack and write the figures into BENCHMARKS.md")]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    role: Option<Role>,
    #[command(flatten)]
    options: Options,
}

/// The ceiling servers, which the bench starts as copies of itself.
#[derive(Subcommand)]
enum Role {
    /// Serve the echo.
    #[command(hide = true)]
    Echo(Listen),
    /// Serve the forwarder.
    #[command(hide = true)]
    Forward {
        #[command(flatten)]
        listen: Listen,
        #[command(flatten)]
        upstreams: Upstreams,
    },
    /// The soak (`make soak`, RELIABILITY.md): the workload at a steady rate for minutes,
    /// resources sampled, then the audit and the secrets scan.
    Soak(soak::SoakArgs),
}

#[derive(clap::Args, Debug, Clone)]
struct Options {
    /// The `teamshare` binary (default: the one next to this binary).
    #[arg(long)]
    teamshare_bin: Option<PathBuf>,
    /// Requests in flight.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    concurrency: u64,
    /// Client connections (HTTP/2) the requests share.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..))]
    connections: u64,
    /// Unrecorded warm-up per scenario, seconds.
    #[arg(long, default_value_t = 3.0)]
    warmup_secs: f64,
    /// Measured window per scenario, seconds.
    #[arg(long, default_value_t = 10.0)]
    measure_secs: f64,
    /// Requests in each scenario's counting pass (K).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..))]
    count_requests: u64,
    /// Signed-in users the scenarios speak as (each with a folder of their own).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    users: u64,
    /// Items in each user's folder.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    items_per_folder: u64,
    /// Scale: items in the small folder (ListItems).
    #[arg(long, default_value_t = 100)]
    items_small: u64,
    /// Scale: items in the large folder (ListItems): as many as the small folder made
    /// through CreateItem, the rest inserted directly after them (see `fixtures`).
    #[arg(long, default_value_t = 100_000)]
    items_large: u64,
    /// Scale: folders of the small user (ListFolders).
    #[arg(long, default_value_t = 10)]
    folders_small: u64,
    /// Scale: folders of the large user (ListFolders): as many as the small user's made
    /// through CreateFolder, the rest inserted directly after them (see `fixtures`).
    #[arg(long, default_value_t = 10_000)]
    folders_large: u64,
    /// Scale: invitations in the system, small (ListMyInvitations).
    #[arg(long, default_value_t = 10)]
    invitations_small: u64,
    /// Scale: invitations in the system, large (ListMyInvitations).
    #[arg(long, default_value_t = 10_000)]
    invitations_large: u64,
    /// Scale: invitations addressed to the user who lists them.
    #[arg(long, default_value_t = 3)]
    my_invitations: u64,
    /// Requests in flight while seeding through the API (items of one folder contend for
    /// its item counter, so more is not faster).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..))]
    seed_concurrency: u64,
    /// How often the services export metrics (OTEL_METRIC_EXPORT_INTERVAL), milliseconds.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(50..))]
    export_interval_ms: u64,
    /// The services' log filter.
    #[arg(long, default_value = "warn")]
    log_filter: String,
    /// Sets `folders.max_items_per_folder` (TS_FOLDERS__MAX_ITEMS_PER_FOLDER) for the stack.
    #[arg(long)]
    max_items_per_folder: Option<u64>,
    /// Skip the scale pairs.
    #[arg(long)]
    no_scale: bool,
    /// A benchmark-only `teamshare` built with `--features insecure-bench` (revocation,
    /// limiter, sharing and membership checks and field decryption off): the reads are
    /// measured again on a stack of it, and what the security features cost is reported.
    #[arg(long)]
    insecure_bin: Option<PathBuf>,
    /// The file whose ts-bench section is rewritten.
    #[arg(long)]
    benchmarks_md: Option<PathBuf>,
    /// Print only; leave BENCHMARKS.md as it is.
    #[arg(long)]
    no_write: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    ts_runtime::tls::install_crypto_provider();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ts-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.role {
            Some(Role::Echo(listen)) => ceiling::serve_echo(listen).await,
            Some(Role::Forward { listen, upstreams }) => ceiling::serve_forwarder(listen, upstreams).await,
            Some(Role::Soak(args)) => soak::soak(args).await,
            None => bench(cli.options).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ts-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Progress, on stderr.
macro_rules! say {
    ($($arg:tt)*) => { eprintln!("ts-bench: {}", format!($($arg)*)) };
}

/// Everything a scenario run needs.
struct Bench {
    load: Load,
    connections: usize,
    count_requests: u64,
    meter: Option<Meter>,
}

impl Bench {
    /// Measures `call`, then (with a meter) counts exactly K requests of it.
    async fn run(&self, scenario: &str, call: &Call) -> anyhow::Result<Row> {
        say!("{scenario}: warming up, then measuring");
        let measured = load::measure(call, self.load).await?;
        say!(
            "{scenario}: {:.0} req/s, p50 {:?}, p99 {:?}{}",
            measured.rate,
            measured.p50,
            measured.p99,
            if measured.errors > 0 { format!(", {} failed", measured.errors) } else { String::new() }
        );
        let (mut counts, mut count_errors) = (None, 0);
        if let Some(meter) = &self.meter {
            let before = meter.read().await?;
            let (errors, _) = load::run_exactly(call, self.count_requests, self.load.concurrency).await?;
            let after = meter.read().await?;
            let c = meter.per_request(&before, &after, self.count_requests);
            say!(
                "{scenario}: per request: mongo {:.2}, redis {:.2}, kms {:.2}, internal RPCs {:.2} (gateway {:.2})",
                c.mongo,
                c.redis,
                c.kms,
                c.internal,
                c.gateway
            );
            counts = Some(c);
            count_errors = errors;
        }
        Ok(Row { scenario: scenario.to_owned(), measured, counts, count_errors })
    }

    /// `n` connections to the server on `port` with the dev CA's `localhost` certificate.
    async fn channels(
        &self,
        certs: &ts_devca::DevCertPaths,
        port: u16,
    ) -> anyhow::Result<Vec<tonic::transport::Channel>> {
        let mut out = Vec::new();
        for _ in 0..self.connections {
            out.push(public_channel(certs, port).await?);
        }
        Ok(out)
    }
}

async fn bench(o: Options) -> anyhow::Result<()> {
    let started = Instant::now();
    let repo = ts_testkit::procs::repo_root();
    let binary = match &o.teamshare_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()?.parent().context("ts-bench has no folder")?.join("teamshare"),
    };
    anyhow::ensure!(binary.is_file(), "{} is missing: build it (make bench does)", binary.display());
    let load = Load {
        concurrency: o.concurrency as usize,
        warmup: Duration::from_secs_f64(o.warmup_secs.max(0.0)),
        measure: Duration::from_secs_f64(o.measure_secs.max(0.1)),
    };
    let mut bench = Bench { load, connections: o.connections as usize, count_requests: o.count_requests, meter: None };
    let mut report =
        Report { rows: Vec::new(), pairs: Vec::new(), memory: Vec::new(), setup: Vec::new(), notes: Vec::new() };

    // Ceilings.
    let ceiling_dir = tempfile::tempdir()?;
    let certs = ts_devca::write_dev_certs(ceiling_dir.path()).context("cannot write certificates")?;
    let ceilings = Ceilings::start(&certs)?;
    let echo = ceiling::check_call(bench.channels(&certs, ceilings.echo.port).await?);
    report.rows.push(bench.run(ECHO, &echo).await?);
    let forwarder = ceiling::check_call(bench.channels(&certs, ceilings.forwarder.port).await?);
    report.rows.push(bench.run(FORWARDER, &forwarder).await?);
    for p in [&ceilings.echo, &ceilings.echo_mtls, &ceilings.forwarder] {
        report.memory.push(peak_memory(p.name, p.server_pid()));
    }
    drop((echo, forwarder, ceilings));

    // The stack.
    let (otlp, counters) = otlp::start().await?;
    let export_interval = Duration::from_millis(o.export_interval_ms);
    let options = StackOptions {
        otlp: Some(otlp),
        export_interval,
        log_filter: o.log_filter.clone(),
        max_items_per_folder: o.max_items_per_folder,
        ..StackOptions::new(binary.clone())
    };
    let stack = ProcessStack::start(&options).await?;
    say!("stack up in {:.1} s (logs in {})", started.elapsed().as_secs_f64(), stack.services[0].1.log_path().display());
    let meter = Meter::new(counters, stack.redis.port, export_interval);
    let first_reading = meter.read().await?;
    bench.meter = Some(meter);
    let gateway = stack.gateway().await?;

    fixtures::license(&stack).await?;
    let mut emails: Vec<String> = (0..o.users).map(|i| format!("user{i}@{}", fixtures::DOMAIN)).collect();
    let extra = ["scale-folders-small", "scale-folders-large", "scale-invitee"];
    emails.extend(extra.iter().map(|e| format!("{e}@{}", fixtures::DOMAIN)));
    let t = Instant::now();
    let mut sessions = fixtures::sign_in(&stack, &gateway, &emails, 8).await?;
    report.notes.push(format!("seeded: {}", fixtures::rate_line("users signed in (email code)", sessions.len(), t)));
    let scale_sessions = sessions.split_off(o.users as usize);
    let t = Instant::now();
    let actors = seed_actors(&o, &gateway, &sessions).await?;
    report.notes.push(format!(
        "seeded: {} folders of {} items each in {:.1} s",
        actors.len(),
        o.items_per_folder,
        t.elapsed().as_secs_f64()
    ));

    // Background: what the idle stack does by itself (auth's revocation outbox, for one).
    if let Some(meter) = &bench.meter {
        let before = meter.read().await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after = meter.read().await?;
        let idle = meter.per_request(&before, &after, 1);
        let secs = idle.window.as_secs_f64().max(1e-9);
        report.notes.push(format!(
            "idle background, counted over {secs:.1} s with no requests: mongo {:.1}/s, redis {:.1}/s, kms {:.1}/s, internal RPCs {:.1}/s; a counting pass includes it for as long as its counters are apart",
            idle.mongo / secs,
            idle.redis / secs,
            idle.kms / secs,
            idle.internal / secs
        ));
    }

    let channels = bench.channels(&stack.certs, stack.service(teamshare::Service::Gateway)?.port).await?;
    let crowd = Crowd::new(channels.clone(), actors.clone());
    for (name, call) in [
        ("GetItem", crowd.get_item()),
        ("ListItems", crowd.list_items()),
        ("ListFolders", crowd.list_folders()),
        ("GetMe", crowd.get_me()),
        ("CreateItem", crowd.create_item()),
    ] {
        report.rows.push(bench.run(name, &call).await?);
    }
    // The security-off stack needs the machine to itself: measured after this stack stops.
    let secure_reads: Vec<Row> = report.rows.iter().filter(|r| READS.contains(&r.scenario.as_str())).cloned().collect();

    if !o.no_scale {
        scale(&o, &bench, &stack, &gateway, &channels, &actors, &scale_sessions, &mut report).await?;
    }

    let invite = crowd.create_invitation(&uuid::Uuid::new_v4().simple().to_string()[..8]);
    report.rows.push(bench.run("CreateInvitation", &invite).await?);

    if let Some(meter) = &bench.meter {
        let whole = meter.per_request(&first_reading, &meter.read().await?, 1);
        let kms: Vec<String> =
            whole.detail.iter().filter(|(k, _)| k.starts_with("kms ")).map(|(k, v)| format!("{k} {v:.0}")).collect();
        report.notes.push(format!(
            "counted over the whole run (seeding included): {:.0} MongoDB commands, {:.0} Redis commands, {:.0} internal RPCs, {:.0} KMS calls ({})",
            whole.mongo,
            whole.redis,
            whole.internal,
            whole.kms,
            if kms.is_empty() { "none".to_owned() } else { kms.join(", ") }
        ));
    }
    for (name, p) in stack.processes() {
        report.memory.push(peak_memory(name, p.server_pid()));
    }
    drop(stack);
    if let Some(insecure) = &o.insecure_bin {
        let off =
            security_off(&o, &bench, StackOptions { binary: insecure.clone(), insecure: true, ..options }).await?;
        for row in off {
            if let Some(on) = secure_reads.iter().find(|r| off_name(&r.scenario) == row.scenario) {
                report.notes.push(format!(
                    "security cost, {}: {:.0} req/s with every check on, {:.0} with them off: on ÷ off = {:.3} ({:.1} % fewer requests/s; p50 {:?} vs {:?})",
                    on.scenario,
                    on.measured.rate,
                    row.measured.rate,
                    on.measured.rate / row.measured.rate.max(1e-9),
                    100.0 * (1.0 - on.measured.rate / row.measured.rate.max(1e-9)),
                    on.measured.p50,
                    row.measured.p50,
                ));
            }
            report.rows.push(row);
        }
    }
    report.memory.push(peak_memory("ts-bench", None));
    report.setup = setup_lines(&o, &repo);
    for row in report.rows.iter().chain(report.pairs.iter().flat_map(|p| [&p.rows.0, &p.rows.1])) {
        if let Some(first) = &row.measured.first_error {
            report
                .notes
                .push(format!("{}: {} failed in the window; first: {first}", row.scenario, row.measured.errors));
        }
    }
    report.notes.push(format!("whole run: {:.0} s", started.elapsed().as_secs_f64()));

    let markdown = report.markdown();
    println!("{markdown}");
    if !o.no_write {
        let path = o.benchmarks_md.clone().unwrap_or_else(|| repo.join("BENCHMARKS.md"));
        let mut body = String::from(
            "Written by `make bench` (`ts-bench`); rerun it to refresh. Tests never pass or fail on timing.\n\n",
        );
        body.push_str(&markdown);
        report::write_section(&path, "## The service stack under load (`ts-bench`)", &body)?;
        say!("wrote {}", path.display());
    }
    Ok(())
}

/// A folder of `--items-per-folder` items for each signed-in user, 8 users at a time.
async fn seed_actors(
    o: &Options,
    gateway: &tonic::transport::Channel,
    sessions: &[ts_testkit::Session],
) -> anyhow::Result<Vec<Actor>> {
    let per_user = (o.seed_concurrency as usize / 8).max(1);
    let items_per_folder = o.items_per_folder as usize;
    fixtures::many(sessions.len(), 8, |i| {
        let session = sessions[i].clone();
        async move {
            let (folder_id, items) =
                fixtures::folder_with_items(gateway, &session, &format!("Bench {i}"), items_per_folder, per_user)
                    .await?;
            anyhow::Ok(Actor { session, folder_id, items })
        }
    })
    .await
}

/// The reads measured again with the security checks off.
const READS: [&str; 4] = ["GetItem", "ListItems", "ListFolders", "GetMe"];

fn off_name(read: &str) -> String {
    format!("{read}, security off")
}

/// The reads on a stack of the benchmark-only build (no revocation, sharing or membership
/// check, no decryption; tokens verified once, then found by digest as in the real build),
/// seeded like the main stack. Counting is skipped: nothing is counted on this stack.
async fn security_off(o: &Options, bench: &Bench, options: StackOptions) -> anyhow::Result<Vec<Row>> {
    say!("security off: starting a stack of {}", options.binary.display());
    let stack = ProcessStack::start(&options).await?;
    let gateway = stack.gateway().await?;
    fixtures::license(&stack).await?;
    let emails: Vec<String> = (0..o.users).map(|i| format!("user{i}@{}", fixtures::DOMAIN)).collect();
    let sessions = fixtures::sign_in(&stack, &gateway, &emails, 8).await?;
    let actors = seed_actors(o, &gateway, &sessions).await?;
    let channels = bench.channels(&stack.certs, stack.service(teamshare::Service::Gateway)?.port).await?;
    let crowd = Crowd::new(channels, actors);
    let uncounted = Bench { meter: None, ..*bench };
    let mut rows = Vec::new();
    for (name, call) in
        READS.into_iter().zip([crowd.get_item(), crowd.list_items(), crowd.list_folders(), crowd.get_me()])
    {
        rows.push(uncounted.run(&off_name(name), &call).await?);
    }
    Ok(rows)
}

/// The scale pairs: each read at a small and a large size.
#[allow(clippy::too_many_arguments)]
async fn scale(
    o: &Options,
    bench: &Bench,
    stack: &ProcessStack,
    gateway: &tonic::transport::Channel,
    channels: &[tonic::transport::Channel],
    actors: &[Actor],
    scale_sessions: &[ts_testkit::Session],
    report: &mut Report,
) -> anyhow::Result<()> {
    let seed = o.seed_concurrency as usize;
    let crowd_of = |actor: Actor| Crowd::new(channels.to_vec(), vec![actor]);
    let owner = actors[0].session.clone();

    // ListItems: one folder of each size.
    let mut rows = Vec::new();
    for (size, label) in [(o.items_small, "small"), (o.items_large, "large")] {
        let t = Instant::now();
        let real = size.min(o.items_small) as usize;
        let (folder_id, items) =
            fixtures::folder_with_items(gateway, &owner, &format!("Scale items {label}"), real, seed).await?;
        report.notes.push(format!("seeded: {} through CreateItem", fixtures::rate_line("items", items.len(), t)));
        let filler = size as usize - real;
        if filler > 0 {
            let t = Instant::now();
            fixtures::filler_items(stack, &folder_id, filler).await?;
            report.notes.push(format!(
                "seeded: {} inserted directly after them (ItemDoc)",
                fixtures::rate_line("filler items", filler, t)
            ));
        }
        fixtures::check_items(gateway, &owner, &folder_id, items.len()).await?;
        let crowd = crowd_of(Actor { session: owner.clone(), folder_id, items });
        rows.push(bench.run(&format!("ListItems, folder of {size} items"), &crowd.list_items()).await?);
    }
    push_pair(report, "ListItems (first page)", "items in the folder", (o.items_small, o.items_large), rows);

    // ListFolders: a user in few folders and a user in many, each reading a first page as
    // long as the small user's whole list, so that the pair compares the cost of being in
    // many folders, not of reading a longer page.
    let page_size = u32::try_from(o.folders_small).unwrap_or(u32::MAX);
    let mut rows = Vec::new();
    for (size, session) in [(o.folders_small, &scale_sessions[0]), (o.folders_large, &scale_sessions[1])] {
        let t = Instant::now();
        let real = size.min(o.folders_small) as usize;
        fixtures::folders(gateway, session, real, seed).await?;
        report.notes.push(format!("seeded: {} through CreateFolder", fixtures::rate_line("folders", real, t)));
        let filler = size as usize - real;
        if filler > 0 {
            let t = Instant::now();
            fixtures::filler_folders(stack, session, filler).await?;
            report.notes.push(format!(
                "seeded: {} inserted directly after them (FolderDoc, MemberDoc)",
                fixtures::rate_line("filler folders", filler, t)
            ));
        }
        fixtures::check_folders(gateway, session, page_size as usize).await?;
        let crowd = crowd_of(Actor { session: session.clone(), folder_id: String::new(), items: Vec::new() });
        let name = format!("ListFolders, user in {size} folders, page of {page_size}");
        rows.push(bench.run(&name, &crowd.list_folders_by(page_size)).await?);
    }
    push_pair(report, "ListFolders (first page)", "folders of the user", (o.folders_small, o.folders_large), rows);

    // ListMyInvitations: the same few invitations for the user, among few or many others.
    let invitee = &scale_sessions[2];
    let mut rooms = Vec::new();
    for i in 0..o.my_invitations {
        rooms.push(ts_testkit::Folders::new(gateway, &owner).create(&format!("Invited {i}")).await?);
    }
    fixtures::invite(gateway, &owner, &rooms, &invitee.email).await?;
    let crowd = crowd_of(Actor { session: invitee.clone(), folder_id: String::new(), items: Vec::new() });
    let mut rows = Vec::new();
    let mut sizes = Vec::new();
    for (target, tag) in [(o.invitations_small, "small"), (o.invitations_large, "large")] {
        let present = fixtures::invitations_in_system(stack).await?;
        let missing = target.saturating_sub(present) as usize;
        let t = Instant::now();
        fixtures::filler_invitations(stack, &owner, &actors[0].folder_id, missing, tag).await?;
        report.notes.push(format!(
            "seeded: {} inserted directly (InvitationDoc)",
            fixtures::rate_line("filler invitations", missing, t)
        ));
        let size = fixtures::invitations_in_system(stack).await?;
        sizes.push(size);
        rows.push(bench.run(&format!("ListMyInvitations, {size} in the system"), &crowd.list_my_invitations()).await?);
    }
    let sizes = (sizes.first().copied().unwrap_or_default(), sizes.last().copied().unwrap_or_default());
    push_pair(report, "ListMyInvitations", "invitations in the system", sizes, rows);
    Ok(())
}

fn push_pair(report: &mut Report, read: &str, what: &str, sizes: (u64, u64), rows: Vec<Row>) {
    let mut rows = rows.into_iter();
    if let (Some(small), Some(large)) = (rows.next(), rows.next()) {
        report.pairs.push(Pair { read: read.into(), what: what.into(), sizes, rows: (small, large) });
    }
}

/// How the run was set up, for the report.
fn setup_lines(o: &Options, repo: &std::path::Path) -> Vec<String> {
    let mut lines = report::provenance(repo);
    lines.extend([
        format!(
            "load: {} requests in flight over {} connections, {} s warm-up, {} s measured; counting pass K = {}",
            o.concurrency, o.connections, o.warmup_secs, o.measure_secs, o.count_requests
        ),
        "stack: each service a `teamshare serve` process (mTLS between them, tokens and revocation checks at the gateway, sealed fields with data keys from KMS, audit, the invitation limiter in Redis); MongoDB-compatible server in memory, Redis and moto KMS as the test kit starts them; everything on this machine".into(),
        format!(
            "{} users under one license; each has a folder of {} items; CreateInvitation sends to a new address every time",
            o.users, o.items_per_folder
        ),
        "raised for the bench (still enforced): sign-in code sends per client address, invitation send rates and bursts, pending invitations per folder; access tokens live 2 h so one sign-in lasts the run; the gateway's downstream deadline is 60 s (the first, cold read of the 100,000-item folder sorts it on the MongoDB-compatible server)".into(),
        format!(
            "counting: MongoDB commands (`mongodb.commands`), KMS calls (`kms.requests`) and internal RPCs (calls timed by `rpc.server.call.duration`, its count, in auth, keyvault, folders, invitations, health checks excluded) from the services' OTLP exports every {} ms; Redis commands from `INFO commandstats` (commands inside Lua scripts included, the bench's INFO excluded); trace sampling off (OTEL_TRACES_SAMPLER=always_off); service logs at `{}`",
            o.export_interval_ms, o.log_filter
        ),
    ]);
    if let Some(max) = o.max_items_per_folder {
        lines.push(format!("folders.max_items_per_folder = {max}"));
    }
    lines
}
