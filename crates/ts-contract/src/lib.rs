//! The contract between teamshare services, defined once: ids and their formats, the end
//! user's identity headers, service identities and allowlists, access-token claims, Redis
//! key formats shared across services (revocations), audit events, status spellings, page
//! tokens, email normalisation and the clock.
#![forbid(unsafe_code)]

pub mod audit;
pub mod clock;
pub mod email;
pub mod identity;
pub mod ids;
pub mod paging;
pub mod pseudonym;
pub mod revocation;
pub mod status;
pub mod tokens;
pub mod user;

pub use identity::Peer;
