//! The invitations service: invitations to folders, expiring, with caps on pending
//! invitations per invitee and per folder enforced without races (DESIGN.md §6). It owns the
//! `invitations` and `invitation_counters` collections, calls folders (membership, audit)
//! and auth (users, licenses), and mails invitees.
//!
//! Callers (mTLS identity): the gateway only.
#![forbid(unsafe_code)]

pub mod clients;
pub mod error;
mod grpc;
pub mod service;
pub mod store;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tonic::server::NamedService;
use ts_common::clock::{SharedClock, SystemClock};
use ts_common::config::{Config, require};
use ts_common::identity::{Allowlist, Peer};
use ts_common::server::{Access, ServiceServer};
use ts_common::{RunError, drain_delay, service_mtls, stores, upstream};
use ts_proto::public::invitation_service_server::InvitationServiceServer;

pub use crate::error::InvitationsError;
pub use crate::grpc::InvitationsApi;
pub use crate::service::Invitations;

/// Who may call which invitations RPCs (DESIGN.md §1).
pub fn allowlist() -> Allowlist {
    Allowlist::new().allow(<InvitationServiceServer<InvitationsApi> as NamedService>::NAME, &[Peer::Gateway])
}

/// Serves invitations on `listener` until `shutdown` completes, on the system clock.
pub async fn serve(
    config: &Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RunError> {
    serve_with_clock(config, Arc::new(SystemClock), listener, shutdown).await
}

/// Serves invitations with an injected clock (expiry). Reads `[invitations]`,
/// `[internal_tls]`, `[mongodb]`, `[mail]`, `[invitation_limits]` and `[upstreams]` folders
/// and auth.
pub async fn serve_with_clock(
    config: &Config,
    clock: SharedClock,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RunError> {
    let section = require(&config.invitations, "invitations")?;
    let mtls = service_mtls(config, "invitations", section)?;
    let folders = upstream(config, "folders", &mtls)?;
    let identity = clients::Identity::new(upstream(config, "auth", &mtls)?);
    let mailer = ts_common::mail::from_config(require(&config.mail, "mail")?, config.production)?;
    let db = stores::mongo(require(&config.mongodb, "mongodb")?, "teamshare-invitations").await?;
    let store = store::Store::new(db);
    store.ensure_indexes().await.map_err(|e| RunError::Startup(format!("cannot create invitations indexes: {e}")))?;
    let invitations = Invitations {
        store,
        folders: clients::Folders::new(folders.clone()),
        identity,
        mailer,
        clock,
        limits: config.invitation_limits.clone(),
    };
    let api = InvitationsApi::new(invitations, clients::AuditTrail::new(folders));
    ServiceServer::new("invitations", Access::Internal(mtls.server_config(), Arc::new(allowlist())))
        .service(InvitationServiceServer::new(api))
        .health_listen(section.health_listen)
        .drain_delay(drain_delay(config))
        .serve(listener, shutdown)
        .await?;
    Ok(())
}
