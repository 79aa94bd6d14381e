//! W3C trace context crosses every hop: a trace started at the gateway contains the spans of
//! the services it called, with the same trace id. Its own test binary, because it installs
//! the global subscriber.

use opentelemetry::trace::SpanKind;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use ts_proto::public::GetStatusRequest;
use ts_proto::public::system_service_client::SystemServiceClient;
use ts_testkit::TestCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downstream_spans_share_the_gateway_trace_id() -> anyhow::Result<()> {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
    tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")))
        .try_init()?;

    let cluster = TestCluster::start().await?;
    let mut system = SystemServiceClient::new(cluster.gateway().await?);
    let status = system.get_status(GetStatusRequest {}).await?.into_inner();
    assert!(status.backends.iter().all(|b| b.serving));
    cluster.stop().await?;
    provider.force_flush()?;

    let spans = exporter.get_finished_spans()?;
    let root = spans.iter().find(|s| s.name == "teamshare.v1.SystemService/GetStatus").ok_or_else(|| {
        anyhow::anyhow!("no gateway span among {:?}", spans.iter().map(|s| &s.name).collect::<Vec<_>>())
    })?;
    let trace_id = root.span_context.trace_id();
    let downstream: Vec<_> = spans.iter().filter(|s| s.name == "grpc.health.v1.Health/Check").collect();
    let kind = |k: SpanKind| downstream.iter().filter(move |s| s.span_kind == k).collect::<Vec<_>>();
    let (clients, servers) = (kind(SpanKind::Client), kind(SpanKind::Server));
    assert_eq!((clients.len(), servers.len()), (3, 3), "a client and a server span per backend");
    for span in &downstream {
        assert_eq!(span.span_context.trace_id(), trace_id, "downstream span in another trace");
        assert_ne!(span.span_context.span_id(), root.span_context.span_id());
    }
    // Each call: the gateway's client span is a child of its server span, and the backend's
    // server span a child of that client span.
    for client in &clients {
        assert_eq!(client.parent_span_id, root.span_context.span_id(), "client span under the gateway's");
    }
    for server in &servers {
        assert!(
            clients.iter().any(|c| c.span_context.span_id() == server.parent_span_id),
            "backend span under a client span"
        );
    }
    Ok(())
}
