//! The public calls tests make again and again, written once: a signed-in user's folders,
//! items and invitations through a gateway, and `assert_code!` for refusals.
//!
//! ```ignore
//! let folder_id = cluster.folders(&alice).await?.create("Reporting").await?;
//! let item = cluster.items(&alice).await?.create(&folder_id, "Orders", query_content("{}")).await?;
//! let invitation = cluster.invitations(&alice).await?.send(&folder_id, "bob@example.com", AccessLevel::Edit).await?;
//! assert_code!(cluster.invitations(&bob).await?.accept(&invitation.id).await, Code::NotFound);
//! ```

use tonic::Status;
use tonic::transport::Channel;
use ts_proto::public::folder_service_client::FolderServiceClient;
use ts_proto::public::invitation_service_client::InvitationServiceClient;
use ts_proto::public::item_service_client::ItemServiceClient;
use ts_proto::public::*;

use crate::{Session, TestCluster};

/// Asserts that `result` is an error with gRPC `code`, and optionally that its message starts
/// with `prefix` (the field it names); evaluates to the status.
#[macro_export]
macro_rules! assert_code {
    ($result:expr, $code:expr $(,)?) => {{
        match $result {
            Ok(v) => panic!("expected {:?}, got Ok({:?})", $code, v),
            Err(status) => {
                let status: tonic::Status = status;
                assert_eq!(status.code(), $code, "{status:?}");
                status
            }
        }
    }};
    ($result:expr, $code:expr, $prefix:expr $(,)?) => {{
        let status = $crate::assert_code!($result, $code);
        assert!(status.message().starts_with($prefix), "{:?} does not start with {:?}", status.message(), $prefix);
        status
    }};
}

/// `FolderService` as one signed-in user.
#[derive(Debug, Clone)]
pub struct Folders {
    client: FolderServiceClient<Channel>,
    session: Session,
}

impl Folders {
    /// As `session` over `channel` (a gateway).
    pub fn new(channel: &Channel, session: &Session) -> Self {
        Folders { client: FolderServiceClient::new(channel.clone()), session: session.clone() }
    }

    /// Creates a folder named `name`; its id.
    pub async fn create(&mut self, name: &str) -> Result<String, Status> {
        let reply = self
            .client
            .create_folder(self.session.request(CreateFolderRequest { name: name.into(), ..Default::default() }))
            .await?;
        Ok(reply.into_inner().folder.map(|f| f.id).unwrap_or_default())
    }
}

/// `ItemService` as one signed-in user.
#[derive(Debug, Clone)]
pub struct Items {
    client: ItemServiceClient<Channel>,
    session: Session,
}

impl Items {
    /// As `session` over `channel` (a gateway).
    pub fn new(channel: &Channel, session: &Session) -> Self {
        Items { client: ItemServiceClient::new(channel.clone()), session: session.clone() }
    }

    /// Creates an item in `folder_id` with a fixed description.
    pub async fn create(
        &mut self,
        folder_id: &str,
        name: &str,
        content: ItemContent,
    ) -> Result<CreateItemResponse, Status> {
        let request = CreateItemRequest {
            folder_id: folder_id.into(),
            name: name.into(),
            description: "for the Q3 review".into(),
            content: Some(content),
            ..Default::default()
        };
        Ok(self.client.create_item(self.session.request(request)).await?.into_inner())
    }
}

/// `InvitationService` as one signed-in user.
#[derive(Debug, Clone)]
pub struct Invitations {
    client: InvitationServiceClient<Channel>,
    session: Session,
}

impl Invitations {
    /// As `session` over `channel` (a gateway).
    pub fn new(channel: &Channel, session: &Session) -> Self {
        Invitations { client: InvitationServiceClient::new(channel.clone()), session: session.clone() }
    }

    /// Invites `email` to `folder_id` at `access` (a raw value, so that tests can send bad ones).
    pub async fn send_raw(&mut self, folder_id: &str, email: &str, access: i32) -> Result<Invitation, Status> {
        let request = CreateInvitationRequest {
            folder_id: folder_id.into(),
            invitee_email: email.into(),
            access,
            ..Default::default()
        };
        let reply = self.client.create_invitation(self.session.request(request)).await?;
        Ok(reply.into_inner().invitation.unwrap_or_default())
    }

    /// Invites `email` to `folder_id` at `access`.
    pub async fn send(&mut self, folder_id: &str, email: &str, access: AccessLevel) -> Result<Invitation, Status> {
        self.send_raw(folder_id, email, access as i32).await
    }

    /// Accepts invitation `id`.
    pub async fn accept(&mut self, id: &str) -> Result<AcceptInvitationResponse, Status> {
        let request = AcceptInvitationRequest { invitation_id: id.into() };
        Ok(self.client.accept_invitation(self.session.request(request)).await?.into_inner())
    }
}

impl TestCluster {
    /// `FolderService` through the gateway, as `session`.
    pub async fn folders(&self, session: &Session) -> anyhow::Result<Folders> {
        Ok(Folders::new(&self.gateway().await?, session))
    }

    /// `ItemService` through the gateway, as `session`.
    pub async fn items(&self, session: &Session) -> anyhow::Result<Items> {
        Ok(Items::new(&self.gateway().await?, session))
    }

    /// `InvitationService` through the gateway, as `session`.
    pub async fn invitations(&self, session: &Session) -> anyhow::Result<Invitations> {
        Ok(Invitations::new(&self.gateway().await?, session))
    }
}
