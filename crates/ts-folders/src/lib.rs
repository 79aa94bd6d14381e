//! The folders service: shared folders, members and access levels, encrypted items, and the
//! audit trail (DESIGN.md §5). It owns the `folders`, `members`, `items`, `audit_events` and
//! `erased_users` collections, calls keyvault for data keys and auth for "may share right
//! now", and caches memberships and item ciphertexts in Redis.
//!
//! Callers (mTLS identity): the gateway for user-facing RPCs; invitations (and the gateway)
//! for membership look-ups and audit events; auth and keyvault for audit events (auth also
//! reads a license's events for its admins, and runs exports and erasures); the operator for
//! key rotation.
//!
//! Layers: `grpc/` translates each proto service (one file each) and holds the one mapping
//! from `FoldersError` to `tonic::Status`; `folders`, `members`, `items`, `audit`, `context`,
//! `rotation` and `privacy` are the domain on `Folders`; `store/` reads and writes typed documents.
#![forbid(unsafe_code)]

mod audit;
pub mod context;
mod error;
mod folders;
mod grpc;
mod items;
pub mod keys;
mod members;
pub mod paging;
mod privacy;
pub mod rotation;
pub mod sealed;
mod state;
pub mod store;
pub mod validate;

use std::sync::Arc;

use tonic::server::NamedService;
use ts_config::{Config, require};
use ts_contract::clock::SharedClock;
use ts_contract::identity::{Allowlist, Peer};
use ts_proto::internal::audit_ingest_service_server::AuditIngestServiceServer;
use ts_proto::internal::folder_key_operator_service_server::FolderKeyOperatorServiceServer;
use ts_proto::internal::folder_membership_service_server::FolderMembershipServiceServer;
use ts_proto::internal::folder_privacy_service_server::FolderPrivacyServiceServer;
use ts_proto::internal::identity_service_client::IdentityServiceClient;
use ts_proto::internal::key_vault_service_client::KeyVaultServiceClient;
use ts_proto::internal::license_audit_service_server::LicenseAuditServiceServer;
use ts_proto::public::audit_service_server::AuditServiceServer;
use ts_proto::public::folder_service_server::FolderServiceServer;
use ts_proto::public::item_service_server::ItemServiceServer;
use ts_proto::public::member_service_server::MemberServiceServer;
use ts_runtime::RunError;
use ts_runtime::server::{Access, ServiceServer};
use ts_runtime::service_mtls;
use ts_runtime::upstream;
use ts_stores as stores;
use ts_stores::cache::{Cache, Tagged};

pub use crate::audit::AuditAction;
pub use crate::error::{FoldersError, KeyvaultRefusal};
pub use crate::grpc::FoldersApi;
pub use crate::items::MAX_ITEMS_PER_FOLDER;
pub(crate) use crate::state::Folders;

use crate::keys::FolderKeys;
use crate::store::Store;

/// The pseudo item id a folder's own sealed fields (its name) are bound to.
pub const FOLDER_ITEM_ID: &str = "_folder";

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
        .allow(<FolderPrivacyServiceServer<FoldersApi> as NamedService>::NAME, &[Peer::Auth])
        .allow(<FolderKeyOperatorServiceServer<FoldersApi> as NamedService>::NAME, &[Peer::Operator])
}

/// `teamshare migrate` for folders: creates its indexes (the audit retention TTL included)
/// and records [`store::SCHEMA`] in `schema_migrations`, once per version. Reads `[mongodb]`
/// only.
pub async fn migrate(config: &Config) -> Result<stores::Migration, RunError> {
    let db = stores::mongo(require(&config.mongodb, "mongodb")?, config.production, "teamshare-migrate").await?;
    let store = Store::new(db.clone());
    store::SCHEMA.migrate(&db, store.ensure_indexes()).await.map_err(|e| RunError::Startup(e.to_string()))
}

/// Builds folders, ready to serve; `clock` dates items, folders and audit events and rules
/// retention. Reads `[folders]`, `[internal_tls]`, `[mongodb]`, `[redis]` (optional),
/// `[audit]`, `[data_key_cache]` and `[upstreams]` keyvault and auth.
pub async fn build(config: &Config, clock: SharedClock) -> Result<ServiceServer, RunError> {
    if cfg!(feature = "insecure-bench") {
        ts_runtime::insecure_bench_consent("folders", config)?;
    }
    let section = require(&config.folders, "folders")?;
    let mtls = service_mtls(config, Peer::Folders, section)?;
    let keyvault = KeyVaultServiceClient::new(upstream(config, Peer::Keyvault, &mtls)?);
    let keys = Arc::new(FolderKeys::new(keyvault, config.data_key_cache.limits()));
    let identity = IdentityServiceClient::new(upstream(config, Peer::Auth, &mtls)?);
    let redis = config.redis.as_ref().map(|r| stores::redis(r, config.production)).transpose()?;
    let db = stores::mongo(require(&config.mongodb, "mongodb")?, config.production, "teamshare-folders").await?;
    let store = Store::new(db.clone());
    store::SCHEMA
        .check_at_start(&db, config.production, store.ensure_indexes())
        .await
        .map_err(|e| RunError::Startup(e.to_string()))?;
    let folders = Folders {
        store,
        keys,
        identity,
        cache: Cache::new(redis),
        answers: context::Answers::new(),
        folder_docs: Tagged::new(50_000, std::time::Duration::from_secs(60)),
        items: items::kept_items(),
        pages: items::kept_pages(),
        listings: folders::kept_listings(),
        clock,
        audit_retention_days: config.audit.retention_days,
        erased: privacy::ErasedIds::new(),
    };
    let api = FoldersApi::new(Arc::new(folders));
    Ok(ServiceServer::new(Peer::Folders, Access::Internal(mtls.clone(), Arc::new(allowlist())))
        .service(FolderServiceServer::new(api.clone()))
        .service(MemberServiceServer::new(api.clone()))
        .service(ItemServiceServer::new(api.clone()))
        .service(AuditServiceServer::new(api.clone()))
        .service(FolderMembershipServiceServer::new(api.clone()))
        .service(AuditIngestServiceServer::new(api.clone()))
        .service(LicenseAuditServiceServer::new(api.clone()))
        .service(FolderPrivacyServiceServer::new(api.clone()))
        .service(FolderKeyOperatorServiceServer::new(api))
        .health_listen(section.health_listen)
        .configured(config))
}
