//! The client's address survives the load balancer: from a PROXY protocol v2 header when the
//! gateway expects one, or from `x-forwarded-for` when the peer is a trusted proxy, so that
//! per-client limits on code emails apply to each client, not to a whole node. Neither can be
//! forged by a client that connects directly.

use std::net::SocketAddr;

use tonic::Code;
use tonic::transport::Channel;
use ts_proto::public::auth_service_client::AuthServiceClient;
use ts_proto::public::*;
use ts_testkit::{CountingProxy, TestCluster};

/// Asks for a code for `email` from `channel`, with `forwarded` as `x-forwarded-for`.
async fn send_code(channel: &Channel, email: &str, forwarded: Option<&str>) -> Result<(), tonic::Status> {
    let mut request = tonic::Request::new(StartEmailVerificationRequest { email: email.into() });
    if let Some(f) = forwarded {
        request.metadata_mut().insert("x-forwarded-for", f.parse().expect("ascii"));
    }
    AuthServiceClient::new(channel.clone()).start_email_verification(request).await.map(|_| ())
}

fn per_client_refusal(result: Result<(), tonic::Status>) {
    let err = result.expect_err("the client's fourth code in an hour");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("per-client"), "{}", err.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_proxy_protocol_load_balancer_each_client_has_its_own_budget() -> anyhow::Result<()> {
    let cluster = TestCluster::start_with(|c| {
        c.accounts.sends_per_client_per_hour = 3;
        if let Some(g) = c.gateway.as_mut() {
            g.proxy_protocol = true;
            g.trusted_proxies = vec!["127.0.0.0/8".parse().expect("a CIDR")];
        }
    })
    .await?;
    // Two clients behind one load balancer (one node, one peer address for the gateway).
    let mut channels = Vec::new();
    let mut proxies = Vec::new();
    for source in ["203.0.113.5:40000", "[2001:db8::6]:40001"] {
        let proxy = CountingProxy::start().await?;
        proxy.point_to(cluster.addr(teamshare::Service::Gateway));
        proxy.send_proxy_header(source.parse::<SocketAddr>()?);
        channels.push(cluster.gateway_at(proxy.addr).await?);
        proxies.push(proxy);
    }
    for i in 0..3 {
        send_code(&channels[0], &format!("a{i}@example.com"), None).await?;
    }
    per_client_refusal(send_code(&channels[0], "a9@example.com", None).await);
    // The other client is not charged for the first one's sends.
    send_code(&channels[1], "b0@example.com", None).await?;

    // A client that connects straight to the gateway, without the header, is refused.
    assert!(cluster.gateway().await.is_err(), "a connection without a PROXY header was served");
    cluster.stop().await?;

    // A header from a peer that is not a trusted load balancer (any workload that reaches
    // the port) names nobody: the connection is refused, whatever address it claims.
    let cluster = TestCluster::start_with(|c| {
        if let Some(g) = c.gateway.as_mut() {
            g.proxy_protocol = true;
            g.trusted_proxies = vec!["10.0.0.0/8".parse().expect("a CIDR")];
        }
    })
    .await?;
    let forger = CountingProxy::start().await?;
    forger.point_to(cluster.addr(teamshare::Service::Gateway));
    forger.send_proxy_header("203.0.113.9:40000".parse::<SocketAddr>()?);
    assert!(cluster.gateway_at(forger.addr).await.is_err(), "a PROXY header from an untrusted peer was believed");
    cluster.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_forwarded_for_counts_only_from_trusted_proxies() -> anyhow::Result<()> {
    // The test's connections come from 127.0.0.1: here that is the trusted proxy.
    let cluster = TestCluster::start_with(|c| {
        c.accounts.sends_per_client_per_hour = 3;
        if let Some(g) = c.gateway.as_mut() {
            g.trusted_proxies = vec!["127.0.0.0/8".parse().expect("a CIDR")];
        }
    })
    .await?;
    let channel = cluster.gateway().await?;
    for i in 0..3 {
        send_code(&channel, &format!("a{i}@example.com"), Some("203.0.113.5")).await?;
    }
    per_client_refusal(send_code(&channel, "a9@example.com", Some("203.0.113.5")).await);
    // Another client; what it put left of the proxy's entry is its own to invent and ignored.
    send_code(&channel, "b0@example.com", Some("203.0.113.5, 198.51.100.7")).await?;
    per_client_refusal(send_code(&channel, "b1@example.com", Some("198.51.100.7, 203.0.113.5")).await);
    cluster.stop().await?;

    // No trusted proxies (the default): a client that sends the header itself gains nothing.
    let cluster = TestCluster::start_with(|c| c.accounts.sends_per_client_per_hour = 3).await?;
    let channel = cluster.gateway().await?;
    for i in 0..3 {
        send_code(&channel, &format!("c{i}@example.com"), Some(&format!("198.51.100.{i}"))).await?;
    }
    per_client_refusal(send_code(&channel, "c9@example.com", Some("198.51.100.99")).await);
    cluster.stop().await
}
