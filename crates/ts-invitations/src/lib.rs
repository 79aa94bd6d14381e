//! The invitations service: invitations to folders, expiring, with caps on pending
//! invitations per invitee and per folder enforced without races (DESIGN.md §6). It owns the
//! `invitations` and `invitation_counters` collections, calls folders (membership, audit)
//! and auth (users, licenses), and mails invitees. It also does its part of exports,
//! erasures and retention (`privacy`) for auth.
//!
//! Callers (mTLS identity): the gateway (`InvitationService`) and auth
//! (`InvitationPrivacyService`).
#![forbid(unsafe_code)]

pub mod clients;
pub mod error;
mod grpc;
pub mod privacy;
pub mod service;
pub mod store;

use std::sync::Arc;

use tonic::server::NamedService;
use ts_config::{Config, require};
use ts_contract::clock::SharedClock;
use ts_contract::identity::{Allowlist, Peer};
use ts_proto::internal::invitation_privacy_service_server::InvitationPrivacyServiceServer;
use ts_proto::public::invitation_service_server::InvitationServiceServer;
use ts_runtime::RunError;
use ts_runtime::server::{Access, ServiceServer};
use ts_runtime::service_mtls;
use ts_runtime::upstream;
use ts_stores as stores;

pub use crate::error::InvitationsError;
pub use crate::grpc::InvitationsApi;
pub use crate::service::Invitations;

/// Who may call which invitations RPCs (DESIGN.md §1).
pub fn allowlist() -> Allowlist {
    Allowlist::new()
        .allow(<InvitationServiceServer<InvitationsApi> as NamedService>::NAME, &[Peer::Gateway])
        .allow(<InvitationPrivacyServiceServer<InvitationsApi> as NamedService>::NAME, &[Peer::Auth])
}

/// `teamshare migrate` for invitations: creates its indexes and records [`store::SCHEMA`] in
/// `schema_migrations`, once per version. Reads `[mongodb]` only.
pub async fn migrate(config: &Config) -> Result<stores::Migration, RunError> {
    let db = stores::mongo(require(&config.mongodb, "mongodb")?, config.production, "teamshare-migrate").await?;
    let store = store::Store::new(db.clone());
    store::SCHEMA.migrate(&db, store.ensure_indexes()).await.map_err(|e| RunError::Startup(e.to_string()))
}

/// Builds invitations, ready to serve; `clock` rules expiry. Reads `[invitations]`,
/// `[internal_tls]`, `[mongodb]`, `[mail]`, `[invitation_limits]` and `[upstreams]` folders
/// and auth.
pub async fn build(config: &Config, clock: SharedClock) -> Result<ServiceServer, RunError> {
    let section = require(&config.invitations, "invitations")?;
    let mtls = service_mtls(config, Peer::Invitations, section)?;
    let folders = upstream(config, Peer::Folders, &mtls)?;
    let identity = clients::Identity::new(upstream(config, Peer::Auth, &mtls)?);
    let mailer = ts_mail::from_config(require(&config.mail, "mail")?, config.production)?;
    let db = stores::mongo(require(&config.mongodb, "mongodb")?, config.production, "teamshare-invitations").await?;
    let store = store::Store::new(db.clone());
    store::SCHEMA
        .check_at_start(&db, config.production, store.ensure_indexes())
        .await
        .map_err(|e| RunError::Startup(e.to_string()))?;
    let invitations = Invitations {
        store,
        folders: clients::Folders::new(folders.clone()),
        identity,
        mailer,
        clock,
        limits: config.invitation_limits.clone(),
    };
    let api = InvitationsApi::new(invitations, ts_runtime::audit::Sink::new(folders).waiting());
    Ok(ServiceServer::new(Peer::Invitations, Access::Internal(mtls.clone(), Arc::new(allowlist())))
        .service(InvitationServiceServer::new(api.clone()))
        .service(InvitationPrivacyServiceServer::new(api))
        .health_listen(section.health_listen)
        .configured(config))
}
