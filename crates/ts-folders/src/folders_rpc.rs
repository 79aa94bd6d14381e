//! `FolderService`: create, list, get, rename, delete (crypto-erasure first) and leave.

use bson::{Document, doc};
use futures::TryStreamExt;
use tonic::{Request, Response, Status};
use ts_proto::public::folder_service_server::FolderService;
use ts_proto::public::*;

use crate::context::Call;
use crate::paging::{open_plain, page_size, plain_token, token};
use crate::sealed::{key_version, open_field, seal_fields};
use crate::validate::check_name;
use crate::{FOLDER_ITEM_ID, FoldersApi, find_page, store_error, timestamp};

impl FoldersApi {
    /// A stored folder as the caller sees it.
    pub(crate) async fn folder_message(&self, doc: &Document, my_access: AccessLevel) -> Result<Folder, Status> {
        let id = doc.get_str("_id").map_err(|_| Status::internal("stored folder without an id"))?;
        let version = key_version(doc).ok_or_else(|| Status::internal("stored folder without a key version"))?;
        let key = self.keys.version(id, version).await?;
        let enc = doc.get_document("enc").map_err(|_| Status::internal("stored folder without sealed fields"))?;
        let name = open_field(&key, id, FOLDER_ITEM_ID, enc, "name")?;
        Ok(Folder {
            id: id.to_owned(),
            name: String::from_utf8_lossy(&name).into_owned(),
            my_access: my_access as i32,
            created_by_email: doc.get_str("created_by_email").unwrap_or_default().to_owned(),
            create_time: timestamp(doc, "created_at"),
            update_time: timestamp(doc, "updated_at"),
        })
    }

    pub(crate) async fn load_folder(&self, folder_id: &str) -> Result<Document, Status> {
        self.folders()
            .find_one(doc! { "_id": folder_id })
            .await
            .map_err(store_error)?
            .ok_or_else(|| Status::not_found("folder not found"))
    }

    async fn create(&self, call: &Call, req: CreateFolderRequest) -> Result<Folder, Status> {
        let name = check_name("name", &req.name)?;
        let id = uuid::Uuid::new_v4().to_string();
        self.keys.create(&id).await?;
        let key = self.keys.newest(&id).await?;
        let enc = seal_fields(&key, &id, FOLDER_ITEM_ID, &[("name", name.as_bytes())])?;
        let now = bson::DateTime::now();
        let folder = doc! {
            "_id": &id, "enc": enc, "key_version": i64::from(key.version()), "managers": 1_i64, "items": 0_i64,
            "created_by_email": &call.user.email, "created_at": now, "updated_at": now,
        };
        self.folders().insert_one(folder.clone()).await.map_err(store_error)?;
        let member = doc! {
            "_id": format!("{id}:{}", call.user.user_id), "folder_id": &id, "user_id": &call.user.user_id,
            "email": &call.user.email, "access": AccessLevel::Manage as i32, "joined_at": now,
            "manage_epoch": uuid::Uuid::new_v4().simple().to_string(),
        };
        if let Err(e) = self.members().insert_one(member).await {
            // Nothing half-made: without its first member the folder goes too.
            let _ = self.folders().delete_one(doc! { "_id": &id }).await;
            let _ = self.keys.destroy(&id).await;
            return Err(store_error(e));
        }
        self.forget_members(&id, &[call.user.user_id.to_string()]).await;
        self.folder_message(&folder, AccessLevel::Manage).await
    }

    async fn list(&self, call: &Call, req: ListFoldersRequest) -> Result<ListFoldersResponse, Status> {
        let size = page_size(&req.page, 50, 200);
        let mut filter = doc! { "user_id": &call.user.user_id };
        if let Some(t) = token(&req.page) {
            let parts = open_plain(t, 1)?;
            filter.insert("folder_id", doc! { "$gt": &parts[0] });
        }
        let (memberships, more) = find_page(&self.members(), filter, doc! { "folder_id": 1 }, size).await?;
        let mut folders = Vec::new();
        for m in &memberships {
            let folder_id = m.get_str("folder_id").unwrap_or_default();
            let access =
                m.get_i32("access").ok().and_then(|n| AccessLevel::try_from(n).ok()).unwrap_or(AccessLevel::View);
            if let Some(f) = self.folders().find_one(doc! { "_id": folder_id }).await.map_err(store_error)? {
                folders.push(self.folder_message(&f, access).await?);
            }
        }
        let next = if more {
            memberships.last().map(|m| plain_token(&[m.get_str("folder_id").unwrap_or_default().to_owned()]))
        } else {
            None
        };
        Ok(ListFoldersResponse { folders, page: Some(PageResponse { next_page_token: next.unwrap_or_default() }) })
    }

    async fn rename(&self, call: Call, req: RenameFolderRequest) -> Result<Folder, Status> {
        let access = self.require(&call, &req.folder_id, AccessLevel::Manage).await?;
        let name = check_name("name", &req.name)?;
        let key = self.keys.newest(&req.folder_id).await?;
        let enc = seal_fields(&key, &req.folder_id, FOLDER_ITEM_ID, &[("name", name.as_bytes())])?;
        self.folders()
            .update_one(
                doc! { "_id": &req.folder_id },
                doc! { "$set": { "enc": enc, "key_version": i64::from(key.version()), "updated_at": bson::DateTime::now() } },
            )
            .await
            .map_err(store_error)?;
        self.folder_message(&self.load_folder(&req.folder_id).await?, access).await
    }

    async fn delete(&self, call: &Call, folder_id: &str) -> Result<(), Status> {
        self.require(call, folder_id, AccessLevel::Manage).await?;
        // Crypto-erasure first: once the keys are gone, nothing left behind can be read.
        self.keys.destroy(folder_id).await?;
        // Then the folder itself, so that a concurrent accept (its transaction touches the
        // folder) either lands before and is swept below, or finds no folder.
        self.folders().delete_one(doc! { "_id": folder_id }).await.map_err(store_error)?;
        let members: Vec<Document> = self
            .members()
            .find(doc! { "folder_id": folder_id })
            .await
            .map_err(store_error)?
            .try_collect()
            .await
            .map_err(store_error)?;
        let user_ids: Vec<String> =
            members.iter().filter_map(|m| m.get_str("user_id").ok().map(str::to_owned)).collect();
        self.items().delete_many(doc! { "folder_id": folder_id }).await.map_err(store_error)?;
        self.members().delete_many(doc! { "folder_id": folder_id }).await.map_err(store_error)?;
        self.db
            .collection::<Document>("spent_invitations")
            .delete_many(doc! { "folder_id": folder_id })
            .await
            .map_err(store_error)?;
        self.forget_members(folder_id, &user_ids).await;
        Ok(())
    }

    async fn leave(&self, call: &Call, folder_id: &str) -> Result<(), Status> {
        self.require(call, folder_id, AccessLevel::View).await?;
        self.remove_member_txn(folder_id, &call.user.user_id).await
    }
}

#[tonic::async_trait]
impl FolderService for FoldersApi {
    async fn create_folder(
        &self,
        request: Request<CreateFolderRequest>,
    ) -> Result<Response<CreateFolderResponse>, Status> {
        let req = request.get_ref().clone();
        let folder = self
            .handle(&request, "folder.create", "", true, |call| async move { self.create(&call, req).await })
            .await?;
        Ok(Response::new(CreateFolderResponse { folder: Some(folder) }))
    }

    async fn list_folders(
        &self,
        request: Request<ListFoldersRequest>,
    ) -> Result<Response<ListFoldersResponse>, Status> {
        let req = request.get_ref().clone();
        Ok(Response::new(
            self.handle(&request, "folder.list", "", false, |call| async move { self.list(&call, req).await }).await?,
        ))
    }

    async fn get_folder(&self, request: Request<GetFolderRequest>) -> Result<Response<GetFolderResponse>, Status> {
        let id = request.get_ref().folder_id.clone();
        let folder = self
            .handle(&request, "folder.get", &id, false, |call| {
                let id = id.clone();
                async move {
                    let access = self.require(&call, &id, AccessLevel::View).await?;
                    self.folder_message(&self.load_folder(&id).await?, access).await
                }
            })
            .await?;
        Ok(Response::new(GetFolderResponse { folder: Some(folder) }))
    }

    async fn rename_folder(
        &self,
        request: Request<RenameFolderRequest>,
    ) -> Result<Response<RenameFolderResponse>, Status> {
        let req = request.get_ref().clone();
        let folder =
            self.handle(&request, "folder.rename", &req.folder_id, true, |call| self.rename(call, req.clone())).await?;
        Ok(Response::new(RenameFolderResponse { folder: Some(folder) }))
    }

    async fn delete_folder(
        &self,
        request: Request<DeleteFolderRequest>,
    ) -> Result<Response<DeleteFolderResponse>, Status> {
        let id = request.get_ref().folder_id.clone();
        self.handle(&request, "folder.delete", &id, true, |call| {
            let id = id.clone();
            async move { self.delete(&call, &id).await }
        })
        .await?;
        Ok(Response::new(DeleteFolderResponse {}))
    }

    async fn leave_folder(
        &self,
        request: Request<LeaveFolderRequest>,
    ) -> Result<Response<LeaveFolderResponse>, Status> {
        let id = request.get_ref().folder_id.clone();
        self.handle(&request, "folder.leave", &id, true, |call| {
            let id = id.clone();
            async move { self.leave(&call, &id).await }
        })
        .await?;
        Ok(Response::new(LeaveFolderResponse {}))
    }
}
