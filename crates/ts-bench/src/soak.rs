//! `ts-bench soak` (behind `make soak`): the workload at a steady rate against the real stack
//! (each service its own release-built process) for a few minutes. It samples every
//! process's resident memory, open file descriptors and threads, and every service's live
//! Tokio tasks (the `runtime.tokio.alive_tasks` gauge each exports), and at the end checks:
//! no unexpected error; memory, descriptors and tasks flat after the warm-up; every
//! acknowledged write present (the workload's audit); no secret the run produced or saw in
//! MongoDB, Redis or any log (the hygiene scan). It prints its figures, rewrites its section
//! of BENCHMARKS.md, and fails when any check fails.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use teamshare::Service;
use ts_testkit::hygiene;
use ts_testkit::stack::{ProcessStack, StackOptions};
use ts_testkit::workload::{Stats, Workload, WorkloadOptions};

use crate::report::{provenance, write_section_between};

/// Where the soak's section of BENCHMARKS.md begins.
const BEGIN: &str = "<!-- ts-soak:begin -->";
/// Where it ends.
const END: &str = "<!-- ts-soak:end -->";

/// How much a figure may grow from the end of the warm-up to the end of the run and still be
/// flat: memory by a quarter plus 16 MiB (allocator arenas settle), descriptors by 16, tasks
/// by 32 (a burst of background work in flight when sampled).
const MEMORY_GROWTH: f64 = 1.25;
const MEMORY_SLACK_KIB: u64 = 16 * 1024;
const FD_SLACK: u64 = 16;
const TASK_SLACK: f64 = 32.0;

/// `ts-bench soak`'s flags.
#[derive(clap::Args, Debug, Clone)]
pub struct SoakArgs {
    /// The `teamshare` binary (default: the one next to this binary).
    #[arg(long)]
    teamshare_bin: Option<PathBuf>,
    /// How long the measured run lasts, seconds (after the warm-up).
    #[arg(long, default_value_t = 180)]
    secs: u64,
    /// Warm-up before the first sample that counts, seconds.
    #[arg(long, default_value_t = 30)]
    warmup_secs: u64,
    /// Requests per second, steady.
    #[arg(long, default_value_t = 40.0)]
    rate: f64,
    /// Simulated users.
    #[arg(long, default_value_t = 12)]
    users: usize,
    /// Requests in flight at most.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Seconds between resource samples.
    #[arg(long, default_value_t = 5)]
    sample_secs: u64,
    /// Print the figures without rewriting BENCHMARKS.md.
    #[arg(long)]
    no_write: bool,
}

/// Progress, on stderr.
macro_rules! say {
    ($($arg:tt)*) => { eprintln!("ts-soak: {}", format!($($arg)*)) };
}

/// One process's figures at one moment.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    rss_kib: u64,
    fds: u64,
    threads: u64,
    tasks: Option<f64>,
}

fn sample_process(pid: Option<u32>) -> Sample {
    let Some(pid) = pid else { return Sample::default() };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64);
    Sample { rss_kib: field("VmRSS:"), fds, threads: field("Threads:"), tasks: None }
}

/// Every process of the stack, sampled now.
fn sample(stack: &ProcessStack, counters: &ts_testkit::otlp::Counters) -> Vec<(String, Sample)> {
    stack
        .processes()
        .into_iter()
        .map(|(name, process)| {
            let mut s = sample_process(process.server_pid());
            if Service::ALL.iter().any(|svc| svc.name() == name) {
                s.tasks = counters.gauge(name, "runtime.tokio.alive_tasks");
            }
            (name.to_owned(), s)
        })
        .collect()
}

/// What grew past its slack between `start` and `end`, one line each.
fn growth(start: &[(String, Sample)], end: &[(String, Sample)]) -> Vec<String> {
    let mut out = Vec::new();
    for ((name, a), (_, b)) in start.iter().zip(end) {
        // Only the services: the MongoDB-compatible server, Redis and moto are not ours (and
        // the database grows with what the run stores).
        if Service::ALL.iter().any(|s| s.name() == name) {
            if b.rss_kib as f64 > a.rss_kib as f64 * MEMORY_GROWTH + MEMORY_SLACK_KIB as f64 {
                out.push(format!("{name}: memory {} KiB → {} KiB", a.rss_kib, b.rss_kib));
            }
            if b.fds > a.fds + FD_SLACK {
                out.push(format!("{name}: descriptors {} → {}", a.fds, b.fds));
            }
            if let (Some(ta), Some(tb)) = (a.tasks, b.tasks)
                && tb > ta + TASK_SLACK
            {
                out.push(format!("{name}: tasks {ta} → {tb}"));
            }
        }
    }
    out
}

fn resource_table(start: &[(String, Sample)], end: &[(String, Sample)]) -> String {
    let mut t = String::from(
        "| process | memory start → end (MiB) | descriptors start → end | threads start → end | tasks start → end |\n\
         |---|---|---|---|---|\n",
    );
    let tasks = |t: Option<f64>| t.map_or_else(|| "–".to_owned(), |t| format!("{t:.0}"));
    for ((name, a), (_, b)) in start.iter().zip(end) {
        t.push_str(&format!(
            "| {name} | {:.1} → {:.1} | {} → {} | {} → {} | {} → {} |\n",
            a.rss_kib as f64 / 1024.0,
            b.rss_kib as f64 / 1024.0,
            a.fds,
            b.fds,
            a.threads,
            b.threads,
            tasks(a.tasks),
            tasks(b.tasks),
        ));
    }
    t
}

/// Runs the soak; an error when any check fails (after printing every figure).
pub async fn soak(args: SoakArgs) -> anyhow::Result<()> {
    let repo = ts_testkit::procs::repo_root();
    let binary = match &args.teamshare_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()?.parent().context("ts-bench has no folder")?.join("teamshare"),
    };
    anyhow::ensure!(binary.is_file(), "{} is missing: build it (make soak does)", binary.display());
    let (otlp, counters) = ts_testkit::otlp::start().await?;
    let mut options = StackOptions::new(binary);
    options.otlp = Some(otlp);
    options.export_interval = Duration::from_secs(1);
    options.durable_mongo = true;
    // Every service at debug level: the hygiene scan reads the most a service would log.
    options.log_filter = "debug,h2=info,hyper=info,tower=info,rustls=info,mongodb=info,aws=info,fred=info".into();
    say!("starting the stack (each service its own process)");
    let stack = ProcessStack::start(&options).await?;
    let workload_options = WorkloadOptions {
        users: args.users,
        concurrency: args.concurrency,
        duration: Duration::from_secs(args.warmup_secs + args.secs),
        max_requests: None,
        rate: Some(args.rate),
        seed: 2026,
    };
    let workload = Arc::new(Workload::setup(&stack.target(), workload_options.clone()).await?);
    say!(
        "{} users, {} requests/s, {} s warm-up, then {} s measured",
        args.users,
        args.rate,
        args.warmup_secs,
        args.secs
    );

    let warmup = WorkloadOptions { duration: Duration::from_secs(args.warmup_secs), ..workload_options.clone() };
    let warm = workload.run(Some(&warmup)).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let start = sample(&stack, &counters);
    let started = Instant::now();
    let measured_options = WorkloadOptions { duration: Duration::from_secs(args.secs), ..workload_options };
    let run = {
        let workload = workload.clone();
        tokio::spawn(async move { workload.run(Some(&measured_options)).await })
    };
    let mut samples = vec![(0u64, start.clone())];
    while !run.is_finished() {
        tokio::time::sleep(Duration::from_secs(args.sample_secs)).await;
        samples.push((started.elapsed().as_secs(), sample(&stack, &counters)));
    }
    let stats: Stats = run.await.context("the workload panicked")??;
    // Background work (audit records, cache fills) lands; then the last sample.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let end = sample(&stack, &counters);
    samples.push((started.elapsed().as_secs(), end.clone()));

    say!("auditing every acknowledged write");
    let audit = workload.audit().await?;
    say!("scanning MongoDB, Redis and every log for the run's secrets");
    let hygiene = hygiene::scan_stack(&stack, workload.secrets()).await?;

    let grown = growth(&start, &end);
    let mut failures = Vec::new();
    if !stats.unexpected.is_empty() || stats.gave_up > 0 {
        failures.push(format!("{} unexpected errors, {} gave up", stats.unexpected.len(), stats.gave_up));
    }
    failures.extend(grown.iter().map(|g| format!("not flat: {g}")));
    failures.extend(audit.violations.iter().map(|v| format!("audit: {v}")));
    failures.extend(hygiene.hits.iter().map(|h| format!("secret found: {h}")));

    let mut body = String::new();
    body.push_str(&format!(
        "Steady {} requests/s from {} users ({} in flight at most) for {} s after a {} s warm-up; every service its own \
         release-built process; MongoDB-compatible server on disk syncing each commit, Redis and moto KMS from the test kit.\n\n",
        args.rate, args.users, args.concurrency, args.secs, args.warmup_secs
    ));
    body.push_str(&provenance(&repo).iter().map(|l| format!("- {l}\n")).collect::<String>());
    body.push_str(&format!(
        "\nWarm-up: {} requests, {} unexpected.\n\nMeasured run:\n\n```\n{}```\n\n",
        warm.requests,
        warm.unexpected.len(),
        stats.report()
    ));
    body.push_str(&resource_table(&start, &end));
    body.push_str(&format!(
        "\nAudit: {} folders, {} items, {} memberships, {} invitations checked; {} violations.\n\n\
         Secrets hygiene: {} secrets ({}) looked for in {} places ({} bytes): {} found.\n\n\
         Result: {}\n",
        audit.folders_checked,
        audit.items_checked,
        audit.memberships_checked,
        audit.invitations_checked,
        audit.violations.len(),
        hygiene.secrets,
        hygiene.kinds,
        hygiene.places,
        hygiene.bytes,
        hygiene.hits.len(),
        if failures.is_empty() { "PASS".to_owned() } else { format!("FAIL: {}", failures.join("; ")) },
    ));
    println!("{body}");
    println!("samples (seconds into the measured run: per process memory MiB / descriptors / tasks):");
    for (at, s) in &samples {
        let line: Vec<String> = s
            .iter()
            .map(|(n, x)| {
                format!("{n} {:.0}/{}/{}", x.rss_kib as f64 / 1024.0, x.fds, x.tasks.map_or(-1.0, |t| t.round()))
            })
            .collect();
        println!("  {at:>4} s: {}", line.join(", "));
    }
    if !args.no_write {
        write_section_between(&repo.join("BENCHMARKS.md"), BEGIN, END, "## Soak (`make soak`)", &body)?;
        say!("wrote the soak section of BENCHMARKS.md");
    }
    anyhow::ensure!(failures.is_empty(), "the soak failed:\n{}", failures.join("\n"));
    Ok(())
}
