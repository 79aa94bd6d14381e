//! The folders service: shared folders, members and access levels, encrypted items, and the
//! audit trail (DESIGN.md §5). It owns the `folders`, `members`, `items` and `audit_events`
//! collections, calls keyvault for data keys and auth for "may share right now", and caches
//! memberships and item ciphertexts in Redis.
//!
//! Callers (mTLS identity): the gateway for user-facing RPCs; invitations (and the gateway)
//! for membership look-ups and audit events; auth and keyvault for audit events (auth also
//! reads a license's events for its admins); the operator for key rotation.
#![forbid(unsafe_code)]

mod audit_rpc;
pub mod context;
mod folders_rpc;
mod items_rpc;
pub mod keys;
mod members_rpc;
mod membership;
pub mod paging;
pub mod rotation;
pub mod sealed;
mod slots;
pub mod validate;

use std::sync::Arc;
use std::time::Duration;

use bson::{Document, doc};
use mongodb::options::IndexOptions;
use mongodb::{Collection, IndexModel};
use tonic::server::NamedService;
use ts_config::{Config, require};
use ts_contract::clock::SharedClock;
use ts_contract::identity::{Allowlist, Peer};
use ts_proto::internal::audit_ingest_service_server::AuditIngestServiceServer;
use ts_proto::internal::folder_key_operator_service_server::FolderKeyOperatorServiceServer;
use ts_proto::internal::folder_membership_service_server::FolderMembershipServiceServer;
use ts_proto::internal::identity_service_client::IdentityServiceClient;
use ts_proto::internal::key_vault_service_client::KeyVaultServiceClient;
use ts_proto::internal::license_audit_service_server::LicenseAuditServiceServer;
use ts_proto::public::audit_service_server::AuditServiceServer;
use ts_proto::public::folder_service_server::FolderServiceServer;
use ts_proto::public::item_service_server::ItemServiceServer;
use ts_proto::public::member_service_server::MemberServiceServer;
use ts_runtime::RunError;
use ts_runtime::client::InternalChannel;
use ts_runtime::drain_delay;
use ts_runtime::server::{Access, ServiceServer};
use ts_runtime::service_mtls;
use ts_runtime::upstream;
use ts_stores as stores;
use ts_stores::cache::Cache;

use crate::keys::FolderKeys;

/// The pseudo item id a folder's own sealed fields (its name) are bound to.
pub const FOLDER_ITEM_ID: &str = "_folder";

/// Shared state of the folders handlers.
#[derive(Clone)]
pub struct FoldersApi {
    db: mongodb::Database,
    keys: Arc<FolderKeys>,
    identity: IdentityServiceClient<InternalChannel>,
    cache: Cache,
    audit_retention_days: u32,
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
        .allow(
            <AuditIngestServiceServer<FoldersApi> as NamedService>::NAME,
            &[Peer::Invitations, Peer::Gateway, Peer::Auth, Peer::Keyvault],
        )
        .allow(<LicenseAuditServiceServer<FoldersApi> as NamedService>::NAME, &[Peer::Auth])
        .allow(<FolderKeyOperatorServiceServer<FoldersApi> as NamedService>::NAME, &[Peer::Operator])
}

/// A store failure as the caller sees it; the cause is logged.
pub(crate) fn store_error(e: mongodb::error::Error) -> tonic::Status {
    tracing::error!(error = %e, "folders store failed");
    tonic::Status::unavailable("folder store is unavailable; retry later")
}

pub(crate) use ts_stores::doc_timestamp as timestamp;

/// One page of `coll` matching `filter` in `sort` order, and whether more follow.
pub(crate) async fn find_page(
    coll: &Collection<Document>,
    filter: Document,
    sort: Document,
    size: usize,
) -> Result<(Vec<Document>, bool), tonic::Status> {
    ts_stores::find_page(coll, filter, sort, size).await.map_err(store_error)
}

impl FoldersApi {
    /// The `items` collection.
    pub fn items(&self) -> Collection<Document> {
        self.db.collection("items")
    }
    pub(crate) fn folders(&self) -> Collection<Document> {
        self.db.collection("folders")
    }
    pub(crate) fn members(&self) -> Collection<Document> {
        self.db.collection("members")
    }

    async fn ensure_indexes(&self) -> mongodb::error::Result<()> {
        let unique = IndexOptions::builder().unique(true).name("folder_user_unique".to_owned()).build();
        self.members()
            .create_index(IndexModel::builder().keys(doc! { "folder_id": 1, "user_id": 1 }).options(unique).build())
            .await?;
        self.members().create_index(IndexModel::builder().keys(doc! { "user_id": 1, "folder_id": 1 }).build()).await?;
        self.items()
            .create_index(IndexModel::builder().keys(doc! { "folder_id": 1, "created_at": 1, "_id": 1 }).build())
            .await?;
        self.db
            .collection::<Document>("spent_invitations")
            .create_index(IndexModel::builder().keys(doc! { "folder_id": 1 }).build())
            .await?;
        let events = self.db.collection::<Document>("audit_events");
        events.create_index(IndexModel::builder().keys(doc! { "folder_id": 1, "time": -1 }).build()).await?;
        events.create_index(IndexModel::builder().keys(doc! { "actor_user_id": 1, "time": -1 }).build()).await?;
        events.create_index(IndexModel::builder().keys(doc! { "license_id": 1, "time": -1 }).build()).await?;
        events.create_index(IndexModel::builder().keys(doc! { "actor_email": 1, "time": -1 }).build()).await?;
        let ttl = IndexOptions::builder().expire_after(Duration::ZERO).name("retention_ttl".to_owned()).build();
        events.create_index(IndexModel::builder().keys(doc! { "expires_at": 1 }).options(ttl).build()).await?;
        Ok(())
    }
}

/// Builds folders, ready to serve. Reads `[folders]`,
/// `[internal_tls]`, `[mongodb]`, `[redis]` (optional), `[audit]`, `[data_key_cache]` and
/// `[upstreams]` keyvault and auth.
pub async fn build(config: &Config, _clock: SharedClock) -> Result<ServiceServer, RunError> {
    let section = require(&config.folders, "folders")?;
    let mtls = service_mtls(config, Peer::Folders, section)?;
    let keyvault = KeyVaultServiceClient::new(upstream(config, Peer::Keyvault, &mtls)?);
    let keys = Arc::new(FolderKeys::new(keyvault, config.data_key_cache.limits()));
    let identity = IdentityServiceClient::new(upstream(config, Peer::Auth, &mtls)?);
    let redis = config.redis.as_ref().map(stores::redis).transpose()?;
    let db = stores::mongo(require(&config.mongodb, "mongodb")?, "teamshare-folders").await?;
    let api =
        FoldersApi { db, keys, identity, cache: Cache::new(redis), audit_retention_days: config.audit.retention_days };
    api.ensure_indexes().await.map_err(|e| RunError::Startup(format!("cannot create folders indexes: {e}")))?;
    Ok(ServiceServer::new(Peer::Folders, Access::Internal(mtls.server_config(), Arc::new(allowlist())))
        .service(FolderServiceServer::new(api.clone()))
        .service(MemberServiceServer::new(api.clone()))
        .service(ItemServiceServer::new(api.clone()))
        .service(AuditServiceServer::new(api.clone()))
        .service(FolderMembershipServiceServer::new(api.clone()))
        .service(AuditIngestServiceServer::new(api.clone()))
        .service(LicenseAuditServiceServer::new(api.clone()))
        .service(FolderKeyOperatorServiceServer::new(api))
        .health_listen(section.health_listen)
        .drain_delay(drain_delay(config)))
}
