//! An OTLP/gRPC receiver for a `ProcessStack` (the bench's and the fault tests'): it keeps
//! every counter that each service exports (per `service.name`, metric and attribute set), of
//! each histogram how many measurements it took, and of each gauge its latest value; it drops
//! traces. The bench reads counters from it before and after a counting pass, each time only
//! once every service has exported a collection made after the moment that matters; a test or
//! the soak reads a gauge per service.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use anyhow::bail;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{AggregationTemporality, NumberDataPoint, metric, number_data_point};
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

/// One series (a counter, a histogram's count or a gauge): which service exported it, the
/// metric and its attributes (sorted).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Series {
    /// The exporting process's `service.name` resource attribute.
    pub service: String,
    /// The metric name, such as `mongodb.commands` (a counter), `rpc.server.call.duration`
    /// (a histogram, whose value here is its count) or `runtime.tokio.alive_tasks` (a gauge,
    /// whose value here is the latest).
    pub metric: String,
    /// The data point's attributes as `key=value`, sorted.
    pub attrs: Vec<(String, String)>,
}

impl Series {
    /// The value of attribute `key`, or "" when the series has none.
    pub fn attr(&self, key: &str) -> &str {
        self.attrs.iter().find(|(k, _)| k == key).map_or("", |(_, v)| v.as_str())
    }
}

/// Every counter's value (a histogram's count, a gauge's latest value) at one moment.
pub type Snapshot = HashMap<Series, f64>;

#[derive(Debug, Default)]
struct State {
    values: Snapshot,
    /// Per service, the newest collection time seen in its exports.
    collected: HashMap<String, SystemTime>,
}

/// The receiver's view of every service's counters and gauges; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    state: Arc<Mutex<State>>,
}

impl Counters {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves plain numbers behind: still usable.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A copy of every counter as last exported.
    pub fn snapshot(&self) -> Snapshot {
        self.lock().values.clone()
    }

    /// The latest value of gauge `metric` that `service` exported, summed over its attribute
    /// sets; `None` until the service has exported it.
    pub fn gauge(&self, service: &str, metric: &str) -> Option<f64> {
        let state = self.lock();
        state
            .values
            .iter()
            .filter(|(series, _)| series.service == service && series.metric == metric)
            .map(|(_, value)| *value)
            .reduce(|a, b| a + b)
    }

    /// Waits until every service in `services` has exported a collection made after `after`.
    pub async fn wait_fresh(&self, services: &[&str], after: SystemTime, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let stale: Vec<String> = {
                let state = self.lock();
                services
                    .iter()
                    .filter(|s| state.collected.get(**s as &str).is_none_or(|t| *t <= after))
                    .map(|s| s.to_string())
                    .collect()
            };
            if stale.is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("no fresh metrics export within {timeout:?} from: {}", stale.join(", "));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn record(&self, request: ExportMetricsServiceRequest) {
        let mut state = self.lock();
        for resource_metrics in request.resource_metrics {
            let service = resource_metrics
                .resource
                .as_ref()
                .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
                .map(value_text)
                .unwrap_or_default();
            let mut newest = None;
            for scope in resource_metrics.scope_metrics {
                for m in scope.metrics {
                    // (collected at, attributes, value) of every data point of a sum and of a
                    // gauge, and of a histogram its `count`: how many measurements it took (the
                    // calls that `rpc.server.call.duration` timed). A gauge's value replaces the
                    // one before, as a cumulative sum's does.
                    let is_delta = |temporality: i32| temporality == AggregationTemporality::Delta as i32;
                    let (delta, points): (bool, Vec<(u64, Vec<KeyValue>, f64)>) = match m.data {
                        Some(metric::Data::Sum(sum)) => {
                            (is_delta(sum.aggregation_temporality), number_points(sum.data_points))
                        }
                        Some(metric::Data::Gauge(gauge)) => (false, number_points(gauge.data_points)),
                        Some(metric::Data::Histogram(histogram)) => (
                            is_delta(histogram.aggregation_temporality),
                            histogram
                                .data_points
                                .into_iter()
                                .map(|p| (p.time_unix_nano, p.attributes, p.count as f64))
                                .collect(),
                        ),
                        _ => continue,
                    };
                    for (time_unix_nano, attributes, value) in points {
                        let at = SystemTime::UNIX_EPOCH + Duration::from_nanos(time_unix_nano);
                        newest = newest.max(Some(at));
                        let mut attrs: Vec<(String, String)> =
                            attributes.iter().map(|kv| (kv.key.clone(), value_text(kv))).collect();
                        attrs.sort();
                        let series = Series { service: service.clone(), metric: m.name.clone(), attrs };
                        if delta {
                            *state.values.entry(series).or_default() += value;
                        } else {
                            state.values.insert(series, value);
                        }
                    }
                }
            }
            if let Some(at) = newest {
                let seen = state.collected.entry(service).or_insert(at);
                *seen = (*seen).max(at);
            }
        }
    }
}

/// (collected at, attributes, value) of each number data point that has a value.
fn number_points(points: Vec<NumberDataPoint>) -> Vec<(u64, Vec<KeyValue>, f64)> {
    points
        .into_iter()
        .filter_map(|p| {
            let value = match p.value? {
                number_data_point::Value::AsInt(v) => v as f64,
                number_data_point::Value::AsDouble(v) => v,
            };
            Some((p.time_unix_nano, p.attributes, value))
        })
        .collect()
}

fn value_text(kv: &KeyValue) -> String {
    match kv.value.as_ref().and_then(|v: &AnyValue| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        _ => String::new(),
    }
}

#[tonic::async_trait]
impl MetricsService for Counters {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        self.record(request.into_inner());
        Ok(Response::new(ExportMetricsServiceResponse::default()))
    }
}

/// Accepts trace exports and keeps nothing (the stack turns sampling off; this only keeps a
/// stray export from failing).
#[derive(Debug, Clone, Copy, Default)]
struct DiscardTraces;

#[tonic::async_trait]
impl TraceService for DiscardTraces {
    async fn export(
        &self,
        _request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

/// Serves OTLP/gRPC (plaintext) on a fresh loopback port; returns its address and the
/// counters it fills. It runs until the process ends.
pub async fn start() -> anyhow::Result<(SocketAddr, Counters)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let counters = Counters::default();
    let server = tonic::transport::Server::builder()
        .add_service(MetricsServiceServer::new(counters.clone()).max_decoding_message_size(64 * 1024 * 1024))
        .add_service(TraceServiceServer::new(DiscardTraces).max_decoding_message_size(64 * 1024 * 1024))
        .serve_with_incoming(TcpIncoming::from(listener));
    tokio::spawn(async move {
        if let Err(e) = server.await {
            eprintln!("the OTLP receiver stopped: {e}");
        }
    });
    Ok((addr, counters))
}
