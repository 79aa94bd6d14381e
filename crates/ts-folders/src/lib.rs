//! The folders service: shared folders, members and access levels, encrypted items, and the
//! audit trail. It owns the `folders`, `members`, `items` and `audit_events` collections,
//! and calls keyvault for data keys and auth for identity checks.
//!
//! Callers (mTLS identity): the gateway for user-facing RPCs; invitations (and the gateway)
//! for membership look-ups and audit events.
#![forbid(unsafe_code)]

pub mod keys;
pub mod rotation;
pub mod sealed;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tonic::server::NamedService;
use ts_common::client::InternalChannel;
use ts_common::config::{Config, require};
use ts_common::identity::{Allowlist, Peer};
use ts_common::server::{Access, ServiceServer};
use ts_common::{RunError, drain_delay, service_mtls, stores, upstream};
use ts_proto::internal::audit_ingest_service_server::{AuditIngestService, AuditIngestServiceServer};
use ts_proto::internal::folder_key_operator_service_server::FolderKeyOperatorServiceServer;
use ts_proto::internal::folder_membership_service_server::{FolderMembershipService, FolderMembershipServiceServer};
use ts_proto::internal::identity_service_client::IdentityServiceClient;
use ts_proto::internal::key_vault_service_client::KeyVaultServiceClient;
use ts_proto::public::audit_service_server::{AuditService, AuditServiceServer};
use ts_proto::public::folder_service_server::{FolderService, FolderServiceServer};
use ts_proto::public::item_service_server::{ItemService, ItemServiceServer};
use ts_proto::public::member_service_server::{MemberService, MemberServiceServer};

use crate::keys::FolderKeys;

/// Shared state of the folders handlers.
#[derive(Clone)]
pub struct FoldersApi {
    db: mongodb::Database,
    keys: Arc<FolderKeys>,
    #[expect(dead_code, reason = "the RPC bodies that call it arrive with a later issue")]
    identity: IdentityServiceClient<InternalChannel>,
}

impl std::fmt::Debug for FoldersApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FoldersApi").field("db", &self.db.name()).finish_non_exhaustive()
    }
}

/// Who may call which folders RPCs (DESIGN.md §1).
pub fn allowlist() -> Allowlist {
    let gateway = &[Peer::Gateway];
    Allowlist::new()
        .allow(<FolderServiceServer<FoldersApi> as NamedService>::NAME, gateway)
        .allow(<MemberServiceServer<FoldersApi> as NamedService>::NAME, gateway)
        .allow(<ItemServiceServer<FoldersApi> as NamedService>::NAME, gateway)
        .allow(<AuditServiceServer<FoldersApi> as NamedService>::NAME, gateway)
        .allow(<FolderMembershipServiceServer<FoldersApi> as NamedService>::NAME, &[Peer::Invitations, Peer::Gateway])
        .allow(<AuditIngestServiceServer<FoldersApi> as NamedService>::NAME, &[Peer::Invitations, Peer::Gateway])
        .allow(<FolderKeyOperatorServiceServer<FoldersApi> as NamedService>::NAME, &[Peer::Operator])
}

impl FoldersApi {
    /// The `items` collection.
    pub fn items(&self) -> mongodb::Collection<bson::Document> {
        self.db.collection("items")
    }
}

/// Serves folders on `listener` until `shutdown` completes. Reads `[folders]`,
/// `[internal_tls]`, `[mongodb]` and `[upstreams]` keyvault and auth.
pub async fn serve(
    config: &Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RunError> {
    let section = require(&config.folders, "folders")?;
    let mtls = service_mtls(config, "folders", section)?;
    let keyvault = KeyVaultServiceClient::new(upstream(config, "keyvault", &mtls)?);
    let keys = Arc::new(FolderKeys::new(keyvault, config.data_key_cache.limits()));
    let identity = IdentityServiceClient::new(upstream(config, "auth", &mtls)?);
    let db = stores::mongo(require(&config.mongodb, "mongodb")?, "teamshare-folders").await?;
    let api = FoldersApi { db, keys, identity };
    ServiceServer::new("folders", Access::Internal(mtls.server_config(), Arc::new(allowlist())))
        .service(FolderServiceServer::new(api.clone()))
        .service(MemberServiceServer::new(api.clone()))
        .service(ItemServiceServer::new(api.clone()))
        .service(AuditServiceServer::new(api.clone()))
        .service(FolderMembershipServiceServer::new(api.clone()))
        .service(AuditIngestServiceServer::new(api.clone()))
        .service(FolderKeyOperatorServiceServer::new(api))
        .health_listen(section.health_listen)
        .drain_delay(drain_delay(config))
        .serve(listener, shutdown)
        .await?;
    Ok(())
}

// The RPC bodies arrive with the folders issue; until then each answers UNIMPLEMENTED.
#[tonic::async_trait]
impl FolderService for FoldersApi {}
#[tonic::async_trait]
impl MemberService for FoldersApi {}
#[tonic::async_trait]
impl ItemService for FoldersApi {}
#[tonic::async_trait]
impl AuditService for FoldersApi {}
#[tonic::async_trait]
impl FolderMembershipService for FoldersApi {}
#[tonic::async_trait]
impl AuditIngestService for FoldersApi {}
