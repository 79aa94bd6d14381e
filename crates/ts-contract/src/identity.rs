//! Service identities carried in mTLS certificates, and the per-service caller allowlists.

use std::fmt;

/// The SPIFFE trust domain that every internal certificate names.
pub const TRUST_DOMAIN: &str = "teamshare";

/// Who is on the other end of an mTLS connection, read from the certificate's URI SAN
/// `spiffe://teamshare/<name>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Peer {
    /// The auth service.
    Auth,
    /// The keyvault service.
    Keyvault,
    /// The folders service.
    Folders,
    /// The invitations service.
    Invitations,
    /// The gateway.
    Gateway,
    /// A human operator's tooling; only for operator RPCs.
    Operator,
}

impl Peer {
    /// Every identity, in a stable order.
    pub const ALL: [Peer; 6] =
        [Peer::Auth, Peer::Keyvault, Peer::Folders, Peer::Invitations, Peer::Gateway, Peer::Operator];

    /// The identity's short name, as in its SPIFFE id and DNS names.
    pub fn name(self) -> &'static str {
        match self {
            Peer::Auth => "auth",
            Peer::Keyvault => "keyvault",
            Peer::Folders => "folders",
            Peer::Invitations => "invitations",
            Peer::Gateway => "gateway",
            Peer::Operator => "operator",
        }
    }

    /// `spiffe://teamshare/<name>`.
    pub fn spiffe_id(self) -> String {
        format!("spiffe://{TRUST_DOMAIN}/{}", self.name())
    }

    /// Parses a SPIFFE id of this trust domain.
    pub fn from_spiffe_id(uri: &str) -> Option<Peer> {
        let name = uri.strip_prefix("spiffe://")?.strip_prefix(TRUST_DOMAIN)?.strip_prefix('/')?;
        Peer::ALL.into_iter().find(|p| p.name() == name)
    }

    /// Reads the identity from a DER certificate's URI SANs. A certificate naming no
    /// identity, or two different ones, names none.
    pub fn from_cert_der(der: &[u8]) -> Option<Peer> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let san = cert.subject_alternative_name().ok()??;
        let mut found = None;
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::URI(uri) = name {
                match (found, Peer::from_spiffe_id(uri)) {
                    (_, None) => {}
                    (None, Some(p)) => found = Some(p),
                    (Some(a), Some(b)) if a == b => {}
                    (Some(_), Some(_)) => return None,
                }
            }
        }
        found
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which peers may call which gRPC services on one server. Paths are matched by the
/// fully-qualified service name; a service not listed is refused to everyone.
#[derive(Debug, Clone, Default)]
pub struct Allowlist {
    rules: Vec<(String, Vec<Peer>)>,
}

/// Services that any internal-CA identity may call: they reveal no data.
const OPEN_TO_ANY_PEER: &[&str] =
    &["grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"];

impl Allowlist {
    /// An empty allowlist (only health and reflection).
    pub fn new() -> Self {
        Self::default()
    }

    /// Allows `peers` to call the gRPC service `service` (such as `teamshare.v1.FolderService`).
    pub fn allow(mut self, service: &str, peers: &[Peer]) -> Self {
        self.rules.push((service.to_owned(), peers.to_vec()));
        self
    }

    /// Decides whether `peer` may call the method at `path` (`/pkg.Service/Method`).
    pub fn check(&self, path: &str, peer: Peer) -> bool {
        let service = path.trim_start_matches('/').split('/').next().unwrap_or_default();
        if OPEN_TO_ANY_PEER.contains(&service) {
            return true;
        }
        self.rules.iter().any(|(s, peers)| s == service && peers.contains(&peer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spiffe_ids_round_trip_and_foreign_domains_are_refused() {
        for p in Peer::ALL {
            assert_eq!(Peer::from_spiffe_id(&p.spiffe_id()), Some(p));
        }
        assert_eq!(Peer::from_spiffe_id("spiffe://other/auth"), None);
        assert_eq!(Peer::from_spiffe_id("spiffe://teamshare/auth/x"), None);
        assert_eq!(Peer::from_spiffe_id("spiffe://teamshareauth"), None);
    }

    #[test]
    fn allowlist_matches_whole_service_names() {
        let a = Allowlist::new().allow("teamshare.internal.v1.KeyVaultService", &[Peer::Folders]);
        assert!(a.check("/teamshare.internal.v1.KeyVaultService/GetDataKey", Peer::Folders));
        assert!(!a.check("/teamshare.internal.v1.KeyVaultService/GetDataKey", Peer::Invitations));
        assert!(!a.check("/teamshare.internal.v1.KeyVaultServiceX/GetDataKey", Peer::Folders));
        assert!(a.check("/grpc.health.v1.Health/Check", Peer::Operator));
        assert!(!a.check("/unknown.Service/M", Peer::Folders));
    }
}
