//! Generated protobuf messages and tonic clients and servers for teamshare.
//!
//! `teamshare::v1` is the public API that the gateway serves to client SDKs;
//! `teamshare::internal::v1` is service-to-service only, always behind mTLS.
#![allow(clippy::all, missing_docs)]

pub mod codec;

/// Generated code, one module per protobuf package.
pub mod teamshare {
    /// The public API (`teamshare.v1`).
    pub mod v1 {
        tonic::include_proto!("teamshare.v1");
    }
    /// The internal, mTLS-only API (`teamshare.internal.v1`).
    pub mod internal {
        /// Version 1.
        pub mod v1 {
            tonic::include_proto!("teamshare.internal.v1");
        }
    }
}

pub use teamshare::internal::v1 as internal;
pub use teamshare::v1 as public;

/// Encoded `FileDescriptorSet` of every teamshare proto and its imports, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/teamshare_descriptor.bin"));

/// Encoded `FileDescriptorSet` of the public API only (`teamshare.v1` and its imports): the
/// gateway's reflection serves this one, so the internal API is never described to the
/// internet.
pub const PUBLIC_FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/teamshare_public_descriptor.bin"));

/// Fully-qualified names of the public gRPC services, as served by the gateway.
pub const PUBLIC_SERVICES: &[&str] = &[
    "teamshare.v1.AuthService",
    "teamshare.v1.AuditService",
    "teamshare.v1.FolderService",
    "teamshare.v1.InvitationService",
    "teamshare.v1.ItemService",
    "teamshare.v1.LicenseAdminService",
    "teamshare.v1.MemberService",
    "teamshare.v1.SystemService",
];

/// Writes `Debug` for a message that carries secrets, printing `<redacted>` for them.
macro_rules! redacted_debug {
    ($ty:path { $($plain:ident),* ; $($secret:ident),* }) => {
        impl std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($ty))
                    $(.field(stringify!($plain), &self.$plain))*
                    $(.field(stringify!($secret), &"<redacted>"))*
                    .finish()
            }
        }
    };
}

redacted_debug!(public::CompleteEmailVerificationRequest { email; code });
redacted_debug!(public::SessionTokens { access_token_expires_at; access_token, refresh_token });
redacted_debug!(public::SignInWithSsoRequest { ; id_token });
redacted_debug!(public::RefreshSessionRequest { ; refresh_token });
redacted_debug!(internal::GetDataKeyResponse { version; key });
