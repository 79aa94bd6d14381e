//! Data-key rotation for a folder's items: re-encrypt every item still on an older key
//! version to the newest, then retire the older versions at keyvault.

use bson::{Document, doc};
use futures::TryStreamExt;
use mongodb::Collection;
use tonic::{Request, Response, Status};
use ts_proto::internal::folder_key_operator_service_server::FolderKeyOperatorService;
use ts_proto::internal::{
    ReencryptFolderRequest, ReencryptFolderResponse, RotateFolderKeyRequest, RotateFolderKeyResponse,
};

use crate::keys::FolderKeys;
use crate::sealed::{key_version, reseal};
use crate::{FoldersApi, store_error};

/// A pass that keeps finding items on old versions (a writer racing it) gives up after this
/// many rounds rather than loop forever; the old versions then stay until the next pass.
const MAX_ROUNDS: usize = 5;

/// What a re-encryption pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReencryptReport {
    /// The newest version, which every item now uses.
    pub key_version: u32,
    /// Items rewritten.
    pub reencrypted: u64,
    /// Older versions retired at keyvault.
    pub retired: u32,
}

/// Rewrites every item of `folder_id` to the newest key version, then retires older
/// versions. Each item is rewritten only if unchanged since it was read (same item version
/// and key version), so a concurrent edit is never lost; safe to repeat. `forget` is told
/// which items were rewritten before anything is retired, so that no cache keeps serving a
/// copy sealed under a retired version.
pub async fn reencrypt_folder<F, Fut>(
    folders: &Collection<Document>,
    items: &Collection<Document>,
    keys: &FolderKeys,
    folder_id: &str,
    forget: F,
) -> Result<ReencryptReport, Status>
where
    F: Fn(Vec<String>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let newest = keys.newest(folder_id).await?;
    // The folder's own sealed fields (its name) first.
    if let Some(folder) = folders.find_one(doc! { "_id": folder_id }).await.map_err(store_error)?
        && let Some(old_version) = key_version(&folder).filter(|v| *v < newest.version())
    {
        let old = keys.version(folder_id, old_version).await?;
        let enc = folder.get_document("enc").map_err(|_| Status::internal("stored folder without sealed fields"))?;
        let resealed = reseal(&old, &newest, folder_id, crate::FOLDER_ITEM_ID, enc)?;
        folders
            .update_one(
                doc! { "_id": folder_id, "key_version": i64::from(old_version) },
                doc! { "$set": { "enc": resealed, "key_version": i64::from(newest.version()) } },
            )
            .await
            .map_err(store_error)?;
    }
    let stale = doc! { "folder_id": folder_id, "key_version": { "$lt": i64::from(newest.version()) } };
    let mut report = ReencryptReport { key_version: newest.version(), ..Default::default() };
    let mut rewritten: Vec<String> = Vec::new();
    let pass = async {
        for _ in 0..MAX_ROUNDS {
            let docs: Vec<Document> =
                items.find(stale.clone()).await.map_err(store_error)?.try_collect().await.map_err(store_error)?;
            if docs.is_empty() {
                return Ok(());
            }
            for item in docs {
                let item_id = item.get_str("_id").map_err(|_| Status::internal("stored item without an id"))?;
                let old_version =
                    key_version(&item).ok_or_else(|| Status::internal("stored item without a key version"))?;
                let old = keys.version(folder_id, old_version).await?;
                let enc =
                    item.get_document("enc").map_err(|_| Status::internal("stored item without sealed fields"))?;
                let resealed = reseal(&old, &newest, folder_id, item_id, enc)?;
                let mut unchanged = doc! { "_id": item_id, "key_version": i64::from(old_version) };
                if let Some(v) = item.get("version") {
                    unchanged.insert("version", v.clone());
                }
                let update = doc! { "$set": { "enc": resealed, "key_version": i64::from(newest.version()) } };
                if items.update_one(unchanged, update).await.map_err(store_error)?.modified_count == 1 {
                    report.reencrypted += 1;
                    rewritten.push(item_id.to_owned());
                }
            }
        }
        Err(Status::aborted("items kept changing during re-encryption; run the pass again"))
    }
    .await;
    // Whatever was rewritten is forgotten, also when the pass stops half-way: a later pass
    // that finds nothing left to rewrite still retires the old version.
    forget(rewritten).await;
    pass?;
    let retired = keys.retire(folder_id, newest.version()).await?;
    report.retired = retired;
    tracing::info!(
        folder_id,
        key_version = newest.version(),
        reencrypted = report.reencrypted,
        retired,
        "re-encryption pass finished"
    );
    Ok(report)
}

fn folder_id(raw: &str) -> Result<&str, Status> {
    ts_contract::ids::require_uuid("folder_id", raw)
}

impl FoldersApi {
    /// [`reencrypt_folder`] on this service's stores, forgetting rewritten items (and the
    /// folder's cached entries: a new generation) before older versions are retired.
    async fn reencrypt(&self, folder_id: &str) -> Result<ReencryptReport, Status> {
        let forget = |ids: Vec<String>| async move {
            let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            self.forget_items(folder_id, &ids).await;
        };
        reencrypt_folder(&self.folders(), &self.items(), &self.keys, folder_id, forget).await
    }

    /// Records an operator's key action on a folder, whatever its outcome.
    async fn audit_operator<R>(&self, folder_id: &str, action: &str, result: &Result<R, Status>) {
        let code = result.as_ref().map_or_else(|s| s.code(), |_| tonic::Code::Ok);
        let request_id = ts_runtime::server::current_request_id().map(|r| r.0).unwrap_or_default();
        let operator = ts_contract::audit::OPERATOR;
        self.record_audit(operator, "", folder_id, "", action, ts_contract::status::code_name(code), &request_id).await;
    }
}

#[tonic::async_trait]
impl FolderKeyOperatorService for FoldersApi {
    async fn rotate_folder_key(
        &self,
        request: Request<RotateFolderKeyRequest>,
    ) -> Result<Response<RotateFolderKeyResponse>, Status> {
        let req = request.into_inner();
        let result = async {
            let folder_id = folder_id(&req.folder_id)?;
            self.keys.rotate(folder_id).await?;
            self.reencrypt(folder_id).await
        }
        .await;
        self.audit_operator(&req.folder_id, "operator.rotate_folder_key", &result).await;
        let r = result?;
        Ok(Response::new(RotateFolderKeyResponse {
            key_version: r.key_version,
            reencrypted_items: r.reencrypted,
            retired_versions: r.retired,
        }))
    }

    async fn reencrypt_folder(
        &self,
        request: Request<ReencryptFolderRequest>,
    ) -> Result<Response<ReencryptFolderResponse>, Status> {
        let req = request.into_inner();
        let result = async { self.reencrypt(folder_id(&req.folder_id)?).await }.await;
        self.audit_operator(&req.folder_id, "operator.reencrypt_folder", &result).await;
        let r = result?;
        Ok(Response::new(ReencryptFolderResponse {
            key_version: r.key_version,
            reencrypted_items: r.reencrypted,
            retired_versions: r.retired,
        }))
    }
}
