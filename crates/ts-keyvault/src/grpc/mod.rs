//! The keyvault's gRPC surface, one file per proto service: request validation and the one
//! error mapping around `KeyVault`.

use std::sync::Arc;

use tonic::Status;

mod key_vault;
mod key_vault_operator;

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

impl From<VaultError> for Status {
    fn from(e: VaultError) -> Status {
        match &e {
            VaultError::NotFound { .. } | VaultError::UnknownMasterKey(_) => Status::not_found(e.to_string()),
            VaultError::Precondition(m) => Status::failed_precondition(m.clone()),
            VaultError::KmsUnavailable(_) => {
                tracing::warn!(error = %e, "kms unavailable");
                Status::unavailable("kms is unavailable; retry later")
            }
            VaultError::KmsRejected(_) => {
                tracing::error!(error = %e, "kms refused a stored data key");
                Status::internal("a stored data key cannot be unwrapped; see keyvault logs")
            }
            VaultError::Store(cause) => {
                ts_stores::store_status(cause, "keyvault", "data key store is unavailable; retry later")
            }
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
