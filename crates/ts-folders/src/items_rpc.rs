//! `ItemService`: items sealed field by field under the folder's data key, versioned with
//! optimistic concurrency, capped per folder, cached in Redis as ciphertext only.

use std::time::Duration;

use bson::{Document, doc};
use prost::Message;
use tonic::{Request, Response, Status};
use ts_crypto::DataKey;
use ts_proto::public::item_service_server::ItemService;
use ts_proto::public::*;

use crate::context::{Call, folder_generation_key, item_key};
use crate::paging::{open_token, page_size, seal_token, token};
use crate::sealed::{key_version, open_field, seal_fields};
use crate::slots::{self, ItemWrite, Slots};
use crate::validate::{CheckedItem, check_item};
use crate::{FoldersApi, find_page, store_error, timestamp};

/// Most items in one folder.
pub const MAX_ITEMS_PER_FOLDER: i64 = 10_000;
/// Item documents (ciphertext) stay in Redis this long at most.
const ITEM_TTL: Duration = Duration::from_secs(60);

fn item_id(raw: &str) -> Result<&str, Status> {
    ts_contract::ids::require_uuid("item_id", raw)
}

fn summary(d: &Document, name: String) -> ItemSummary {
    ItemSummary {
        id: d.get_str("_id").unwrap_or_default().to_owned(),
        folder_id: d.get_str("folder_id").unwrap_or_default().to_owned(),
        kind: d.get_i32("kind").unwrap_or_default(),
        name,
        version: d.get_i64("version").unwrap_or_default() as u64,
        shared_by_email: d.get_str("shared_by_email").unwrap_or_default().to_owned(),
        updated_by_email: d.get_str("updated_by_email").unwrap_or_default().to_owned(),
        create_time: timestamp(d, "created_at"),
        update_time: timestamp(d, "updated_at"),
    }
}

impl FoldersApi {
    async fn key_of(&self, folder_id: &str, d: &Document) -> Result<DataKey, Status> {
        let version = key_version(d).ok_or_else(|| Status::internal("stored item without a key version"))?;
        self.keys.version(folder_id, version).await
    }

    async fn open_item(&self, d: &Document, with_content: bool) -> Result<Item, Status> {
        let folder_id = d.get_str("folder_id").unwrap_or_default();
        let id = d.get_str("_id").unwrap_or_default();
        let key = self.key_of(folder_id, d).await?;
        let enc = d.get_document("enc").map_err(|_| Status::internal("stored item without sealed fields"))?;
        let name = String::from_utf8_lossy(&open_field(&key, folder_id, id, enc, "name")?).into_owned();
        if !with_content {
            return Ok(Item { summary: Some(summary(d, name)), description: String::new(), content: None });
        }
        let description = String::from_utf8_lossy(&open_field(&key, folder_id, id, enc, "description")?).into_owned();
        let content = ItemContent::decode(open_field(&key, folder_id, id, enc, "content")?.as_slice())
            .map_err(|_| Status::data_loss(format!("item {id}: stored content cannot be decoded")))?;
        Ok(Item { summary: Some(summary(d, name)), description, content: Some(content) })
    }

    /// An item of a folder, from the cache or MongoDB.
    async fn load_item(&self, folder_id: &str, id: &str) -> Result<Document, Status> {
        let key = item_key(folder_id, id);
        if let Some(bytes) = self.cache.get(&key).await
            && let Ok(d) = bson::from_slice::<Document>(&bytes)
        {
            return Ok(d);
        }
        let generation = self.cache.generation(&folder_generation_key(folder_id)).await;
        let d = self
            .items()
            .find_one(doc! { "_id": id, "folder_id": folder_id })
            .await
            .map_err(store_error)?
            .ok_or_else(|| Status::not_found("item not found"))?;
        if let Ok(bytes) = bson::to_vec(&d) {
            self.cache.set_if_generation(&generation, &key, bytes, ITEM_TTL).await;
        }
        Ok(d)
    }

    fn sealed(&self, key: &DataKey, folder_id: &str, id: &str, item: &CheckedItem) -> Result<Document, Status> {
        seal_fields(
            key,
            folder_id,
            id,
            &[("name", item.name.as_bytes()), ("description", item.description.as_bytes()), ("content", &item.content)],
        )
    }

    async fn create_item_in(&self, call: &Call, req: CreateItemRequest) -> Result<CreateItemResponse, Status> {
        self.require(call, &req.folder_id, AccessLevel::Edit).await?;
        let item = check_item(&req.name, &req.description, req.content)?;
        let id = uuid::Uuid::new_v4().to_string();
        let key = self.keys.newest(&req.folder_id).await?;
        let now = bson::DateTime::now();
        let d = doc! {
            "_id": &id, "folder_id": &req.folder_id, "kind": item.kind as i32, "version": 1_i64,
            "key_version": i64::from(key.version()), "enc": self.sealed(&key, &req.folder_id, &id, &item)?,
            "shared_by_email": &call.user.email, "updated_by_email": &call.user.email, "created_at": now, "updated_at": now,
        };
        match self.write_with_slots(Some(&req.folder_id), None, ItemWrite::Insert(d.clone())).await? {
            Slots::Written => {}
            Slots::Full | Slots::NoMatch => return Err(slots::full()),
        }
        let stored = self.open_item(&d, true).await?;
        Ok(CreateItemResponse { item: Some(stored), removed_fields: item.removed })
    }

    async fn list_items_page(&self, call: &Call, req: ListItemsRequest) -> Result<ListItemsResponse, Status> {
        self.require(call, &req.folder_id, AccessLevel::View).await?;
        let size = page_size(&req.page, 100, 500);
        let mut filter = doc! { "folder_id": &req.folder_id };
        if let Some(t) = token(&req.page) {
            let p = open_token(&self.keys, &req.folder_id, "list_items", t, 2).await?;
            let ms: i64 = p[0].parse().map_err(|_| Status::invalid_argument("page.page_token is not valid here"))?;
            let at = bson::DateTime::from_millis(ms);
            filter.insert(
                "$or",
                vec![doc! { "created_at": { "$gt": at } }, doc! { "created_at": at, "_id": { "$gt": &p[1] } }],
            );
        }
        let (docs, more) = find_page(&self.items(), filter, doc! { "created_at": 1, "_id": 1 }, size).await?;
        let mut items = Vec::new();
        for d in &docs {
            items.extend(self.open_item(d, false).await?.summary);
        }
        let next = match (more, docs.last()) {
            (true, Some(last)) => {
                let at = last.get_datetime("created_at").map(|d| d.timestamp_millis()).unwrap_or_default();
                seal_token(
                    &self.keys,
                    &req.folder_id,
                    "list_items",
                    &[at.to_string(), last.get_str("_id").unwrap_or_default().to_owned()],
                )
                .await?
            }
            _ => String::new(),
        };
        Ok(ListItemsResponse { items, page: Some(PageResponse { next_page_token: next }) })
    }

    async fn update_item_in(&self, call: &Call, req: UpdateItemRequest) -> Result<UpdateItemResponse, Status> {
        self.require(call, &req.folder_id, AccessLevel::Edit).await?;
        let id = item_id(&req.item_id)?;
        let item = check_item(&req.name, &req.description, req.content)?;
        let current = self.load_item(&req.folder_id, id).await?;
        if current.get_i32("kind").unwrap_or_default() != item.kind as i32 {
            return Err(Status::invalid_argument("content cannot change the item's kind"));
        }
        let key = self.keys.newest(&req.folder_id).await?;
        let expected = i64::try_from(req.expected_version)
            .map_err(|_| Status::invalid_argument("expected_version is out of range"))?;
        let update = doc! { "$set": {
            "enc": self.sealed(&key, &req.folder_id, id, &item)?, "key_version": i64::from(key.version()),
            "updated_by_email": &call.user.email, "updated_at": bson::DateTime::now(),
        }, "$inc": { "version": 1_i64 } };
        let r = self
            .items()
            .update_one(doc! { "_id": id, "folder_id": &req.folder_id, "version": expected }, update)
            .await
            .map_err(store_error)?;
        self.forget_items(&req.folder_id, &[id]).await;
        if r.modified_count == 0 {
            return Err(stale(&current, req.expected_version));
        }
        let stored = self.load_item(&req.folder_id, id).await?;
        Ok(UpdateItemResponse { item: Some(self.open_item(&stored, true).await?), removed_fields: item.removed })
    }

    async fn delete_item_in(&self, call: &Call, req: DeleteItemRequest) -> Result<(), Status> {
        self.require(call, &req.folder_id, AccessLevel::Edit).await?;
        let id = item_id(&req.item_id)?;
        let current = self.load_item(&req.folder_id, id).await?;
        let expected = i64::try_from(req.expected_version)
            .map_err(|_| Status::invalid_argument("expected_version is out of range"))?;
        let filter = doc! { "_id": id, "folder_id": &req.folder_id, "version": expected };
        let outcome = self.write_with_slots(None, Some(&req.folder_id), ItemWrite::Delete(filter)).await?;
        self.forget_items(&req.folder_id, &[id]).await;
        if outcome != Slots::Written {
            return Err(stale(&current, req.expected_version));
        }
        Ok(())
    }

    async fn move_to(&self, call: &Call, req: MoveItemRequest) -> Result<Item, Status> {
        self.require(call, &req.folder_id, AccessLevel::Edit).await?;
        ts_contract::ids::require_uuid("target_folder_id", &req.target_folder_id)?;
        if req.target_folder_id == req.folder_id {
            return Err(Status::invalid_argument("target_folder_id must differ from folder_id"));
        }
        self.require(call, &req.target_folder_id, AccessLevel::Edit).await.map_err(|s| match s.code() {
            tonic::Code::NotFound => Status::not_found("target folder not found"),
            _ => s,
        })?;
        let id = item_id(&req.item_id)?;
        let current = self.load_item(&req.folder_id, id).await?;
        let old_key = self.key_of(&req.folder_id, &current).await?;
        let new_key = self.keys.newest(&req.target_folder_id).await?;
        // Fields are bound to their folder, so moving means opening and sealing again.
        let enc = current.get_document("enc").map_err(|_| Status::internal("stored item without sealed fields"))?;
        let plain: Vec<(String, zeroize::Zeroizing<Vec<u8>>)> = enc
            .keys()
            .map(|f| Ok((f.clone(), open_field(&old_key, &req.folder_id, id, enc, f)?)))
            .collect::<Result<_, Status>>()?;
        let fields: Vec<(&str, &[u8])> = plain.iter().map(|(f, v)| (f.as_str(), v.as_slice())).collect();
        let moved = seal_fields(&new_key, &req.target_folder_id, id, &fields)?;
        let expected = i64::try_from(req.expected_version)
            .map_err(|_| Status::invalid_argument("expected_version is out of range"))?;
        let update = doc! { "$set": {
            "folder_id": &req.target_folder_id, "enc": moved, "key_version": i64::from(new_key.version()),
            "updated_by_email": &call.user.email, "updated_at": bson::DateTime::now(),
        }, "$inc": { "version": 1_i64 } };
        let filter = doc! { "_id": id, "folder_id": &req.folder_id, "version": expected };
        let write = ItemWrite::Update { filter, update };
        let outcome = self.write_with_slots(Some(&req.target_folder_id), Some(&req.folder_id), write).await?;
        self.forget_items(&req.folder_id, &[id]).await;
        self.forget_items(&req.target_folder_id, &[id]).await;
        match outcome {
            Slots::Written => {}
            Slots::Full => return Err(slots::full()),
            Slots::NoMatch => return Err(stale(&current, req.expected_version)),
        }
        self.open_item(&self.load_item(&req.target_folder_id, id).await?, true).await
    }
}

fn stale(current: &Document, expected: u64) -> Status {
    let now = current.get_i64("version").unwrap_or_default();
    Status::aborted(format!(
        "the item changed: expected_version is {expected} but the item is at version {now}; read it again"
    ))
}

#[tonic::async_trait]
impl ItemService for FoldersApi {
    async fn create_item(&self, request: Request<CreateItemRequest>) -> Result<Response<CreateItemResponse>, Status> {
        let req = request.get_ref().clone();
        let id = req.folder_id.clone();
        Ok(Response::new(
            self.handle(
                &request,
                "item.create",
                &id,
                true,
                |call| async move { self.create_item_in(&call, req).await },
            )
            .await?,
        ))
    }

    async fn get_item(&self, request: Request<GetItemRequest>) -> Result<Response<GetItemResponse>, Status> {
        let req = request.get_ref().clone();
        let item = self
            .handle(&request, "item.get", &req.folder_id, false, |call| {
                let req = req.clone();
                async move {
                    self.require(&call, &req.folder_id, AccessLevel::View).await?;
                    let d = self.load_item(&req.folder_id, item_id(&req.item_id)?).await?;
                    self.open_item(&d, true).await
                }
            })
            .await?;
        Ok(Response::new(GetItemResponse { item: Some(item) }))
    }

    async fn list_items(&self, request: Request<ListItemsRequest>) -> Result<Response<ListItemsResponse>, Status> {
        let req = request.get_ref().clone();
        let id = req.folder_id.clone();
        Ok(Response::new(
            self.handle(
                &request,
                "item.list",
                &id,
                false,
                |call| async move { self.list_items_page(&call, req).await },
            )
            .await?,
        ))
    }

    async fn update_item(&self, request: Request<UpdateItemRequest>) -> Result<Response<UpdateItemResponse>, Status> {
        let req = request.get_ref().clone();
        let id = req.folder_id.clone();
        Ok(Response::new(
            self.handle(
                &request,
                "item.update",
                &id,
                true,
                |call| async move { self.update_item_in(&call, req).await },
            )
            .await?,
        ))
    }

    async fn delete_item(&self, request: Request<DeleteItemRequest>) -> Result<Response<DeleteItemResponse>, Status> {
        let req = request.get_ref().clone();
        let id = req.folder_id.clone();
        self.handle(&request, "item.delete", &id, true, |call| async move { self.delete_item_in(&call, req).await })
            .await?;
        Ok(Response::new(DeleteItemResponse {}))
    }

    async fn move_item(&self, request: Request<MoveItemRequest>) -> Result<Response<MoveItemResponse>, Status> {
        let req = request.get_ref().clone();
        let id = req.folder_id.clone();
        let item =
            self.handle(&request, "item.move", &id, true, |call| async move { self.move_to(&call, req).await }).await?;
        Ok(Response::new(MoveItemResponse { item: Some(item) }))
    }
}
