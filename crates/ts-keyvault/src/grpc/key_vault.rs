//! `KeyVaultService` (internal, folders only): data keys per folder, created, read and rotated.

use tonic::{Request, Response, Status};
use ts_proto::internal::key_vault_service_server::KeyVaultService;
use ts_proto::internal::*;

use super::*;

#[tonic::async_trait]
impl KeyVaultService for KeyVaultApi {
    async fn create_data_key(
        &self,
        request: Request<CreateDataKeyRequest>,
    ) -> Result<Response<CreateDataKeyResponse>, Status> {
        let req = request.into_inner();
        let version = self.vault.create(folder_id(&req.folder_id)?).await.map_err(Status::from)?;
        Ok(Response::new(CreateDataKeyResponse { version }))
    }

    async fn get_data_key(&self, request: Request<GetDataKeyRequest>) -> Result<Response<GetDataKeyResponse>, Status> {
        let req = request.into_inner();
        let version = (req.version != 0).then_some(req.version);
        let key = self.vault.get(folder_id(&req.folder_id)?, version).await.map_err(Status::from)?;
        Ok(Response::new(GetDataKeyResponse { version: key.version(), key: key.expose_bytes().to_vec() }))
    }

    async fn rotate_data_key(
        &self,
        request: Request<RotateDataKeyRequest>,
    ) -> Result<Response<RotateDataKeyResponse>, Status> {
        let req = request.into_inner();
        let version = self.vault.rotate(folder_id(&req.folder_id)?).await.map_err(Status::from)?;
        Ok(Response::new(RotateDataKeyResponse { version }))
    }

    async fn retire_data_key_versions(
        &self,
        request: Request<RetireDataKeyVersionsRequest>,
    ) -> Result<Response<RetireDataKeyVersionsResponse>, Status> {
        let req = request.into_inner();
        let retired =
            self.vault.retire(folder_id(&req.folder_id)?, req.keep_from_version).await.map_err(Status::from)?;
        Ok(Response::new(RetireDataKeyVersionsResponse { retired: u32::try_from(retired).unwrap_or(u32::MAX) }))
    }

    async fn destroy_data_keys(
        &self,
        request: Request<DestroyDataKeysRequest>,
    ) -> Result<Response<DestroyDataKeysResponse>, Status> {
        let req = request.into_inner();
        let destroyed = self.vault.destroy(folder_id(&req.folder_id)?).await.map_err(Status::from)?;
        tracing::info!(folder_id = %req.folder_id, destroyed, "data keys destroyed");
        Ok(Response::new(DestroyDataKeysResponse { destroyed: u32::try_from(destroyed).unwrap_or(u32::MAX) }))
    }
}
