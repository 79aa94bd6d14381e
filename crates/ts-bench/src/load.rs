//! The load generator: a fixed number of requests in flight (closed loop: each worker sends
//! its next request when the previous one answered), a warm-up that is not recorded, then a
//! measured window whose completions give the rate and whose latencies go into an HDR
//! histogram. A counting pass runs exactly K requests with the same concurrency.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use hdrhistogram::Histogram;
use tokio::time::Instant;

/// One request of a scenario, made by worker `worker` as its `seq`-th request.
pub type Call =
    Arc<dyn Fn(usize, u64) -> Pin<Box<dyn Future<Output = Result<(), tonic::Status>> + Send>> + Send + Sync>;

/// Wraps a closure returning a future as a [`Call`].
pub fn call<F, Fut>(f: F) -> Call
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), tonic::Status>> + Send + 'static,
{
    Arc::new(move |worker, seq| Box::pin(f(worker, seq)))
}

/// How load is applied.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    /// Requests in flight.
    pub concurrency: usize,
    /// Unrecorded run-in.
    pub warmup: Duration,
    /// The recorded window.
    pub measure: Duration,
}

/// What a measured window showed.
#[derive(Debug, Clone)]
pub struct Measured {
    /// Requests that completed successfully in the window, per second.
    pub rate: f64,
    /// Median latency of those requests.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
    /// Requests that failed in the window.
    pub errors: u64,
    /// The first failure, to show.
    pub first_error: Option<String>,
}

/// The microsecond histogram every worker keeps (1 µs to 10 min, 3 significant figures).
fn histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 600_000_000, 3).context("histogram bounds")
}

/// Runs `call` with `load.concurrency` workers for the warm-up and the window; records the
/// requests that complete inside the window.
pub async fn measure(call: &Call, load: Load) -> anyhow::Result<Measured> {
    let start = Instant::now() + Duration::from_millis(1);
    let window_start = start + load.warmup;
    let window_end = window_start + load.measure;
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..load.concurrency {
        let call = call.clone();
        let mut hist = histogram()?;
        workers.spawn(async move {
            let (mut errors, mut first_error) = (0u64, None);
            let mut seq = 0u64;
            loop {
                let sent = Instant::now();
                if sent >= window_end {
                    break;
                }
                let result = call(worker, seq).await;
                seq += 1;
                let done = Instant::now();
                if done < window_start || done > window_end {
                    continue;
                }
                match result {
                    Ok(()) => {
                        let micros = done.duration_since(sent).as_micros().clamp(1, 600_000_000) as u64;
                        hist.saturating_record(micros);
                    }
                    Err(status) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| format!("{:?}: {}", status.code(), status.message()));
                    }
                }
            }
            (hist, errors, first_error)
        });
    }
    let mut total = histogram()?;
    let (mut errors, mut first_error) = (0u64, None);
    while let Some(joined) = workers.join_next().await {
        let (hist, e, first) = joined.context("a load worker panicked")?;
        total.add(&hist).context("merging histograms")?;
        errors += e;
        if first_error.is_none() {
            first_error = first;
        }
    }
    let micros = |q: f64| Duration::from_micros(total.value_at_quantile(q));
    Ok(Measured {
        rate: total.len() as f64 / load.measure.as_secs_f64(),
        p50: micros(0.50),
        p99: micros(0.99),
        errors,
        first_error,
    })
}

/// Runs exactly `requests` calls of `call` with `concurrency` in flight; returns how many
/// failed and the first failure.
pub async fn run_exactly(call: &Call, requests: u64, concurrency: usize) -> anyhow::Result<(u64, Option<String>)> {
    let tickets = Arc::new(AtomicU64::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..concurrency {
        let (call, tickets) = (call.clone(), tickets.clone());
        workers.spawn(async move {
            let (mut errors, mut first_error) = (0u64, None);
            loop {
                let seq = tickets.fetch_add(1, Ordering::Relaxed);
                if seq >= requests {
                    break;
                }
                if let Err(status) = call(worker, seq).await {
                    errors += 1;
                    first_error.get_or_insert_with(|| format!("{:?}: {}", status.code(), status.message()));
                }
            }
            (errors, first_error)
        });
    }
    let (mut errors, mut first_error) = (0u64, None);
    while let Some(joined) = workers.join_next().await {
        let (e, first) = joined.context("a load worker panicked")?;
        errors += e;
        if first_error.is_none() {
            first_error = first;
        }
    }
    Ok((errors, first_error))
}
