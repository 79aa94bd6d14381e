//! The report: one table of scenarios (rate, latency, ratios to the ceilings, counted costs
//! per request), the scale pairs, peak memory per process, and what the numbers were taken
//! on; printed, and written into BENCHMARKS.md between markers, replacing the last run's.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;

use crate::counting::PerRequest;
use crate::load::Measured;

/// Where ts-bench's section of BENCHMARKS.md begins.
pub const BEGIN: &str = "<!-- ts-bench:begin -->";
/// Where it ends.
pub const END: &str = "<!-- ts-bench:end -->";

/// One measured scenario.
#[derive(Debug, Clone)]
pub struct Row {
    /// What was called.
    pub scenario: String,
    /// The measured window.
    pub measured: Measured,
    /// Counted costs per request; `None` for the ceilings, which have nothing to count.
    pub counts: Option<PerRequest>,
    /// Failures in the counting pass.
    pub count_errors: u64,
}

/// A read measured at a small and a large size.
#[derive(Debug, Clone)]
pub struct Pair {
    /// What was read.
    pub read: String,
    /// What grew, such as "items in the folder".
    pub what: String,
    /// The sizes.
    pub sizes: (u64, u64),
    /// The rows measured at each.
    pub rows: (Row, Row),
}

/// One process's peak resident memory.
#[derive(Debug, Clone)]
pub struct Memory {
    /// Which process.
    pub process: String,
    /// VmHWM in KiB, or why it could not be read.
    pub peak_kib: Result<u64, String>,
}

/// VmHWM (peak resident set) of process `pid` (`None`: this process).
pub fn peak_memory(process: &str, pid: Option<u32>) -> Memory {
    let file = pid.map_or_else(|| "/proc/self/status".to_owned(), |p| format!("/proc/{p}/status"));
    let peak_kib = std::fs::read_to_string(&file).map_err(|e| format!("cannot read {file}: {e}")).and_then(|status| {
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .ok_or_else(|| format!("no VmHWM in {file}"))
    });
    Memory { process: process.to_owned(), peak_kib }
}

/// Everything the report says.
#[derive(Debug, Clone)]
pub struct Report {
    /// The main scenarios, ceilings first.
    pub rows: Vec<Row>,
    /// The scale pairs.
    pub pairs: Vec<Pair>,
    /// Peak memory per process.
    pub memory: Vec<Memory>,
    /// How the run was set up (one line each).
    pub setup: Vec<String>,
    /// Notes gathered during the run (seeding rates, background counts, failures).
    pub notes: Vec<String>,
}

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms >= 100.0 {
        format!("{ms:.0} ms")
    } else if ms >= 10.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.2} ms")
    }
}

fn count(n: f64) -> String {
    format!("{n:.2}")
}

fn ratio(n: f64, of: Option<f64>) -> String {
    match of {
        Some(of) if of > 0.0 => format!("{:.3}", n / of),
        _ => "–".into(),
    }
}

impl Report {
    fn rate_of(&self, scenario: &str) -> Option<f64> {
        self.rows.iter().find(|r| r.scenario == scenario).map(|r| r.measured.rate)
    }

    fn table_row(&self, out: &mut String, row: &Row) {
        let (echo, forwarder) = (self.rate_of(crate::ECHO), self.rate_of(crate::FORWARDER));
        let m = &row.measured;
        let counts = match &row.counts {
            Some(c) => [c.mongo, c.redis, c.kms, c.internal].map(count).join(" | "),
            None => "– | – | – | –".into(),
        };
        let _ = writeln!(
            out,
            "| {} | {:.0} | {} | {} | {} | {} | {counts} |",
            row.scenario,
            m.rate,
            ms(m.p50),
            ms(m.p99),
            ratio(m.rate, echo),
            ratio(m.rate, forwarder),
        );
    }

    /// The report as Markdown.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        for line in &self.setup {
            let _ = writeln!(out, "- {line}");
        }
        out.push('\n');
        let _ = writeln!(
            out,
            "| scenario | req/s | p50 | p99 | ×echo | ×forwarder | mongo ops/req | redis cmds/req | kms/req | internal RPCs/req |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for row in &self.rows {
            self.table_row(&mut out, row);
        }
        for pair in &self.pairs {
            self.table_row(&mut out, &pair.rows.0);
            self.table_row(&mut out, &pair.rows.1);
        }
        let _ = writeln!(out, "\n×echo and ×forwarder: req/s divided by the ceiling's req/s.\n");
        if !self.pairs.is_empty() {
            let _ = writeln!(out, "Scale (large ÷ small):\n");
            let _ = writeln!(out, "| read | grows | small | large | req/s ratio | p50 ratio | p99 ratio |");
            let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|");
            for p in &self.pairs {
                let (s, l) = (&p.rows.0.measured, &p.rows.1.measured);
                let lat = |a: Duration, b: Duration| ratio(b.as_secs_f64(), Some(a.as_secs_f64()));
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {} | {} |",
                    p.read,
                    p.what,
                    p.sizes.0,
                    p.sizes.1,
                    ratio(l.rate, Some(s.rate)),
                    lat(s.p50, l.p50),
                    lat(s.p99, l.p99),
                );
            }
            out.push('\n');
        }
        let _ = writeln!(out, "Counted per request, by kind (counting pass of K requests):\n");
        for row in self.rows.iter().chain(self.pairs.iter().flat_map(|p| [&p.rows.0, &p.rows.1])) {
            let Some(c) = &row.counts else { continue };
            let detail: Vec<String> = c.detail.iter().map(|(k, v)| format!("{k} {v:.2}")).collect();
            let _ = writeln!(
                out,
                "- {} (K = {}, counters {:.1} s apart; gateway RPCs/req {:.2}{}): {}",
                row.scenario,
                c.requests,
                c.window.as_secs_f64(),
                c.gateway,
                if row.count_errors > 0 { format!("; {} failed", row.count_errors) } else { String::new() },
                if detail.is_empty() { "nothing".into() } else { detail.join(", ") },
            );
        }
        let _ = writeln!(out, "\nPeak memory (VmHWM) after the run:\n");
        let _ = writeln!(out, "| process | peak RSS |");
        let _ = writeln!(out, "|---|---:|");
        for m in &self.memory {
            let peak = match &m.peak_kib {
                Ok(kib) => format!("{:.1} MiB", *kib as f64 / 1024.0),
                Err(e) => format!("unknown ({e})"),
            };
            let _ = writeln!(out, "| {} | {peak} |", m.process);
        }
        if !self.notes.is_empty() {
            let _ = writeln!(out, "\nNotes from the run:\n");
            for line in &self.notes {
                let _ = writeln!(out, "- {line}");
            }
        }
        out
    }
}

/// The machine, toolchain, commit and date, as one line each.
pub fn provenance(repo: &Path) -> Vec<String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, v)| v.trim().to_owned()))
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = cpuinfo.lines().filter(|l| l.starts_with("processor")).count();
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:")?.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or_else(|| "unknown memory".into(), |kib| format!("{:.1} GiB", kib / 1024.0 / 1024.0));
    let run = |cmd: &str, args: &[&str]| -> Option<String> {
        let out = Command::new(cmd).args(args).current_dir(repo).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let rustc = run("rustc", &["--version"]).unwrap_or_else(|| "rustc (unknown version)".into());
    let commit = run("git", &["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty = run("git", &["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    let date = time::OffsetDateTime::now_utc().date();
    let profile = if cfg!(debug_assertions) { "DEBUG build (not figures to keep)" } else { "release profile" };
    vec![
        format!("machine: {model}, {cores} cores, {mem_gib}"),
        format!("toolchain: {rustc}, {profile}"),
        format!("commit: {commit}{}; date: {date}", if dirty { " with uncommitted changes" } else { "" }),
    ]
}

/// Replaces the section between [`BEGIN`] and [`END`] in the file at `path` with `body`
/// under `heading` (appending the section when the file has none).
pub fn write_section(path: &Path, heading: &str, body: &str) -> anyhow::Result<()> {
    write_section_between(path, BEGIN, END, heading, body)
}

/// Replaces the section between the markers `begin` and `end` in the file at `path` with
/// `body` under `heading` (appending the section when the file has none).
pub fn write_section_between(path: &Path, begin: &str, end: &str, heading: &str, body: &str) -> anyhow::Result<()> {
    let old = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let section = format!("{begin}\n{heading}\n\n{body}{end}");
    let new = match (old.find(begin), old.find(end)) {
        (Some(b), Some(e)) if b < e => format!("{}{section}{}", &old[..b], &old[e + end.len()..]),
        _ => format!("{}\n\n{section}\n", old.trim_end()),
    };
    std::fs::write(path, new).with_context(|| format!("cannot write {}", path.display()))
}
