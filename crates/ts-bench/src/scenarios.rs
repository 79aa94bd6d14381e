//! The public calls under load, each as a load-generator [`Call`]: worker `w` speaks as user
//! `w % users` over gateway connection `w % connections`, as a signed-in client would.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tonic::transport::Channel;
use ts_proto::public::auth_service_client::AuthServiceClient;
use ts_proto::public::folder_service_client::FolderServiceClient;
use ts_proto::public::invitation_service_client::InvitationServiceClient;
use ts_proto::public::item_service_client::ItemServiceClient;
use ts_proto::public::{
    AccessLevel, CreateInvitationRequest, CreateItemRequest, GetItemRequest, GetMeRequest, ListFoldersRequest,
    ListItemsRequest, ListMyInvitationsRequest,
};
use ts_testkit::{Session, query_content};

use crate::load::{Call, call};

/// A user and the folder (with its items) the scenarios use as them.
#[derive(Debug, Clone)]
pub struct Actor {
    /// The signed-in user.
    pub session: Session,
    /// A folder they manage.
    pub folder_id: String,
    /// Items in that folder.
    pub items: Vec<String>,
}

/// Who a scenario speaks as, and over which gateway connections.
#[derive(Debug, Clone)]
pub struct Crowd {
    channels: Arc<Vec<Channel>>,
    actors: Arc<Vec<Actor>>,
}

impl Crowd {
    /// `actors` over `channels` (both non-empty).
    pub fn new(channels: Vec<Channel>, actors: Vec<Actor>) -> Self {
        Crowd { channels: Arc::new(channels), actors: Arc::new(actors) }
    }

    fn pick(&self, worker: usize) -> (Channel, &Actor) {
        (self.channels[worker % self.channels.len()].clone(), &self.actors[worker % self.actors.len()])
    }

    /// GetItem: one of the actor's items, in turn.
    pub fn get_item(&self) -> Call {
        let crowd = self.clone();
        call(move |worker, seq| {
            let (channel, actor) = crowd.pick(worker);
            let item_id = actor.items[seq as usize % actor.items.len()].clone();
            let request = actor.session.request(GetItemRequest { folder_id: actor.folder_id.clone(), item_id });
            async move { ItemServiceClient::new(channel).get_item(request).await.map(drop) }
        })
    }

    /// ListItems: the first page (default size) of the actor's folder.
    pub fn list_items(&self) -> Call {
        let crowd = self.clone();
        call(move |worker, _| {
            let (channel, actor) = crowd.pick(worker);
            let request = actor.session.request(ListItemsRequest { folder_id: actor.folder_id.clone(), page: None });
            async move { ItemServiceClient::new(channel).list_items(request).await.map(drop) }
        })
    }

    /// ListFolders: the first page (default size) of the actor's folders.
    pub fn list_folders(&self) -> Call {
        self.list_folders_by(0)
    }

    /// ListFolders, first page of `page_size` folders (0: the RPC's default).
    pub fn list_folders_by(&self, page_size: u32) -> Call {
        let crowd = self.clone();
        call(move |worker, _| {
            let (channel, actor) = crowd.pick(worker);
            let page = (page_size > 0).then(|| ts_proto::public::PageRequest { page_size, page_token: String::new() });
            let request = actor.session.request(ListFoldersRequest { page });
            async move { FolderServiceClient::new(channel).list_folders(request).await.map(drop) }
        })
    }

    /// GetMe.
    pub fn get_me(&self) -> Call {
        let crowd = self.clone();
        call(move |worker, _| {
            let (channel, actor) = crowd.pick(worker);
            let request = actor.session.request(GetMeRequest {});
            async move { AuthServiceClient::new(channel).get_me(request).await.map(drop) }
        })
    }

    /// CreateItem: a small query item in the actor's folder.
    pub fn create_item(&self) -> Call {
        let crowd = self.clone();
        call(move |worker, seq| {
            let (channel, actor) = crowd.pick(worker);
            let request = actor.session.request(CreateItemRequest {
                folder_id: actor.folder_id.clone(),
                name: format!("Load {worker}-{seq}"),
                description: "made by ts-bench".into(),
                content: Some(query_content("{\"status\": \"open\"}")),
                ..Default::default()
            });
            async move { ItemServiceClient::new(channel).create_item(request).await.map(drop) }
        })
    }

    /// CreateInvitation: the actor invites a new address into their folder every time, so
    /// each call is a real send (charged to the inviter's and the license's limits in Redis,
    /// capped in a transaction, mailed).
    pub fn create_invitation(&self, tag: &str) -> Call {
        let (crowd, tag) = (self.clone(), tag.to_owned());
        let next = Arc::new(AtomicU64::new(0));
        call(move |worker, _| {
            let (channel, actor) = crowd.pick(worker);
            let n = next.fetch_add(1, Ordering::Relaxed);
            let request = actor.session.request(CreateInvitationRequest {
                folder_id: actor.folder_id.clone(),
                invitee_email: format!("invitee-{tag}-{n}@example.com"),
                access: AccessLevel::View as i32,
                ..Default::default()
            });
            async move { InvitationServiceClient::new(channel).create_invitation(request).await.map(drop) }
        })
    }

    /// ListMyInvitations: the first page (default size) of the actor's invitations.
    pub fn list_my_invitations(&self) -> Call {
        let crowd = self.clone();
        call(move |worker, _| {
            let (channel, actor) = crowd.pick(worker);
            let request = actor.session.request(ListMyInvitationsRequest { page: None });
            async move { InvitationServiceClient::new(channel).list_my_invitations(request).await.map(drop) }
        })
    }
}
