//! The keyvault's gRPC surface: request validation and error mapping around `KeyVault`.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use ts_proto::internal::key_vault_operator_service_server::KeyVaultOperatorService;
use ts_proto::internal::key_vault_service_server::KeyVaultService;
use ts_proto::internal::*;

use crate::vault::{KeyVault, VaultError};

/// Handlers for `KeyVaultService` and `KeyVaultOperatorService`.
#[derive(Clone, Debug)]
pub struct KeyVaultApi {
    vault: Arc<KeyVault>,
    audit: ts_runtime::audit::Sink,
}

impl KeyVaultApi {
    /// Serves `vault`, recording operator actions through `audit`.
    pub fn new(vault: Arc<KeyVault>, audit: ts_runtime::audit::Sink) -> Self {
        KeyVaultApi { vault, audit }
    }
}

fn status(e: VaultError) -> Status {
    match &e {
        VaultError::NotFound { .. } => Status::not_found(e.to_string()),
        VaultError::Precondition(m) => Status::failed_precondition(m.clone()),
        VaultError::KmsUnavailable(_) => {
            tracing::warn!(error = %e, "kms unavailable");
            Status::unavailable("kms is unavailable; retry later")
        }
        VaultError::KmsRejected(_) => {
            tracing::error!(error = %e, "kms refused a stored data key");
            Status::internal("a stored data key cannot be unwrapped; see keyvault logs")
        }
        VaultError::Store(_) => {
            tracing::error!(error = %e, "data key store failed");
            Status::unavailable("data key store is unavailable; retry later")
        }
    }
}

/// Folder ids are opaque, but bounded and printable so that they are safe in logs and keys.
fn folder_id(raw: &str) -> Result<&str, Status> {
    if raw.is_empty() {
        return Err(Status::invalid_argument("folder_id is required"));
    }
    if raw.len() > 128 || !raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(Status::invalid_argument("folder_id must be 1-128 characters of [A-Za-z0-9_-]"));
    }
    Ok(raw)
}

#[tonic::async_trait]
impl KeyVaultService for KeyVaultApi {
    async fn create_data_key(
        &self,
        request: Request<CreateDataKeyRequest>,
    ) -> Result<Response<CreateDataKeyResponse>, Status> {
        let req = request.into_inner();
        let version = self.vault.create(folder_id(&req.folder_id)?).await.map_err(status)?;
        Ok(Response::new(CreateDataKeyResponse { version }))
    }

    async fn get_data_key(&self, request: Request<GetDataKeyRequest>) -> Result<Response<GetDataKeyResponse>, Status> {
        let req = request.into_inner();
        let version = (req.version != 0).then_some(req.version);
        let key = self.vault.get(folder_id(&req.folder_id)?, version).await.map_err(status)?;
        Ok(Response::new(GetDataKeyResponse { version: key.version(), key: key.expose_bytes().to_vec() }))
    }

    async fn rotate_data_key(
        &self,
        request: Request<RotateDataKeyRequest>,
    ) -> Result<Response<RotateDataKeyResponse>, Status> {
        let req = request.into_inner();
        let version = self.vault.rotate(folder_id(&req.folder_id)?).await.map_err(status)?;
        Ok(Response::new(RotateDataKeyResponse { version }))
    }

    async fn retire_data_key_versions(
        &self,
        request: Request<RetireDataKeyVersionsRequest>,
    ) -> Result<Response<RetireDataKeyVersionsResponse>, Status> {
        let req = request.into_inner();
        let retired = self.vault.retire(folder_id(&req.folder_id)?, req.keep_from_version).await.map_err(status)?;
        Ok(Response::new(RetireDataKeyVersionsResponse { retired: u32::try_from(retired).unwrap_or(u32::MAX) }))
    }

    async fn destroy_data_keys(
        &self,
        request: Request<DestroyDataKeysRequest>,
    ) -> Result<Response<DestroyDataKeysResponse>, Status> {
        let req = request.into_inner();
        let destroyed = self.vault.destroy(folder_id(&req.folder_id)?).await.map_err(status)?;
        tracing::info!(folder_id = %req.folder_id, destroyed, "data keys destroyed");
        Ok(Response::new(DestroyDataKeysResponse { destroyed: u32::try_from(destroyed).unwrap_or(u32::MAX) }))
    }
}

#[tonic::async_trait]
impl KeyVaultOperatorService for KeyVaultApi {
    async fn rewrap_all(&self, request: Request<RewrapAllRequest>) -> Result<Response<RewrapAllResponse>, Status> {
        let req = request.into_inner();
        let result = if req.new_kms_key_id.trim().is_empty() {
            Err(Status::invalid_argument("new_kms_key_id is required"))
        } else {
            self.vault.rewrap_all(req.new_kms_key_id.trim()).await.map_err(status)
        };
        // The key id is not a secret, but it is not the audit trail's business either.
        self.audit.record(ts_contract::audit::Event {
            actor_email: ts_contract::audit::OPERATOR.into(),
            action: "operator.rewrap_all".into(),
            code: result.as_ref().map_or_else(|s| s.code(), |_| tonic::Code::Ok),
            ..Default::default()
        });
        let report = result?;
        Ok(Response::new(RewrapAllResponse { rewrapped: report.rewrapped, already_done: report.already_done }))
    }
}
