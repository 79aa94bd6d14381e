//! `FolderService`: create, list, get, rename, delete and leave.

use tonic::{Request, Response, Status};
use ts_contract::ids::RequestId;
use ts_contract::user::UserContext;
use ts_proto::public::folder_service_server::FolderService;
use ts_proto::public::*;

use super::{FoldersApi, own_task, page, timestamp};
use crate::audit::AuditAction;
use crate::folders::FolderView;
use crate::paging::PageAsk;
use crate::validate::check_name;

fn folder_message(v: FolderView) -> Folder {
    Folder {
        id: v.doc.id.into(),
        name: v.name,
        my_access: v.access as i32,
        created_by_email: v.doc.created_by_email,
        create_time: timestamp(v.doc.created_at),
        update_time: timestamp(v.doc.updated_at),
    }
}

#[tonic::async_trait]
impl FolderService for FoldersApi {
    async fn create_folder(
        &self,
        request: Request<CreateFolderRequest>,
    ) -> Result<Response<CreateFolderResponse>, Status> {
        let req = request.get_ref();
        let folder = self
            .for_user(&request, AuditAction::FolderCreate, |call| async move {
                let name = check_name("name", &req.name)?;
                let request = RequestId::parse_optional("request_id", &req.request_id)?;
                // Its own task: a client that goes away mid-way (a deadline, a dropped
                // connection) cannot leave a folder without its first member behind.
                let folders = self.folders.clone();
                own_task(
                    "create_folder",
                    async move { folders.create_folder(&call.user, name, request.as_ref()).await },
                )
                .await
            })
            .await?;
        Ok(Response::new(CreateFolderResponse { folder: Some(folder_message(folder)) }))
    }

    async fn list_folders(
        &self,
        request: Request<ListFoldersRequest>,
    ) -> Result<Response<ListFoldersResponse>, Status> {
        let ask = PageAsk::from_request(&request.get_ref().page);
        // The caller, the page and the folders a kept copy of it held are known before the
        // one Redis round trip that reads every generation the answer depends on.
        let user = UserContext::from_metadata(request.metadata())?;
        let listing = self.folders.listing(&user.user_id, &ask)?;
        let generations = self.folders.listing_generations(&listing).await;
        let sharing = generations.sharing.clone();
        let listed = self
            .run(&request, AuditAction::FolderList, "", &sharing, |_call| async move {
                Ok(self.folders.list_folders(listing, &generations).await?)
            })
            .await?;
        let folders = listed.items.into_iter().map(folder_message).collect();
        Ok(Response::new(ListFoldersResponse { folders, page: page(listed.next_token) }))
    }

    async fn get_folder(&self, request: Request<GetFolderRequest>) -> Result<Response<GetFolderResponse>, Status> {
        let folder_id = &request.get_ref().folder_id;
        let folder = self
            .in_folder(&request, AuditAction::FolderGet, folder_id, AccessLevel::View, |_, at| async move {
                Ok(self.folders.get_folder(at).await?)
            })
            .await?;
        Ok(Response::new(GetFolderResponse { folder: Some(folder_message(folder)) }))
    }

    async fn rename_folder(
        &self,
        request: Request<RenameFolderRequest>,
    ) -> Result<Response<RenameFolderResponse>, Status> {
        let req = request.get_ref();
        let folder = self
            .in_folder(&request, AuditAction::FolderRename, &req.folder_id, AccessLevel::Manage, |_, at| async move {
                let name = check_name("name", &req.name)?;
                Ok(self.folders.rename_folder(at, name).await?)
            })
            .await?;
        Ok(Response::new(RenameFolderResponse { folder: Some(folder_message(folder)) }))
    }

    async fn delete_folder(
        &self,
        request: Request<DeleteFolderRequest>,
    ) -> Result<Response<DeleteFolderResponse>, Status> {
        let folder_id = &request.get_ref().folder_id;
        self.in_folder(&request, AuditAction::FolderDelete, folder_id, AccessLevel::Manage, |_, at| async move {
            Ok(self.folders.delete_folder(&at.folder_id).await?)
        })
        .await?;
        Ok(Response::new(DeleteFolderResponse {}))
    }

    async fn leave_folder(
        &self,
        request: Request<LeaveFolderRequest>,
    ) -> Result<Response<LeaveFolderResponse>, Status> {
        let folder_id = &request.get_ref().folder_id;
        self.in_folder(&request, AuditAction::FolderLeave, folder_id, AccessLevel::View, |call, at| async move {
            Ok(self.folders.remove_member(&at.folder_id, &call.user.user_id).await?)
        })
        .await?;
        Ok(Response::new(LeaveFolderResponse {}))
    }
}
