//! The keyvault service: one data key per folder, with versions, wrapped by the master key
//! in KMS. It owns the `data_keys` collection. Only folders may call `KeyVaultService`;
//! only the operator may call `KeyVaultOperatorService`.
#![forbid(unsafe_code)]

pub mod kms;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tonic::server::NamedService;
use ts_common::config::{Config, require};
use ts_common::identity::{Allowlist, Peer};
use ts_common::server::{Access, ServiceServer};
use ts_common::{RunError, drain_delay, service_mtls, stores};
use ts_proto::internal::key_vault_operator_service_server::{KeyVaultOperatorService, KeyVaultOperatorServiceServer};
use ts_proto::internal::key_vault_service_server::{KeyVaultService, KeyVaultServiceServer};

use crate::kms::MasterKey;

/// Shared state of the keyvault handlers.
#[derive(Clone)]
pub struct KeyVaultApi {
    db: mongodb::Database,
    master: MasterKey,
}

impl std::fmt::Debug for KeyVaultApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyVaultApi").field("db", &self.db.name()).field("master", &self.master).finish()
    }
}

/// Who may call which keyvault RPCs (DESIGN.md §1).
pub fn allowlist() -> Allowlist {
    Allowlist::new()
        .allow(<KeyVaultServiceServer<KeyVaultApi> as NamedService>::NAME, &[Peer::Folders])
        .allow(<KeyVaultOperatorServiceServer<KeyVaultApi> as NamedService>::NAME, &[Peer::Operator])
}

/// Serves keyvault on `listener` until `shutdown` completes. Reads `[keyvault]`,
/// `[internal_tls]`, `[mongodb]` and `[kms]`.
pub async fn serve(
    config: &Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RunError> {
    let section = require(&config.keyvault, "keyvault")?;
    let mtls = service_mtls(config, "keyvault", section)?;
    let master = MasterKey::from_config(config).await?;
    let db = stores::mongo(require(&config.mongodb, "mongodb")?, "teamshare-keyvault").await?;
    let api = KeyVaultApi { db, master };
    ServiceServer::new("keyvault", Access::Internal(mtls.server_config(), Arc::new(allowlist())))
        .service(KeyVaultServiceServer::new(api.clone()))
        .service(KeyVaultOperatorServiceServer::new(api))
        .health_listen(section.health_listen)
        .drain_delay(drain_delay(config))
        .serve(listener, shutdown)
        .await?;
    Ok(())
}

// The RPC bodies arrive with the keyvault issue; until then each answers UNIMPLEMENTED.
#[tonic::async_trait]
impl KeyVaultService for KeyVaultApi {}
#[tonic::async_trait]
impl KeyVaultOperatorService for KeyVaultApi {}
