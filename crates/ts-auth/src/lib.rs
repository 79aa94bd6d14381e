//! The auth service: users and passwordless email verification, single sign-on, sessions and
//! access tokens, licenses and the Team Sharing switch (DESIGN.md §4). It owns the `users`,
//! `verification_codes`, `sessions`, `licenses`, `settings` and `rate_counters` collections.
//!
//! Callers (mTLS identity): the gateway for user-facing RPCs; folders and invitations (and
//! the gateway) for identity look-ups; the operator for licenses and the switch.
#![forbid(unsafe_code)]

pub use ts_contract::email;
pub mod grpc;
pub mod licenses;
pub mod privacy;
pub mod sessions;
pub mod signing;
pub mod sso;
pub mod state;
pub mod store;
pub mod verification;

use std::sync::Arc;

use tonic::server::NamedService;
use ts_config::{Config, ConfigError, require};
use ts_contract::clock::SharedClock;
use ts_contract::identity::{Allowlist, Peer};
use ts_proto::internal::identity_service_server::IdentityServiceServer;
use ts_proto::internal::license_audit_service_client::LicenseAuditServiceClient;
use ts_proto::internal::license_operator_service_server::LicenseOperatorServiceServer;
use ts_proto::internal::privacy_operator_service_server::PrivacyOperatorServiceServer;
use ts_proto::public::auth_service_server::AuthServiceServer;
use ts_proto::public::license_admin_service_server::LicenseAdminServiceServer;
use ts_proto::public::privacy_service_server::PrivacyServiceServer;
use ts_runtime::RunError;
use ts_runtime::server::{Access, ServiceServer};
use ts_runtime::service_mtls;
use ts_runtime::tls::MtlsMaterial;
use ts_stores as stores;

pub use crate::grpc::AuthApi;
pub use crate::state::Auth;

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
        .allow(<PrivacyServiceServer<AuthApi> as NamedService>::NAME, &[Peer::Gateway])
        .allow(<PrivacyOperatorServiceServer<AuthApi> as NamedService>::NAME, &[Peer::Operator])
}

/// Builds the auth state from `[accounts]`, `[mail]`, `[mongodb]`, `[redis]` and `[upstreams]`
/// folders (the audit trail, reached with auth's own mTLS identity `mtls`).
async fn state(config: &Config, mtls: &MtlsMaterial, clock: SharedClock) -> Result<Auth, RunError> {
    let policy = config.accounts.clone();
    let signer = signing::Signer::load(&policy.token_signing_keys)?;
    let secret_path = policy
        .secret_key_file
        .as_ref()
        .ok_or_else(|| ConfigError::key("accounts.secret_key_file", "required by auth"))?;
    ts_config::check_file("accounts.secret_key_file", secret_path)?;
    let bytes = zeroize::Zeroizing::new(
        std::fs::read(secret_path).map_err(|e| ConfigError::key("accounts.secret_key_file", e.to_string()))?,
    );
    let secret: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| ConfigError::key("accounts.secret_key_file", "must hold exactly 32 bytes"))?;
    let mailer = ts_mail::from_config(require(&config.mail, "mail")?, config.production)?;
    let sso = sso::SsoIssuer::load(&policy.sso).await?;
    let redis = match &config.redis {
        Some(r) => Some(stores::redis(r, config.production)?),
        None => None,
    };
    let db = stores::mongo(require(&config.mongodb, "mongodb")?, config.production, "teamshare-auth").await?;
    store::SCHEMA
        .check_at_start(&db, config.production, store::Store::new(db.clone()).ensure_indexes())
        .await
        .map_err(|e| RunError::Startup(e.to_string()))?;
    // Folders owns the audit trail: failed sign-ins and license actions are recorded there.
    let folders = ts_runtime::upstream(config, Peer::Folders, mtls)?;
    let audit = ts_runtime::audit::Sink::new(folders.clone());
    let license_audit = Some(LicenseAuditServiceClient::new(folders));
    // Exports and erasures: folders and invitations, with a deadline fit for a large account.
    let privacy_channel =
        |callee: Peer| ts_runtime::upstream_with_deadline(config, callee, mtls, privacy::PRIVACY_CALL_TIMEOUT);
    let privacy = state::PrivacyClients {
        folders: privacy_channel(Peer::Folders)?,
        invitations: privacy_channel(Peer::Invitations)?,
    };
    let auth = Auth {
        store: store::Store::new(db),
        clock,
        mailer,
        signer,
        secret: zeroize::Zeroizing::new(secret),
        policy,
        sso,
        generations: ts_stores::cache::Cache::new(redis.clone()),
        views: ts_stores::cache::Tagged::new(100_000, std::time::Duration::from_secs(60)),
        redis,
        audit,
        privacy,
        retention: config.retention.clone(),
        license_audit,
    };
    // The configured default for the deployment may have changed since the last start.
    // (When Redis is away it is retried in the background.)
    let _visible_later = auth.sharing_changed().await;
    Ok(auth)
}

/// `teamshare migrate` for auth: creates its indexes and records [`store::SCHEMA`] in
/// `schema_migrations`, once per version. Reads `[mongodb]` only.
pub async fn migrate(config: &Config) -> Result<stores::Migration, RunError> {
    let db = stores::mongo(require(&config.mongodb, "mongodb")?, config.production, "teamshare-migrate").await?;
    let store = store::Store::new(db.clone());
    store::SCHEMA.migrate(&db, store.ensure_indexes()).await.map_err(|e| RunError::Startup(e.to_string()))
}

/// Builds auth, ready to serve: reads `[auth]`, `[internal_tls]`, `[accounts]`, `[mail]`,
/// `[mongodb]`, `[redis]` and `[upstreams]` folders (the audit trail). The revocation
/// outbox runs while it serves.
pub async fn build(config: &Config, clock: SharedClock) -> Result<ServiceServer, RunError> {
    let section = require(&config.auth, "auth")?;
    let mtls = service_mtls(config, Peer::Auth, section)?;
    let auth = Arc::new(state(config, &mtls, clock).await?);
    let api = AuthApi::new(auth.clone());
    Ok(ServiceServer::new(Peer::Auth, Access::Internal(mtls.clone(), Arc::new(allowlist())))
        .service(AuthServiceServer::new(api.clone()))
        .service(LicenseAdminServiceServer::new(api.clone()))
        .service(IdentityServiceServer::new(api.clone()))
        .service(LicenseOperatorServiceServer::new(api.clone()))
        .service(PrivacyServiceServer::new(api.clone()))
        .service(PrivacyOperatorServiceServer::new(api))
        .health_listen(section.health_listen)
        .configured(config)
        .background({
            let auth = auth.clone();
            move |ended| auth.run_privacy_jobs(ended)
        })
        .background(move |ended| auth.run_revocation_outbox(ended)))
}
