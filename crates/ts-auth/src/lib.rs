//! The auth service: users and email verification, sessions and access tokens, licenses and
//! the Team Sharing switch. It owns the `users`, `verification_codes`, `sessions`,
//! `licenses` and `settings` collections.
//!
//! Callers (mTLS identity): the gateway for user-facing RPCs; folders and invitations (and
//! the gateway) for identity look-ups; the operator for licenses and the switch.
#![forbid(unsafe_code)]

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tonic::server::NamedService;
use ts_common::config::{Config, require};
use ts_common::identity::{Allowlist, Peer};
use ts_common::server::{Access, ServiceServer};
use ts_common::{RunError, drain_delay, service_mtls, stores};
use ts_proto::internal::identity_service_server::{IdentityService, IdentityServiceServer};
use ts_proto::internal::license_operator_service_server::{LicenseOperatorService, LicenseOperatorServiceServer};
use ts_proto::public::auth_service_server::{AuthService, AuthServiceServer};
use ts_proto::public::license_admin_service_server::{LicenseAdminService, LicenseAdminServiceServer};

/// Shared state of the auth handlers.
#[derive(Clone)]
pub struct AuthApi {
    db: mongodb::Database,
}

impl std::fmt::Debug for AuthApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthApi").field("db", &self.db.name()).finish()
    }
}

/// Who may call which auth RPCs (DESIGN.md §1).
pub fn allowlist() -> Allowlist {
    Allowlist::new()
        .allow(<AuthServiceServer<AuthApi> as NamedService>::NAME, &[Peer::Gateway])
        .allow(<LicenseAdminServiceServer<AuthApi> as NamedService>::NAME, &[Peer::Gateway])
        .allow(
            <IdentityServiceServer<AuthApi> as NamedService>::NAME,
            &[Peer::Gateway, Peer::Folders, Peer::Invitations],
        )
        .allow(<LicenseOperatorServiceServer<AuthApi> as NamedService>::NAME, &[Peer::Operator])
}

/// Serves auth on `listener` until `shutdown` completes. Reads `[auth]`, `[internal_tls]`
/// and `[mongodb]`.
pub async fn serve(
    config: &Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RunError> {
    let section = require(&config.auth, "auth")?;
    let mtls = service_mtls(config, "auth", section)?;
    let db = stores::mongo(require(&config.mongodb, "mongodb")?, "teamshare-auth").await?;
    let api = AuthApi { db };
    ServiceServer::new("auth", Access::Internal(mtls.server_config(), Arc::new(allowlist())))
        .service(AuthServiceServer::new(api.clone()))
        .service(LicenseAdminServiceServer::new(api.clone()))
        .service(IdentityServiceServer::new(api.clone()))
        .service(LicenseOperatorServiceServer::new(api))
        .health_listen(section.health_listen)
        .drain_delay(drain_delay(config))
        .serve(listener, shutdown)
        .await?;
    Ok(())
}

// The RPC bodies arrive with the auth issue; until then each answers UNIMPLEMENTED.
#[tonic::async_trait]
impl AuthService for AuthApi {}
#[tonic::async_trait]
impl LicenseAdminService for AuthApi {}
#[tonic::async_trait]
impl IdentityService for AuthApi {}
#[tonic::async_trait]
impl LicenseOperatorService for AuthApi {}
