//! The invitations service: invitations to folders, with per-invitee and per-folder caps
//! enforced without races. It owns the `invitations` collection and calls folders (to check
//! MANAGE and add members) and auth (to resolve users).
//!
//! Callers (mTLS identity): the gateway only.
#![forbid(unsafe_code)]

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tonic::server::NamedService;
use ts_common::client::InternalChannel;
use ts_common::config::{Config, require};
use ts_common::identity::{Allowlist, Peer};
use ts_common::server::{Access, ServiceServer};
use ts_common::{RunError, drain_delay, service_mtls, stores, upstream};
use ts_proto::internal::folder_membership_service_client::FolderMembershipServiceClient;
use ts_proto::internal::identity_service_client::IdentityServiceClient;
use ts_proto::public::invitation_service_server::{InvitationService, InvitationServiceServer};

/// Shared state of the invitations handlers.
#[derive(Clone)]
pub struct InvitationsApi {
    db: mongodb::Database,
    #[expect(dead_code, reason = "the RPC bodies that call it arrive with a later issue")]
    membership: FolderMembershipServiceClient<InternalChannel>,
    #[expect(dead_code, reason = "the RPC bodies that call it arrive with a later issue")]
    identity: IdentityServiceClient<InternalChannel>,
}

impl std::fmt::Debug for InvitationsApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InvitationsApi").field("db", &self.db.name()).finish_non_exhaustive()
    }
}

/// Who may call which invitations RPCs (DESIGN.md §1).
pub fn allowlist() -> Allowlist {
    Allowlist::new().allow(<InvitationServiceServer<InvitationsApi> as NamedService>::NAME, &[Peer::Gateway])
}

/// Serves invitations on `listener` until `shutdown` completes. Reads `[invitations]`,
/// `[internal_tls]`, `[mongodb]` and `[upstreams]` folders and auth.
pub async fn serve(
    config: &Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RunError> {
    let section = require(&config.invitations, "invitations")?;
    let mtls = service_mtls(config, "invitations", section)?;
    let membership = FolderMembershipServiceClient::new(upstream(config, "folders", &mtls)?);
    let identity = IdentityServiceClient::new(upstream(config, "auth", &mtls)?);
    let db = stores::mongo(require(&config.mongodb, "mongodb")?, "teamshare-invitations").await?;
    let api = InvitationsApi { db, membership, identity };
    ServiceServer::new("invitations", Access::Internal(mtls.server_config(), Arc::new(allowlist())))
        .service(InvitationServiceServer::new(api))
        .health_listen(section.health_listen)
        .drain_delay(drain_delay(config))
        .serve(listener, shutdown)
        .await?;
    Ok(())
}

// The RPC bodies arrive with the invitations issue; until then each answers UNIMPLEMENTED.
#[tonic::async_trait]
impl InvitationService for InvitationsApi {}
