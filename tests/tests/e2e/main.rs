//! The end-to-end suite: the whole teamshare stack against real servers, one module per
//! area. One test binary, so that it is linked once and its tests share one set of servers
//! (a fresh database per test); `tracing.rs` and `secrets.rs` stay binaries of their own
//! because each installs a global log subscriber. Run one area with
//! `cargo test -p ts-e2e --test e2e invitations::`.

mod attacks_perf;
mod audit_failures;
mod authorization;
mod cache;
mod certificates;
mod cli;
mod client_address;
mod edge;
mod folders;
mod gateway;
mod invitations;
mod licenses;
mod managers;
mod master_key;
mod migrations;
mod mtls;
mod redis_cluster;
mod replay;
mod replicas;
mod revocation;
mod safe_retries;
mod scrubber;
mod sdk;
mod shape_attacks;
mod sso;
mod stale_cache;
mod support;
mod switches;
mod tokens;
mod verification;
