//! Each service killed with SIGKILL under load and started again: a client sees UNAVAILABLE
//! (with a retry hint where a service answers for the one that is gone) and retries; nothing
//! is duplicated or half-applied (the workload's audit), and the stack needs no other restart.

use std::time::Duration;

use teamshare::Service;
use tonic::Code;
use ts_proto::public::auth_service_client::AuthServiceClient;
use ts_proto::public::invitation_service_client::InvitationServiceClient;
use ts_proto::public::*;

use crate::support::{Fixture, Team, assert_no_unexpected, timed, until_ok};

/// One call that needs `service`.
async fn needs(team: &Team, service: Service) -> Result<(), tonic::Status> {
    match service {
        Service::Auth => {
            AuthServiceClient::new(team.gateway.clone()).get_me(team.alice.request(GetMeRequest {})).await.map(drop)
        }
        Service::Keyvault => team.create_folder(&team.alice, "Needs a new key").await.map(drop),
        Service::Folders => team.list_items(&team.bob).await,
        Service::Invitations => InvitationServiceClient::new(team.gateway.clone())
            .list_my_invitations(team.carol.request(ListMyInvitationsRequest { page: None }))
            .await
            .map(drop),
        Service::Gateway => team.get_item(&team.carol).await,
    }
}

async fn kill_each(services: &[Service]) -> anyhow::Result<()> {
    let mut fx = Fixture::start().await?;
    let team = Team::start(&fx.stack).await?;
    assert_no_unexpected(&fx.phase(40).await?, "before the first kill");
    let load = fx.load();
    for &service in services {
        tokio::time::sleep(Duration::from_millis(700)).await;
        fx.stack.kill_service(service).await?;
        let what = format!("a call needing {} while it is killed", service.name());
        let (result, _) = timed(&what, needs(&team, service)).await;
        let status = result.expect_err(&what);
        if service == Service::Gateway {
            // No server answers: the client library reports the connection it lost, as
            // UNAVAILABLE (refused) or, for a call in flight, UNKNOWN "transport error".
            let lost = status.code() == Code::Unknown && std::error::Error::source(&status).is_some();
            assert!(status.code() == Code::Unavailable || lost, "{what}: {status:?}");
        } else {
            assert_eq!(status.code(), Code::Unavailable, "{what}: {status:?}");
            assert!(ts_contract::status::retry_delay(&status).is_some(), "{what}: no RetryInfo: {status:?}");
        }
        fx.stack.start_service(service).await?;
        until_ok(Duration::from_secs(20), || needs(&team, service))
            .await
            .map_err(|s| anyhow::anyhow!("{} did not recover after its restart: {s:?}", service.name()))?;
    }
    let after = fx.phase(40).await?;
    assert_no_unexpected(&after, "after the restarts");
    assert_eq!(after.gave_up, 0, "{}", after.report());
    let background = load.finish().await?;
    assert!(background.unexpected.is_empty(), "unexpected answers in the background:\n{}", background.report());
    fx.audit().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folders_and_invitations_killed_under_load_lose_and_duplicate_nothing() -> anyhow::Result<()> {
    kill_each(&[Service::Folders, Service::Invitations]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_keyvault_and_the_gateway_killed_under_load_lose_and_duplicate_nothing() -> anyhow::Result<()> {
    kill_each(&[Service::Auth, Service::Keyvault, Service::Gateway]).await
}
