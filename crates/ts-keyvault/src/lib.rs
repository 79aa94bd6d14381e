//! The keyvault service: one data key per folder, with versions, wrapped by the master key
//! in KMS (DESIGN.md §3). It owns the `data_keys`, `keyvault_settings`,
//! `destroyed_folder_keys` and `master_key_retirements` collections and stores only wrapped
//! keys; plaintext keys live in a bounded memory cache. Only folders may call
//! `KeyVaultService`; only the operator may call `KeyVaultOperatorService` (the master-key
//! rewrap, and retiring the old master key so that deleted folders' keys in backups die with
//! it).
#![forbid(unsafe_code)]

pub mod grpc;
pub mod kms;
pub mod store;
pub mod vault;

use std::sync::Arc;

use tonic::server::NamedService;
use ts_config::{Config, require};
use ts_contract::clock::SharedClock;
use ts_contract::identity::{Allowlist, Peer};
use ts_proto::internal::key_vault_operator_service_server::KeyVaultOperatorServiceServer;
use ts_proto::internal::key_vault_service_server::KeyVaultServiceServer;
use ts_runtime::RunError;
use ts_runtime::server::{Access, ServiceServer};
use ts_runtime::service_mtls;
use ts_stores as stores;

pub use crate::grpc::KeyVaultApi;
pub use crate::vault::{KeyVault, VaultError};

/// Who may call which keyvault RPCs (DESIGN.md §1).
pub fn allowlist() -> Allowlist {
    Allowlist::new()
        .allow(<KeyVaultServiceServer<KeyVaultApi> as NamedService>::NAME, &[Peer::Folders])
        .allow(<KeyVaultOperatorServiceServer<KeyVaultApi> as NamedService>::NAME, &[Peer::Operator])
}

/// `teamshare migrate` for keyvault: creates its indexes and records [`store::SCHEMA`] in
/// `schema_migrations`, once per version. Reads `[mongodb]` only.
pub async fn migrate(config: &Config) -> Result<stores::Migration, RunError> {
    let db = stores::mongo(require(&config.mongodb, "mongodb")?, config.production, "teamshare-migrate").await?;
    let keys = store::KeyStore::new(&db, Arc::new(ts_contract::clock::SystemClock));
    store::SCHEMA.migrate(&db, keys.ensure_indexes()).await.map_err(|e| RunError::Startup(e.to_string()))
}

/// Builds keyvault, ready to serve. Reads `[keyvault]`, `[internal_tls]`, `[mongodb]`,
/// `[kms]`, `[data_key_cache]` and `[upstreams]` folders (the audit trail).
pub async fn build(config: &Config, clock: SharedClock) -> Result<ServiceServer, RunError> {
    let section = require(&config.keyvault, "keyvault")?;
    let mtls = service_mtls(config, Peer::Keyvault, section)?;
    let (kms, master_key_id) = kms::from_config(config).await?;
    let db = stores::mongo(require(&config.mongodb, "mongodb")?, config.production, "teamshare-keyvault").await?;
    let vault = KeyVault::new(kms, store::KeyStore::new(&db, clock), master_key_id, config.data_key_cache.limits());
    store::SCHEMA
        .check_at_start(&db, config.production, vault.store().ensure_indexes())
        .await
        .map_err(|e| RunError::Startup(e.to_string()))?;
    // Folders owns the audit trail; operator actions here are recorded there.
    let audit = ts_runtime::audit::Sink::new(ts_runtime::upstream(config, Peer::Folders, &mtls)?);
    let api = KeyVaultApi::new(Arc::new(vault), audit);
    Ok(ServiceServer::new(Peer::Keyvault, Access::Internal(mtls.clone(), Arc::new(allowlist())))
        .service(KeyVaultServiceServer::new(api.clone()))
        .service(KeyVaultOperatorServiceServer::new(api))
        .health_listen(section.health_listen)
        .configured(config))
}
