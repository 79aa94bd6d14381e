//! The Rust SDK for teamshare's public gRPC API.
//!
//! [`Client`] connects to the gateway over TLS, signs in by email code or SSO id token, and
//! keeps the session: every call carries the access token, which is refreshed before it
//! expires (one refresh at a time) with the rotated refresh token handed to a
//! [`SessionStore`]. Errors are [`Error`]s with the server's stable reason
//! ([`ErrorReason`]), field violations and retry hint. Reads and creates (which carry an
//! AIP-155 `request_id`) are retried on UNAVAILABLE with backoff and jitter; other writes are
//! not. Listings are async streams.
//!
//! A person's rights over their data (GDPR, UK GDPR): [`Client::export_my_data`] streams
//! everything held about them, [`Client::export_my_data_to`] writes it as one JSON document
//! ([`ExportDocument`], mode 0600), and [`Client::delete_my_account`] erases the account.
//!
//! Connection passwords are never shared: [`Client::share_connection`] strips every secret
//! from a connection before it leaves the machine and keeps it in a local
//! [`CredentialStore`] under the new item's id; [`Client::connection_uri`] merges a shared
//! connection with the user's own credentials into a MongoDB URI.
#![forbid(unsafe_code)]

mod client;
mod connection;
mod credentials;
mod error;
mod export;
mod retry;
mod session;

/// The generated public API (`teamshare.v1`): messages, enums and tonic clients.
pub mod proto {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("teamshare.v1");
}

pub use client::{Api, Client, ClientConfig, Transport, TransportError};
pub use connection::{ConnectionInput, SharedConnection, connection_uri, strip_secrets, target_fingerprint};
#[cfg(feature = "keyring")]
pub use credentials::KeyringStore;
pub use credentials::{CredentialStore, EncryptedFileStore, LocalCredentials, MemoryCredentialStore};
pub use error::{ApiError, Error, FieldViolation};
pub use export::{ExportDocument, ExportPart};
pub use proto::{AccessLevel, ErrorReason, ItemKind};
pub use retry::RetryPolicy;
pub use session::{FileSessionStore, MemorySessionStore, SessionStore, StoredSession};
