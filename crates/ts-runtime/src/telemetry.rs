//! Logs, traces and metrics: `tracing` to stdout (text or JSON), OpenTelemetry export over
//! OTLP (plain, TLS or mTLS) when an endpoint is configured, and W3C trace-context
//! propagation between services.
//!
//! Trace context exists with or without an exporter: without one, spans still get W3C ids
//! (continuing a caller's `traceparent`, else new), are passed on to the services called, and
//! JSON log lines carry them as `trace_id` and `span_id`, so a log backend joins a request's
//! lines across services.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanId, TraceId, TracerProvider as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};
use tracing::{Event, Subscriber};
use tracing_opentelemetry::{OpenTelemetrySpanExt, OtelData};
use tracing_subscriber::fmt::format::{Format, Json, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
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
        // Only OTLP export installs a meter provider; a tracer provider is always there.
        f.debug_struct("TelemetryGuard").field("otlp", &self.meter.is_some()).finish()
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
    let mut guard = TelemetryGuard::default();
    let tracer = match &config.otlp_endpoint {
        Some(endpoint) => {
            let (tracer, meter) = otlp_providers(service_name, endpoint, config)?;
            opentelemetry::global::set_meter_provider(meter.clone());
            guard.meter = Some(meter);
            report_alive_tasks();
            tracer
        }
        None => local_tracer_provider(service_name),
    };
    let layers = layers::<tracing_subscriber::Registry, _>(config, &tracer, std::io::stdout)?;
    guard.tracer = Some(tracer);
    tracing_subscriber::registry()
        .with(layers)
        .try_init()
        .map_err(|e| ConfigError::key("telemetry", format!("cannot install the log subscriber: {e}")))?;
    Ok(guard)
}

/// Tasks alive in this process's Tokio runtime, as a gauge: a count that only grows under a
/// steady load is a task leak. The callback runs on the exporter's thread, which may be
/// outside the runtime, so it reads through the handle captured here (a no-op when called
/// outside a runtime).
fn report_alive_tasks() {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
    let _gauge = opentelemetry::global::meter("teamshare")
        .u64_observable_gauge("runtime.tokio.alive_tasks")
        .with_unit("{task}")
        .with_description("Tasks alive in the service's Tokio runtime")
        .with_callback(move |observer| observer.observe(runtime.metrics().num_alive_tasks() as u64, &[]))
        .build();
}

/// The subscriber's layers: log lines to `writer` in the configured format, and a span for
/// OpenTelemetry from `tracer` for every `tracing` span, both under `log_filter`. Tests build
/// a subscriber from these without installing it globally.
fn layers<S, W>(
    config: &TelemetryConfig,
    tracer: &SdkTracerProvider,
    writer: W,
) -> Result<Vec<Box<dyn Layer<S> + Send + Sync + 'static>>, ConfigError>
where
    S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync + 'static,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter =
        || EnvFilter::try_new(&config.log_filter).map_err(|e| ConfigError::key("telemetry.log_filter", e.to_string()));
    let fmt = tracing_subscriber::fmt::layer().with_writer(writer);
    let fmt: Box<dyn Layer<S> + Send + Sync> = match config.log_format {
        LogFormat::Text => fmt.with_target(true).with_filter(filter()?).boxed(),
        LogFormat::Json => {
            let json = tracing_subscriber::fmt::format().json().flatten_event(true).with_current_span(true);
            fmt.json().event_format(JsonWithTraceIds(json)).with_filter(filter()?).boxed()
        }
    };
    // Filtered like the logs: unfiltered, every debug and trace span and event of h2, hyper,
    // tonic and fred became an OpenTelemetry span or span event, about a quarter of the
    // gateway's CPU under load (BENCHMARKS.md, profile).
    let otel: Box<dyn Layer<S> + Send + Sync> =
        tracing_opentelemetry::layer().with_tracer(tracer.tracer("teamshare")).with_filter(filter()?).boxed();
    // The log layer first: the OpenTelemetry layer has started a span's context by the time
    // any event inside it is formatted (it does so on entering the span).
    Ok(vec![fmt, otel])
}

/// Spans with ids and no exporter. Roots are not sampled, so nothing is recorded for a trace
/// nobody asked for; a caller's sampled `traceparent` is honoured (its spans are recorded
/// and dropped here) so that services further down that do export still see the decision.
fn local_tracer_provider(service_name: &str) -> SdkTracerProvider {
    SdkTracerProvider::builder()
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOff)))
        .with_resource(Resource::builder().with_service_name(service_name.to_owned()).build())
        .build()
}

fn otlp_providers(
    service_name: &str,
    endpoint: &str,
    config: &TelemetryConfig,
) -> Result<(SdkTracerProvider, SdkMeterProvider), ConfigError> {
    use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
    let bad = |e: &dyn std::fmt::Display| ConfigError::key("telemetry.otlp_endpoint", e.to_string());
    let tls = otlp_tls(endpoint, config)?;
    let resource = Resource::builder().with_service_name(service_name.to_owned()).build();
    let mut spans = opentelemetry_otlp::SpanExporter::builder().with_tonic().with_endpoint(endpoint);
    if let Some(tls) = &tls {
        spans = spans.with_tls_config(tls.clone());
    }
    let spans = spans.build().map_err(|e| bad(&e))?;
    let tracer = SdkTracerProvider::builder().with_batch_exporter(spans).with_resource(resource.clone()).build();
    let mut metrics = opentelemetry_otlp::MetricExporter::builder().with_tonic().with_endpoint(endpoint);
    if let Some(tls) = tls {
        metrics = metrics.with_tls_config(tls);
    }
    let metrics = metrics.build().map_err(|e| bad(&e))?;
    let reader = opentelemetry_sdk::metrics::PeriodicReader::builder(metrics).build();
    let meter = SdkMeterProvider::builder().with_reader(reader).with_resource(resource).build();
    Ok((tracer, meter))
}

/// TLS for an `https://` collector: its certificate chains to `otlp_ca_cert` (without it, the
/// system's roots: the `tls-roots` feature of opentelemetry-otlp, rustls with ring and
/// rustls-native-certs), and `otlp_cert` with `otlp_key` are presented when the collector
/// asks for a client certificate. `None` for a plain `http://` endpoint, which may then name
/// none of these files: a CA or key given for a plaintext connection would be silently
/// unused. The files are read once, at start.
fn otlp_tls(endpoint: &str, config: &TelemetryConfig) -> Result<Option<ClientTlsConfig>, ConfigError> {
    let identity = match (&config.otlp_cert, &config.otlp_key) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        (Some(_), None) => {
            return Err(ConfigError::key(
                "telemetry.otlp_key",
                "missing: telemetry.otlp_cert is set and needs its key",
            ));
        }
        (None, Some(_)) => {
            return Err(ConfigError::key(
                "telemetry.otlp_cert",
                "missing: telemetry.otlp_key is set and needs its certificate",
            ));
        }
    };
    let https = endpoint.get(..8).is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"));
    if !https {
        let set = [("telemetry.otlp_ca_cert", &config.otlp_ca_cert), ("telemetry.otlp_cert", &config.otlp_cert)]
            .into_iter()
            .find(|(_, path)| path.is_some());
        return match set {
            Some((key, _)) => Err(ConfigError::key(
                key,
                // The endpoint itself is not quoted: a vendor's may carry a token.
                "is set, but telemetry.otlp_endpoint is not https:// and would not use it",
            )),
            None => Ok(None),
        };
    }
    let mut tls = ClientTlsConfig::new();
    tls = match &config.otlp_ca_cert {
        Some(path) => {
            let pem = crate::tls::read("telemetry.otlp_ca_cert", path)?;
            certificates("telemetry.otlp_ca_cert", &pem)?;
            tls.ca_certificate(Certificate::from_pem(pem))
        }
        None => tls.with_native_roots(),
    };
    if let Some((cert_path, key_path)) = identity {
        let cert = crate::tls::read("telemetry.otlp_cert", cert_path)?;
        certificates("telemetry.otlp_cert", &cert)?;
        let key = crate::tls::read("telemetry.otlp_key", key_path)?;
        PrivateKeyDer::from_pem_slice(&key)
            .map_err(|e| ConfigError::key("telemetry.otlp_key", format!("unreadable private key: {e}")))?;
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Ok(Some(tls))
}

/// Checks that `pem` holds at least one certificate and that every one parses, so a bad file
/// is reported under its own key at start rather than as a failed export later.
fn certificates(key: &str, pem: &[u8]) -> Result<(), ConfigError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ConfigError::key(key, format!("unreadable certificate: {e}")))?;
    if certs.is_empty() {
        return Err(ConfigError::key(key, "no PEM certificate in the file"));
    }
    Ok(())
}

/// The JSON log line of the standard formatter, with the OpenTelemetry `trace_id` and
/// `span_id` of the event's span as its first fields when there is one.
struct JsonWithTraceIds(Format<Json>);

impl<S, N> FormatEvent<S, N> for JsonWithTraceIds
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> std::fmt::Result {
        let Some((trace_id, span_id)) = otel_ids(ctx) else {
            return self.0.format_event(ctx, writer, event);
        };
        let mut line = String::with_capacity(512);
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        let Some(rest) = line.strip_prefix('{') else {
            return writer.write_str(&line);
        };
        let comma = if rest.starts_with('}') { "" } else { "," };
        write!(writer, r#"{{"trace_id":"{trace_id}","span_id":"{span_id}"{comma}{rest}"#)
    }
}

/// The ids of the innermost span around the event that the OpenTelemetry layer knows;
/// none when that span has not been started (an explicit parent never entered).
fn otel_ids<S, N>(ctx: &FmtContext<'_, S, N>) -> Option<(TraceId, SpanId)>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    let span = ctx.event_scope()?.find(|span| span.extensions().get::<OtelData>().is_some())?;
    let extensions = span.extensions();
    let data = extensions.get::<OtelData>()?;
    let (trace_id, span_id) = (data.trace_id()?, data.span_id()?);
    (trace_id != TraceId::INVALID && span_id != SpanId::INVALID).then_some((trace_id, span_id))
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

#[cfg(test)]
mod tests {
    use std::io;
    use std::path::PathBuf;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Log lines written into memory.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'a self) -> Buffer {
            self.clone()
        }
    }

    /// Runs `f` under the JSON subscriber of `init` (without exporters) and returns its lines.
    fn json_lines(f: impl FnOnce()) -> Vec<String> {
        let config = TelemetryConfig { log_format: LogFormat::Json, ..TelemetryConfig::default() };
        let provider = local_tracer_provider("test");
        let buffer = Buffer::default();
        let subscriber = tracing_subscriber::registry()
            .with(layers::<tracing_subscriber::Registry, _>(&config, &provider, buffer.clone()).unwrap());
        tracing::subscriber::with_default(subscriber, f);
        let out = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        out.lines().map(str::to_owned).collect()
    }

    fn field<'l>(line: &'l str, name: &str) -> Option<&'l str> {
        line.split(&format!("\"{name}\":\"")).nth(1)?.split('"').next()
    }

    fn is_hex(s: &str, len: usize) -> bool {
        s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }

    #[test]
    fn json_lines_inside_a_span_carry_its_trace_and_span_ids() {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "traceparent",
            http::HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        let lines = json_lines(|| {
            let span = tracing::info_span!("call", rpc = "GetItem");
            set_remote_parent(&span, &headers);
            let _entered = span.enter();
            tracing::info!(answer = 42, "inside");
        });
        let line = lines.iter().find(|l| l.contains("inside")).expect("no line logged");
        assert!(line.starts_with(r#"{"trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","span_id":""#), "{line}");
        let span_id = field(line, "span_id").unwrap();
        assert!(is_hex(span_id, 16), "{line}");
        assert_ne!(span_id, "00f067aa0ba902b7", "the span is the caller's child, not the caller: {line}");
        // The standard fields are still there: the flattened event and the current span.
        assert!(line.contains(r#""answer":42"#) && line.contains(r#""message":"inside""#), "{line}");
        assert!(line.contains(r#""span":{"#) && line.contains(r#""rpc":"GetItem""#), "{line}");
        assert!(line.ends_with('}'), "{line}");
    }

    #[test]
    fn a_span_without_a_caller_gets_new_ids_and_lines_outside_spans_none() {
        let lines = json_lines(|| {
            tracing::info!("outside");
            let span = tracing::info_span!("root");
            let _entered = span.enter();
            tracing::info!("inside");
        });
        let outside = lines.iter().find(|l| l.contains("outside")).unwrap();
        assert!(!outside.contains("trace_id") && outside.starts_with(r#"{"timestamp""#), "{outside}");
        let inside = lines.iter().find(|l| l.contains("inside")).unwrap();
        assert!(field(inside, "trace_id").is_some_and(|t| is_hex(t, 32) && t != "0".repeat(32)), "{inside}");
        assert!(field(inside, "span_id").is_some_and(|s| is_hex(s, 16)), "{inside}");
    }

    fn telemetry(endpoint: &str) -> TelemetryConfig {
        TelemetryConfig { otlp_endpoint: Some(endpoint.to_owned()), ..TelemetryConfig::default() }
    }

    #[test]
    fn a_client_certificate_without_its_key_names_the_missing_key() {
        let mut config = telemetry("https://collector:4317");
        config.otlp_cert = Some("/nonexistent/tls.crt".into());
        let e = otlp_tls("https://collector:4317", &config).unwrap_err().to_string();
        assert!(e.contains("telemetry.otlp_key"), "{e}");

        let mut config = telemetry("https://collector:4317");
        config.otlp_key = Some("/nonexistent/tls.key".into());
        let e = otlp_tls("https://collector:4317", &config).unwrap_err().to_string();
        assert!(e.contains("telemetry.otlp_cert"), "{e}");
    }

    #[test]
    fn tls_files_for_a_plaintext_endpoint_are_refused_and_none_needed_for_https() {
        let mut config = telemetry("http://localhost:4317");
        assert!(otlp_tls("http://localhost:4317", &config).unwrap().is_none());
        config.otlp_ca_cert = Some("/etc/ca.pem".into());
        let e = otlp_tls("http://localhost:4317", &config).unwrap_err().to_string();
        assert!(e.contains("telemetry.otlp_ca_cert"), "{e}");
        // System roots: nothing to read at start.
        assert!(otlp_tls("https://collector:4317", &telemetry("https://collector:4317")).unwrap().is_some());
    }

    #[test]
    fn unreadable_tls_files_name_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["collector".to_owned()]).unwrap().self_signed(&key).unwrap();
        let (ca, crt, pem_key, junk) = (
            dir.path().join("ca.crt"),
            dir.path().join("tls.crt"),
            dir.path().join("tls.key"),
            dir.path().join("junk"),
        );
        std::fs::write(&ca, cert.pem()).unwrap();
        std::fs::write(&crt, cert.pem()).unwrap();
        std::fs::write(&pem_key, key.serialize_pem()).unwrap();
        std::fs::write(&junk, "not pem").unwrap();
        let endpoint = "https://collector:4317";

        let mut config = telemetry(endpoint);
        config.otlp_ca_cert = Some(ca.clone());
        config.otlp_cert = Some(crt.clone());
        config.otlp_key = Some(pem_key.clone());
        assert!(otlp_tls(endpoint, &config).unwrap().is_some());

        fn file<'a>(config: &'a mut TelemetryConfig, name: &str) -> &'a mut Option<PathBuf> {
            match name {
                "telemetry.otlp_ca_cert" => &mut config.otlp_ca_cert,
                "telemetry.otlp_cert" => &mut config.otlp_cert,
                _ => &mut config.otlp_key,
            }
        }
        for name in ["telemetry.otlp_ca_cert", "telemetry.otlp_cert", "telemetry.otlp_key"] {
            let mut bad = config.clone();
            *file(&mut bad, name) = Some(junk.clone());
            let e = otlp_tls(endpoint, &bad).unwrap_err().to_string();
            assert!(e.contains(name), "{name}: {e}");
            *file(&mut bad, name) = Some(dir.path().join("missing.pem"));
            let e = otlp_tls(endpoint, &bad).unwrap_err().to_string();
            assert!(e.contains(name) && e.contains("missing.pem"), "{name}: {e}");
        }
    }
}
