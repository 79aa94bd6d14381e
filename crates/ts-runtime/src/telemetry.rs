//! Logs, traces and metrics: `tracing` to stdout (text or JSON), OpenTelemetry export over
//! OTLP when an endpoint is configured, and W3C trace-context propagation between services.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use ts_config::{ConfigError, LogFormat, TelemetryConfig};

/// Flushes and stops the exporters when dropped; keep it alive for the life of `main`.
#[derive(Default)]
pub struct TelemetryGuard {
    tracer: Option<SdkTracerProvider>,
    meter: Option<SdkMeterProvider>,
}

impl std::fmt::Debug for TelemetryGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryGuard").field("otlp", &self.tracer.is_some()).finish()
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(t) = self.tracer.take() {
            let _ = t.shutdown();
        }
        if let Some(m) = self.meter.take() {
            let _ = m.shutdown();
        }
    }
}

/// Installs the global `tracing` subscriber and, when configured, OTLP trace and metric
/// export under `service_name`.
pub fn init(service_name: &str, config: &TelemetryConfig) -> Result<TelemetryGuard, ConfigError> {
    let filter =
        || EnvFilter::try_new(&config.log_filter).map_err(|e| ConfigError::key("telemetry.log_filter", e.to_string()));
    let fmt = match config.log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer().with_target(true).boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer().json().flatten_event(true).with_current_span(true).boxed(),
    };
    let mut guard = TelemetryGuard::default();
    let otel = match &config.otlp_endpoint {
        Some(endpoint) => {
            let (tracer, meter) = otlp_providers(service_name, endpoint)?;
            opentelemetry::global::set_meter_provider(meter.clone());
            // Filtered like the logs: unfiltered, every debug and trace span and event of
            // h2, hyper, tonic and fred became an OpenTelemetry span or span event, about a
            // quarter of the gateway's CPU under load (BENCHMARKS.md, profile).
            let layer = tracing_opentelemetry::layer().with_tracer(tracer.tracer("teamshare")).with_filter(filter()?);
            guard.tracer = Some(tracer);
            guard.meter = Some(meter);
            Some(layer)
        }
        None => None,
    };
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter()?))
        .with(otel)
        .try_init()
        .map_err(|e| ConfigError::key("telemetry", format!("cannot install the log subscriber: {e}")))?;
    Ok(guard)
}

fn otlp_providers(service_name: &str, endpoint: &str) -> Result<(SdkTracerProvider, SdkMeterProvider), ConfigError> {
    use opentelemetry_otlp::WithExportConfig;
    let bad = |e: &dyn std::fmt::Display| ConfigError::key("telemetry.otlp_endpoint", e.to_string());
    let resource = Resource::builder().with_service_name(service_name.to_owned()).build();
    let spans = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| bad(&e))?;
    let tracer = SdkTracerProvider::builder().with_batch_exporter(spans).with_resource(resource.clone()).build();
    let metrics = opentelemetry_otlp::MetricExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| bad(&e))?;
    let reader = opentelemetry_sdk::metrics::PeriodicReader::builder(metrics).build();
    let meter = SdkMeterProvider::builder().with_reader(reader).with_resource(resource).build();
    Ok((tracer, meter))
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (http::HeaderName::from_bytes(key.as_bytes()), http::HeaderValue::from_str(&value)) {
            self.0.insert(k, v);
        }
    }
}

/// Makes `span` a child of the W3C `traceparent` in `headers`, when there is one.
pub fn set_remote_parent(span: &tracing::Span, headers: &http::HeaderMap) {
    let cx = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    use opentelemetry::trace::TraceContextExt;
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// Writes the current span's W3C trace context into outgoing `headers`.
pub fn inject_current(headers: &mut http::HeaderMap) {
    inject_span(&tracing::Span::current(), headers);
}

/// Writes `span`'s W3C trace context into outgoing `headers` (the callee's span becomes its
/// child).
pub fn inject_span(span: &tracing::Span, headers: &mut http::HeaderMap) {
    let cx = span.context();
    TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(headers));
}
