//! The gateway: the only public endpoint. It terminates client TLS, authenticates access
//! tokens, and translates each public call into a call to the internal service that owns
//! it, over mTLS with the user's identity attached. It owns no data.
#![forbid(unsafe_code)]

pub mod authn;
pub mod downstream;
mod forward;
pub mod ratelimit;
mod system;
pub mod validate;

use std::sync::Arc;
use std::time::Duration;

use ts_config::{Config, require};
use ts_contract::Peer;
use ts_contract::clock::SharedClock;
use ts_proto::internal::identity_service_client::IdentityServiceClient;
use ts_proto::public::audit_service_client::AuditServiceClient;
use ts_proto::public::audit_service_server::AuditServiceServer;
use ts_proto::public::auth_service_client::AuthServiceClient;
use ts_proto::public::auth_service_server::AuthServiceServer;
use ts_proto::public::folder_service_client::FolderServiceClient;
use ts_proto::public::folder_service_server::FolderServiceServer;
use ts_proto::public::invitation_service_client::InvitationServiceClient;
use ts_proto::public::invitation_service_server::InvitationServiceServer;
use ts_proto::public::item_service_client::ItemServiceClient;
use ts_proto::public::item_service_server::ItemServiceServer;
use ts_proto::public::license_admin_service_client::LicenseAdminServiceClient;
use ts_proto::public::license_admin_service_server::LicenseAdminServiceServer;
use ts_proto::public::member_service_client::MemberServiceClient;
use ts_proto::public::member_service_server::MemberServiceServer;
use ts_proto::public::privacy_service_client::PrivacyServiceClient;
use ts_proto::public::privacy_service_server::PrivacyServiceServer;
use ts_proto::public::system_service_server::SystemServiceServer;
use ts_runtime::RunError;
use ts_runtime::client::InternalChannel;
use ts_runtime::material;
use ts_runtime::server::{Access, ServiceServer};
use ts_runtime::tls;
use ts_runtime::upstream;

use crate::authn::Authenticator;

/// The gateway's handlers: one client per internal service it translates to.
#[derive(Clone)]
pub struct Gateway {
    authn: Arc<Authenticator>,
    downstream_timeout: Duration,
    trusted_proxies: Arc<[ipnet::IpNet]>,
    auth: AuthServiceClient<InternalChannel>,
    license: LicenseAdminServiceClient<InternalChannel>,
    folders: FolderServiceClient<InternalChannel>,
    members: MemberServiceClient<InternalChannel>,
    items: ItemServiceClient<InternalChannel>,
    audit: AuditServiceClient<InternalChannel>,
    invitations: InvitationServiceClient<InternalChannel>,
    privacy: PrivacyServiceClient<InternalChannel>,
    backends: Vec<(&'static str, InternalChannel)>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").field("downstream_timeout", &self.downstream_timeout).finish_non_exhaustive()
    }
}

/// Builds the gateway, ready to serve the public API. Reads `[gateway]`, `[internal_tls]`,
/// `[redis]` (optional), `[invitation_limits]` and `[upstreams]` auth, folders and
/// invitations; `clock` rules token expiry and the send limits.
pub async fn build(config: &Config, clock: SharedClock) -> Result<ServiceServer, RunError> {
    if cfg!(feature = "insecure-bench") {
        ts_runtime::insecure_bench_consent("gateway", config)?;
    }
    let section = require(&config.gateway, "gateway")?;
    let ca = require(&config.internal_tls, "internal_tls")?;
    let mtls = material(config, &ca.ca_cert, Peer::Gateway.name(), &section.cert, &section.key)?;
    let public_tls = tls::PublicTls::reloading(
        ("gateway.public_cert", &section.public_cert),
        ("gateway.public_key", &section.public_key),
        config.cert_reload(),
    )?;
    let auth = upstream(config, Peer::Auth, &mtls)?;
    let folders = upstream(config, Peer::Folders, &mtls)?;
    let invitations = upstream(config, Peer::Invitations, &mtls)?;
    // Exports and erasures ask folders and invitations in turn: a longer deadline than the
    // other calls' (the same channel's would cut them at ten seconds).
    let privacy = ts_runtime::upstream_with_deadline(config, Peer::Auth, &mtls, forward::PRIVACY_TIMEOUT)?;
    let redis = config.redis.as_ref().map(|r| ts_stores::redis(r, config.production)).transpose()?;
    // One view of Redis's health for the revocation check and the send limits.
    let redis = ts_stores::cache::Cache::new(redis);
    let gw = Gateway {
        authn: Arc::new(
            Authenticator::new(IdentityServiceClient::new(auth.clone()), redis.clone(), clock.clone())
                .with_audit(ts_runtime::audit::Sink::new(folders.clone()))
                .with_limiter(ratelimit::InviteLimiter::new(&config.invitation_limits, redis, clock)),
        ),
        downstream_timeout: Duration::from_millis(section.downstream_timeout_ms),
        trusted_proxies: section.trusted_proxies.clone().into(),
        auth: AuthServiceClient::new(auth.clone()),
        license: LicenseAdminServiceClient::new(auth.clone()),
        folders: FolderServiceClient::new(folders.clone()),
        members: MemberServiceClient::new(folders.clone()),
        items: ItemServiceClient::new(folders.clone()),
        audit: AuditServiceClient::new(folders.clone()),
        invitations: InvitationServiceClient::new(invitations.clone()),
        privacy: PrivacyServiceClient::new(privacy),
        backends: vec![("auth", auth), ("folders", folders), ("invitations", invitations)],
    };
    let max = section.max_message_bytes;
    Ok(ServiceServer::new(Peer::Gateway, Access::Public(public_tls))
        .service(AuthServiceServer::new(gw.clone()).max_decoding_message_size(max))
        .service(LicenseAdminServiceServer::new(gw.clone()).max_decoding_message_size(max))
        .service(FolderServiceServer::new(gw.clone()).max_decoding_message_size(max))
        .service(MemberServiceServer::new(gw.clone()).max_decoding_message_size(max))
        .service(ItemServiceServer::new(gw.clone()).max_decoding_message_size(max))
        .service(AuditServiceServer::new(gw.clone()).max_decoding_message_size(max))
        .service(InvitationServiceServer::new(gw.clone()).max_decoding_message_size(max))
        .service(PrivacyServiceServer::new(gw.clone()).max_decoding_message_size(max))
        .service(SystemServiceServer::new(gw).max_decoding_message_size(max))
        .health_listen(section.health_listen)
        .configured(config)
        .proxy_protocol_from(section.proxy_protocol.then(|| section.trusted_proxies.clone().into())))
}
