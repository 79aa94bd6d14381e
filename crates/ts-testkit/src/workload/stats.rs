//! What a run measured: logical operations by outcome, retries, latencies, and the failures
//! that should not happen.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use tonic::Code;

use super::call::Failure;

/// How many unexpected failures a `Stats` keeps the text of.
const KEEP_UNEXPECTED: usize = 20;

/// What one run (or several, merged) of the workload measured. A "request" is one logical
/// operation of the mix: its retries, token refreshes and read-backs included.
#[derive(Debug, Clone)]
pub struct Stats {
    /// Logical operations issued.
    pub requests: u64,
    /// Operations that succeeded with a consistent answer.
    pub ok: u64,
    /// Final outcome of every operation by gRPC code name (`format!("{code:?}")`: "Ok",
    /// "Unavailable", …); an operation answered OK whose answer contradicted the ledger counts
    /// under "Ok" here and in `unexpected`, not in `ok`.
    pub by_code: BTreeMap<String, u64>,
    /// Attempts sent again (UNAVAILABLE, DEADLINE_EXCEEDED, ABORTED where safe,
    /// RESOURCE_EXHAUSTED with RetryInfo, transport errors).
    pub retries: u64,
    /// Access tokens refreshed after ACCESS_TOKEN_EXPIRED.
    pub refreshes: u64,
    /// Operations the retry loop gave up on while the failure was still transient
    /// (UNAVAILABLE, DEADLINE_EXCEEDED, ABORTED, RESOURCE_EXHAUSTED, or a transport error of
    /// the client library): expected while a dependency is down, not in `unexpected`.
    pub gave_up: u64,
    /// Reads refused (NOT_FOUND, PERMISSION_DENIED) because a membership change of the same
    /// folder and user ran at the same time: benign.
    pub raced: u64,
    /// Every unexpected outcome, counted (`unexpected` keeps only the first texts).
    pub unexpected_count: u64,
    /// Latency in microseconds of the successful operations, retries included.
    pub latencies: Histogram<u64>,
    /// The first ~20 unexpected outcomes, as "Op: Code: message (REASON)" or
    /// "Op: contradiction: …": any final failure that is not transient, any INTERNAL or
    /// UNKNOWN the server answered (with its error details), any answer that contradicts the
    /// ledger. Never holds tokens or item plaintext.
    pub unexpected: Vec<String>,
    /// The first ~20 operations the retry loop gave up on, as "Op: Code: message (REASON)".
    pub gave_up_samples: Vec<String>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats::new()
    }
}

/// The outcome of one logical operation.
#[derive(Debug)]
pub(super) enum Verdict {
    /// Answered OK, consistent with the ledger.
    Ok,
    /// Failed (after retries); transient failures count as `gave_up`, others as unexpected.
    Failed(Failure),
    /// Refused because a membership change raced the read.
    Raced(Failure),
    /// Answered OK but contradicts the ledger (the text names ids only).
    Contradiction(String),
}

impl Stats {
    /// Empty statistics.
    pub fn new() -> Stats {
        Stats {
            requests: 0,
            ok: 0,
            by_code: BTreeMap::new(),
            retries: 0,
            refreshes: 0,
            gave_up: 0,
            raced: 0,
            unexpected_count: 0,
            latencies: histogram(),
            unexpected: Vec::new(),
            gave_up_samples: Vec::new(),
        }
    }

    /// The median latency of successful operations.
    pub fn p50(&self) -> Duration {
        Duration::from_micros(self.latencies.value_at_quantile(0.5))
    }

    /// The 99th percentile latency of successful operations.
    pub fn p99(&self) -> Duration {
        Duration::from_micros(self.latencies.value_at_quantile(0.99))
    }

    /// Adds `other`'s counts to these.
    pub fn merge(&mut self, other: &Stats) {
        self.requests += other.requests;
        self.ok += other.ok;
        for (code, n) in &other.by_code {
            *self.by_code.entry(code.clone()).or_default() += n;
        }
        self.retries += other.retries;
        self.refreshes += other.refreshes;
        self.gave_up += other.gave_up;
        self.raced += other.raced;
        self.unexpected_count += other.unexpected_count;
        // Same bounds on both sides: adding cannot fail; should it, the counts stay.
        let _ = self.latencies.add(&other.latencies);
        for u in &other.unexpected {
            if self.unexpected.len() < KEEP_UNEXPECTED {
                self.unexpected.push(u.clone());
            }
        }
        for g in &other.gave_up_samples {
            if self.gave_up_samples.len() < KEEP_UNEXPECTED {
                self.gave_up_samples.push(g.clone());
            }
        }
    }

    /// Human-readable lines: counts, codes, latencies and the unexpected failures.
    pub fn report(&self) -> String {
        let mut out = format!(
            "requests {} ok {} gave_up {} raced {} unexpected {} retries {} refreshes {}\n",
            self.requests, self.ok, self.gave_up, self.raced, self.unexpected_count, self.retries, self.refreshes
        );
        let codes: Vec<String> = self.by_code.iter().map(|(c, n)| format!("{c} {n}")).collect();
        out.push_str(&format!("by code: {}\n", codes.join(", ")));
        out.push_str(&format!(
            "latency (successful, retries included): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms\n",
            self.p50().as_secs_f64() * 1e3,
            self.p99().as_secs_f64() * 1e3,
            self.latencies.max() as f64 / 1e3,
        ));
        for u in &self.unexpected {
            out.push_str(&format!("unexpected: {u}\n"));
        }
        for g in &self.gave_up_samples {
            out.push_str(&format!("gave up: {g}\n"));
        }
        out
    }

    /// Records one logical operation `op` that took `elapsed`.
    pub(super) fn record(&mut self, op: &str, elapsed: Duration, verdict: Verdict) {
        self.requests += 1;
        match verdict {
            Verdict::Ok => {
                self.ok += 1;
                self.count("Ok");
                self.latencies.saturating_record(elapsed.as_micros().max(1) as u64);
            }
            Verdict::Raced(f) => {
                self.count(&format!("{:?}", f.code));
                self.raced += 1;
            }
            Verdict::Failed(f) => {
                self.count(&format!("{:?}", f.code));
                if f.expected() {
                    self.gave_up += 1;
                    if self.gave_up_samples.len() < KEEP_UNEXPECTED {
                        self.gave_up_samples.push(format!("{op}: {f}"));
                    }
                } else {
                    self.unexpected(format!("{op}: {f}"));
                }
            }
            Verdict::Contradiction(text) => {
                self.count("Ok");
                self.unexpected(format!("{op}: contradiction: {text}"));
            }
        }
    }

    /// Records an unexpected outcome.
    pub(super) fn unexpected(&mut self, text: String) {
        self.unexpected_count += 1;
        if self.unexpected.len() < KEEP_UNEXPECTED {
            self.unexpected.push(text);
        }
    }

    fn count(&mut self, code: &str) {
        *self.by_code.entry(code.to_owned()).or_default() += 1;
    }
}

/// A histogram of 1 µs to 10 minutes, 3 significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("fixed, valid histogram bounds")
}

/// Whether a final `code` is one a fault makes expected.
pub(super) fn transient_code(code: Code) -> bool {
    matches!(code, Code::Unavailable | Code::DeadlineExceeded | Code::Aborted | Code::ResourceExhausted)
}
