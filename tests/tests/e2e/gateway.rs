//! The public endpoint: TLS, reflection for grpcurl, health, status, translation to the
//! internal services, and graceful shutdown.

use std::time::Duration;

use teamshare::Service;
use tokio_stream::StreamExt;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
use ts_contract::identity::Peer;
use ts_proto::public::auth_service_client::AuthServiceClient;
use ts_proto::public::folder_service_client::FolderServiceClient;
use ts_proto::public::system_service_client::SystemServiceClient;
use ts_proto::public::{
    CreateFolderRequest, GetFolderRequest, GetMeRequest, GetStatusRequest, ListFoldersRequest,
    StartEmailVerificationRequest,
};
use ts_testkit::{Session, TestCluster};

#[tokio::test]
async fn reflection_lists_the_public_services_for_grpcurl() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let mut client = ServerReflectionClient::new(cluster.gateway().await?);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client.server_reflection_info(tokio_stream::iter([request])).await?.into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        responses.next().await.transpose()?.and_then(|r| r.message_response)
    else {
        anyhow::bail!("no list-services response");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for public in ts_proto::PUBLIC_SERVICES {
        assert!(names.iter().any(|n| n == public), "{public} missing from {names:?}");
    }
    assert!(!names.iter().any(|n| n.starts_with("teamshare.internal")), "internal services leaked: {names:?}");
    cluster.stop().await
}

#[tokio::test]
async fn status_reaches_every_backend_over_mtls() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let mut system = SystemServiceClient::new(cluster.gateway().await?);
    let response = system.get_status(GetStatusRequest {}).await?;
    let request_id = response.metadata().get("x-request-id").map(|v| v.to_str().unwrap_or_default().to_owned());
    assert!(request_id.is_some_and(|id| id.len() >= 16), "every response carries a request id");
    let status = response.into_inner();
    let names: Vec<&str> = status.backends.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["auth", "folders", "invitations"]);
    assert!(status.backends.iter().all(|b| b.serving), "{:?}", status.backends);
    cluster.stop().await
}

#[tokio::test]
async fn calls_without_a_valid_token_are_unauthenticated_and_tokens_are_not_echoed() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let mut folders = FolderServiceClient::new(cluster.gateway().await?);
    let err = folders.list_folders(ListFoldersRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("authorization"), "{}", err.message());

    let mut request = tonic::Request::new(ListFoldersRequest::default());
    request.metadata_mut().insert("authorization", "Bearer not-a-real-token-7f3a".parse()?);
    let err = folders.list_folders(request).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(!err.message().contains("7f3a"));
    cluster.stop().await
}

/// `message` with `s`'s valid token plus every internal identity header claiming `victim`,
/// in both spellings a client might try.
fn smuggling<T>(s: &Session, victim: &Session, message: T) -> anyhow::Result<tonic::Request<T>> {
    let mut request = s.request(message);
    let md = request.metadata_mut();
    for (name, value) in [
        ("x-teamshare-user-id", victim.user_id.as_str()),
        ("x-teamshare-user-email", victim.email.as_str()),
        ("x-teamshare-license-id", "victims-license"),
        ("x-teamshare-session-id", "forged-session"),
    ] {
        md.insert(name, value.parse()?);
        md.append(tonic::metadata::MetadataKey::from_bytes(name.to_uppercase().as_bytes())?, value.parse()?);
    }
    Ok(request)
}

#[tokio::test]
async fn forged_identity_headers_beside_a_valid_token_are_ignored() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let mallory = cluster.sign_in("mallory@example.com").await?;
    let victim = cluster.sign_in("victim@example.com").await?;
    let mut folders = FolderServiceClient::new(cluster.gateway().await?);
    let victims = folders
        .create_folder(
            victim.request(CreateFolderRequest { name: "Victim's private folder".into(), ..Default::default() }),
        )
        .await?
        .into_inner()
        .folder
        .expect("folder")
        .id;
    let own = folders
        .create_folder(mallory.request(CreateFolderRequest { name: "Mallory's folder".into(), ..Default::default() }))
        .await?
        .into_inner()
        .folder
        .expect("folder")
        .id;

    // The downstream sees the token's identity: Mallory's folders, never the victim's.
    let listed = folders.list_folders(smuggling(&mallory, &victim, ListFoldersRequest::default())?).await?;
    let ids: Vec<String> = listed.into_inner().folders.into_iter().map(|f| f.id).collect();
    assert_eq!(ids, [own.as_str()], "the forged headers chose whose folders were listed");
    let err = folders
        .get_folder(smuggling(&mallory, &victim, GetFolderRequest { folder_id: victims.clone() })?)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    // Auth, behind the gateway, sees the token's user as well.
    let me = AuthServiceClient::new(cluster.gateway().await?)
        .get_me(smuggling(&mallory, &victim, GetMeRequest {})?)
        .await?
        .into_inner()
        .user
        .expect("user");
    assert_eq!((me.id.as_str(), me.email.as_str()), (mallory.user_id.as_str(), "mallory@example.com"));
    // A folder created with forged headers belongs to the token's user.
    let made = folders
        .create_folder(smuggling(
            &mallory,
            &victim,
            CreateFolderRequest { name: "Planted".into(), ..Default::default() },
        )?)
        .await?
        .into_inner()
        .folder
        .expect("folder")
        .id;
    let victims_view = folders.list_folders(victim.request(ListFoldersRequest::default())).await?.into_inner();
    assert_eq!(victims_view.folders.iter().map(|f| f.id.as_str()).collect::<Vec<_>>(), [victims.as_str()]);
    let mallorys = folders.list_folders(mallory.request(ListFoldersRequest::default())).await?.into_inner();
    assert!(mallorys.folders.iter().any(|f| f.id == made));
    cluster.stop().await
}

#[tokio::test]
async fn sign_in_calls_are_translated_to_auth() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let mut auth = AuthServiceClient::new(cluster.gateway().await?);
    let reply = auth.start_email_verification(StartEmailVerificationRequest { email: "a@example.com".into() }).await?;
    assert!(reply.into_inner().expires_at.is_some());
    // The call crossed the gateway and the mTLS hop, and auth mailed a code.
    assert!(cluster.latest_code("a@example.com").is_some());
    cluster.stop().await
}

#[tokio::test]
async fn shutdown_turns_health_not_serving_before_the_listener_closes() -> anyhow::Result<()> {
    let cluster = TestCluster::start_with(|c| c.drain_delay_ms = 3_000).await?;
    let mut gateway = HealthClient::new(cluster.gateway().await?);
    let mut folders = HealthClient::new(cluster.internal(Service::Folders, Peer::Operator).await?);
    let check = || HealthCheckRequest { service: String::new() };
    assert_eq!(gateway.check(check()).await?.into_inner().status, ServingStatus::Serving as i32);

    let stopping = tokio::spawn(cluster.stop());
    // During the drain window, open connections are still answered, with NOT_SERVING.
    let mut seen = false;
    for _ in 0..100 {
        let g = gateway.check(check()).await?.into_inner().status;
        let f = folders.check(check()).await?.into_inner().status;
        if g == ServingStatus::NotServing as i32 && f == ServingStatus::NotServing as i32 {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(seen, "health never reported NOT_SERVING while draining");
    stopping.await??;
    Ok(())
}
