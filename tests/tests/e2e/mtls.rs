//! The internal trust boundary: mTLS with the internal CA, and per-service caller allowlists.

use teamshare::Service;
use tonic::Code;
use tonic::transport::Endpoint;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use ts_contract::identity::Peer;
use ts_proto::internal::folder_membership_service_client::FolderMembershipServiceClient;
use ts_proto::internal::identity_service_client::IdentityServiceClient;
use ts_proto::internal::key_vault_operator_service_client::KeyVaultOperatorServiceClient;
use ts_proto::internal::key_vault_service_client::KeyVaultServiceClient;
use ts_proto::internal::license_operator_service_client::LicenseOperatorServiceClient;
use ts_proto::internal::{
    GetDataKeyRequest, GetMembershipRequest, GetUserRequest, RewrapAllRequest, UpsertLicenseRequest,
};
use ts_proto::public::folder_service_client::FolderServiceClient;
use ts_proto::public::invitation_service_client::InvitationServiceClient;
use ts_proto::public::{ListFoldersRequest, ListMyInvitationsRequest};
use ts_testkit::{TestCluster, foreign_identity};

const INTERNAL: [Service; 4] = [Service::Auth, Service::Keyvault, Service::Folders, Service::Invitations];

#[tokio::test]
async fn every_service_reports_serving() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    for service in INTERNAL {
        let mut health = HealthClient::new(cluster.internal(service, Peer::Operator).await?);
        let status = health.check(HealthCheckRequest { service: String::new() }).await?.into_inner().status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }
    let mut health = HealthClient::new(cluster.gateway().await?);
    let status =
        health.check(HealthCheckRequest { service: "teamshare.v1.FolderService".into() }).await?.into_inner().status;
    assert_eq!(status, ServingStatus::Serving as i32);
    cluster.stop().await
}

/// The whole error chain, for telling a refused handshake from an answer of the service.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        parts.push(s.to_string());
        source = s.source();
    }
    parts.join(": ").to_lowercase()
}

/// How a health check over a fresh channel ended: `Ok`, or the connection-level failure
/// text. A status that did not come from the transport (an answer of the service, whatever
/// its code) fails the test: the request got through.
async fn transport_outcome(channel: Result<tonic::transport::Channel, anyhow::Error>) -> Result<(), String> {
    let channel = match channel {
        Ok(c) => c,
        Err(e) => return Err(chain(e.as_ref())),
    };
    match HealthClient::new(channel).check(HealthCheckRequest { service: String::new() }).await {
        Ok(_) => Ok(()),
        Err(s) => {
            let from_transport = std::error::Error::source(&s).is_some_and(|e| e.is::<tonic::transport::Error>());
            assert!(from_transport, "the service answered instead of the connection failing: {s:?}");
            Err(chain(&s))
        }
    }
}

#[tokio::test]
async fn a_certificate_from_another_ca_never_completes_the_handshake() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    for service in INTERNAL {
        // The control: the cluster's own certificate for the same identity gets through.
        let own = transport_outcome(cluster.internal(service, Peer::Gateway).await).await;
        assert_eq!(own, Ok(()), "{service:?} with the cluster's own certificate");
        // The foreign certificate even claims an identity that the service would allow.
        let foreign = transport_outcome(cluster.internal_with(service, foreign_identity(Peer::Gateway)?).await).await;
        let err = foreign.expect_err(&format!("{service:?} accepted a certificate from another CA"));
        assert!(
            ["certificate", "tls", "handshake", "alert", "connection", "broken pipe", "reset"]
                .iter()
                .any(|w| err.contains(w)),
            "{service:?}: not a refused handshake: {err}"
        );
    }
    cluster.stop().await
}

#[tokio::test]
async fn a_plaintext_client_is_refused() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    for service in Service::ALL {
        let endpoint = Endpoint::from_shared(format!("http://{}", cluster.addr(service)))?;
        let channel = endpoint.connect().await.map_err(anyhow::Error::from);
        let err = transport_outcome(channel).await.expect_err(&format!("{service:?} answered a plaintext client"));
        assert!(!err.is_empty(), "{service:?}");
    }
    cluster.stop().await
}

/// Asserts that a call made with a valid certificate of the wrong service is refused by the
/// allowlist (PERMISSION_DENIED), and that the same call from an allowed caller gets past it.
fn assert_denied<T: std::fmt::Debug>(what: &str, result: Result<T, tonic::Status>) {
    match result {
        Err(s) => assert_eq!(s.code(), Code::PermissionDenied, "{what}: {s:?}"),
        Ok(v) => panic!("{what}: expected PERMISSION_DENIED, got {v:?}"),
    }
}

/// Asserts that an allowed caller got past the allowlist to the handler, which then answered
/// `want` (the empty requests these tests send are refused by the handler itself, with its own
/// code, which the allowlist never uses).
fn assert_admitted<T: std::fmt::Debug>(what: &str, result: Result<T, tonic::Status>, want: Code) {
    let got = result.as_ref().err().map_or(Code::Ok, tonic::Status::code);
    assert_eq!(got, want, "{what}: {result:?}");
}

#[tokio::test]
async fn callers_outside_the_allowlist_get_permission_denied() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;

    // keyvault: folders only.
    for peer in [Peer::Auth, Peer::Invitations, Peer::Gateway, Peer::Operator, Peer::Keyvault] {
        let mut kv = KeyVaultServiceClient::new(cluster.internal(Service::Keyvault, peer).await?);
        assert_denied(&format!("keyvault as {peer}"), kv.get_data_key(GetDataKeyRequest::default()).await);
    }
    let mut kv = KeyVaultServiceClient::new(cluster.internal(Service::Keyvault, Peer::Folders).await?);
    assert_admitted("keyvault as folders", kv.get_data_key(GetDataKeyRequest::default()).await, Code::InvalidArgument);

    // keyvault operator RPCs: operator only, not even folders.
    let mut op = KeyVaultOperatorServiceClient::new(cluster.internal(Service::Keyvault, Peer::Folders).await?);
    assert_denied("rewrap as folders", op.rewrap_all(RewrapAllRequest::default()).await);
    let mut op = KeyVaultOperatorServiceClient::new(cluster.internal(Service::Keyvault, Peer::Operator).await?);
    assert_admitted("rewrap as operator", op.rewrap_all(RewrapAllRequest::default()).await, Code::InvalidArgument);

    // auth identity look-ups: gateway, folders, invitations; never keyvault or the operator.
    for peer in [Peer::Keyvault, Peer::Operator] {
        let mut id = IdentityServiceClient::new(cluster.internal(Service::Auth, peer).await?);
        assert_denied(&format!("identity as {peer}"), id.get_user(GetUserRequest::default()).await);
    }
    for peer in [Peer::Gateway, Peer::Folders, Peer::Invitations] {
        let mut id = IdentityServiceClient::new(cluster.internal(Service::Auth, peer).await?);
        assert_admitted(
            &format!("identity as {peer}"),
            id.get_user(GetUserRequest::default()).await,
            Code::InvalidArgument,
        );
    }

    // auth operator RPCs: operator only; the gateway's certificate is not enough.
    let mut lic = LicenseOperatorServiceClient::new(cluster.internal(Service::Auth, Peer::Gateway).await?);
    assert_denied("upsert license as gateway", lic.upsert_license(UpsertLicenseRequest::default()).await);

    // folders' user-facing services: gateway only; the operator is never accepted for them.
    for peer in [Peer::Invitations, Peer::Operator, Peer::Keyvault, Peer::Auth] {
        let mut f = FolderServiceClient::new(cluster.internal(Service::Folders, peer).await?);
        assert_denied(&format!("folders as {peer}"), f.list_folders(ListFoldersRequest::default()).await);
    }
    let mut m = FolderMembershipServiceClient::new(cluster.internal(Service::Folders, Peer::Invitations).await?);
    assert_admitted(
        "membership as invitations",
        m.get_membership(GetMembershipRequest::default()).await,
        Code::InvalidArgument,
    );
    let mut m = FolderMembershipServiceClient::new(cluster.internal(Service::Folders, Peer::Keyvault).await?);
    assert_denied("membership as keyvault", m.get_membership(GetMembershipRequest::default()).await);

    // invitations: gateway only.
    for peer in [Peer::Folders, Peer::Auth, Peer::Operator] {
        let mut inv = InvitationServiceClient::new(cluster.internal(Service::Invitations, peer).await?);
        assert_denied(
            &format!("invitations as {peer}"),
            inv.list_my_invitations(ListMyInvitationsRequest::default()).await,
        );
    }
    cluster.stop().await
}
