//! `ItemService`: create, get, list, update, delete and move items.

use tonic::{Request, Response, Status};
use ts_contract::ids::{FolderId, ItemId, RequestId};
use ts_proto::public::item_service_server::ItemService;
use ts_proto::public::*;

use super::{FoldersApi, own_task, page, timestamp};
use crate::audit::AuditAction;
use crate::items::ItemView;
use crate::paging::PageAsk;
use crate::validate::check_item;

fn summary(v: &ItemView) -> ItemSummary {
    let d = &v.doc;
    ItemSummary {
        id: d.id.to_string(),
        folder_id: d.folder_id.to_string(),
        kind: d.kind,
        name: v.name.clone(),
        version: d.version as u64,
        shared_by_email: d.shared_by_email.clone(),
        updated_by_email: d.updated_by_email.clone(),
        create_time: timestamp(d.created_at),
        update_time: timestamp(d.updated_at),
    }
}

/// An opened item as GetItem answers it (also for exports).
pub(super) fn item_message(v: ItemView) -> Item {
    let summary = Some(summary(&v));
    match v.body {
        Some(body) => Item { summary, description: body.description, content: Some(body.content) },
        None => Item { summary, description: String::new(), content: None },
    }
}

#[tonic::async_trait]
impl ItemService for FoldersApi {
    async fn create_item(&self, request: Request<CreateItemRequest>) -> Result<Response<CreateItemResponse>, Status> {
        let req = request.get_ref();
        let (item, removed_fields) = self
            .in_folder(&request, AuditAction::ItemCreate, &req.folder_id, AccessLevel::Edit, |call, at| async move {
                let item = check_item(&req.name, &req.description, req.content.clone())?;
                let request = RequestId::parse_optional("request_id", &req.request_id)?;
                // Its own task: a write stamping the caller's email always reaches its check
                // against an erasure that raced it, whoever hangs up.
                let (folders, user, folder_id, checked) =
                    (self.folders.clone(), call.user.clone(), at.folder_id.clone(), item.clone());
                let made = async move { folders.create_item(&user, &folder_id, &checked, request.as_ref()).await };
                let stored = own_task("create_item", made).await?;
                Ok((stored, item.removed))
            })
            .await?;
        Ok(Response::new(CreateItemResponse { item: Some(item_message(item)), removed_fields }))
    }

    async fn get_item(&self, request: Request<GetItemRequest>) -> Result<Response<GetItemResponse>, Status> {
        let req = request.get_ref();
        let item = self
            .in_folder(&request, AuditAction::ItemGet, &req.folder_id, AccessLevel::View, |_, at| async move {
                let id = ItemId::parse("item_id", &req.item_id)?;
                Ok(self.folders.get_item(&at, &id).await?)
            })
            .await?;
        Ok(Response::new(GetItemResponse { item: Some(item_message(item)) }))
    }

    async fn list_items(&self, request: Request<ListItemsRequest>) -> Result<Response<ListItemsResponse>, Status> {
        let req = request.get_ref();
        let ask = PageAsk::from_request(&req.page);
        let listed = self
            .in_folder(&request, AuditAction::ItemList, &req.folder_id, AccessLevel::View, |_, at| async move {
                Ok(self.folders.list_items(&at, &ask).await?)
            })
            .await?;
        let items = listed.items.iter().map(summary).collect();
        Ok(Response::new(ListItemsResponse { items, page: page(listed.next_token) }))
    }

    async fn update_item(&self, request: Request<UpdateItemRequest>) -> Result<Response<UpdateItemResponse>, Status> {
        let req = request.get_ref();
        let (item, removed_fields) = self
            .in_folder(&request, AuditAction::ItemUpdate, &req.folder_id, AccessLevel::Edit, |call, at| async move {
                let id = ItemId::parse("item_id", &req.item_id)?;
                let item = check_item(&req.name, &req.description, req.content.clone())?;
                // Its own task, as CreateItem's.
                let (folders, user, folder_id, checked) =
                    (self.folders.clone(), call.user.clone(), at.folder_id.clone(), item.clone());
                let expected = req.expected_version;
                let updated = async move { folders.update_item(&user, &folder_id, &id, &checked, expected).await };
                let stored = own_task("update_item", updated).await?;
                Ok((stored, item.removed))
            })
            .await?;
        Ok(Response::new(UpdateItemResponse { item: Some(item_message(item)), removed_fields }))
    }

    async fn delete_item(&self, request: Request<DeleteItemRequest>) -> Result<Response<DeleteItemResponse>, Status> {
        let req = request.get_ref();
        self.in_folder(&request, AuditAction::ItemDelete, &req.folder_id, AccessLevel::Edit, |_, at| async move {
            let id = ItemId::parse("item_id", &req.item_id)?;
            Ok(self.folders.delete_item(&at.folder_id, &id, req.expected_version).await?)
        })
        .await?;
        Ok(Response::new(DeleteItemResponse {}))
    }

    async fn move_item(&self, request: Request<MoveItemRequest>) -> Result<Response<MoveItemResponse>, Status> {
        let req = request.get_ref();
        let item = self
            .in_folder(&request, AuditAction::ItemMove, &req.folder_id, AccessLevel::Edit, |call, from| async move {
                let target = FolderId::parse("target_folder_id", &req.target_folder_id)?;
                // The target is checked before the item id is read, as callers have always
                // seen it: a folder they cannot reach answers first.
                let to = self.folders.require_target(&call.user.user_id, &from.folder_id, target).await?;
                let id = ItemId::parse("item_id", &req.item_id)?;
                // Its own task, as CreateItem's.
                let (folders, user, from, to) =
                    (self.folders.clone(), call.user.clone(), from.folder_id.clone(), to.folder_id.clone());
                let expected = req.expected_version;
                own_task("move_item", async move { folders.move_item(&user, &from, &to, &id, expected).await }).await
            })
            .await?;
        Ok(Response::new(MoveItemResponse { item: Some(item_message(item)) }))
    }
}
