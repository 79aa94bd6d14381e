//! Test kit: real servers on free ports and a `TestCluster` of all five teamshare services
//! with real mTLS, so that tests exercise exactly what production runs.
//!
//! The MongoDB-compatible server, Redis and the KMS API are started once per test binary
//! (and stopped when it exits); each cluster gets its own database and KMS key, so tests
//! run in parallel.
//!
//! `ProcessStack` runs each service as a process of its own instead (the bench and the fault
//! tests), with its own stores, optionally behind `FaultProxy`s, and an OTLP receiver
//! (`otlp`) to read the services' metrics.
#![forbid(unsafe_code)]

pub mod calls;
pub mod cluster;
pub mod faults;
pub mod fixtures;
pub mod hygiene;
pub mod logs;
pub mod otlp;
pub mod planted;
pub mod procs;
pub mod proxy;
pub mod redis_cluster;
pub mod replica;
pub mod stack;
pub mod users;
pub mod workload;

pub use calls::{Folders, Invitations, Items};
pub use cluster::{TestCluster, create_kms_key, foreign_identity, fresh_database, kms_client};
pub use faults::FaultProxy;
pub use fixtures::{
    RawDocument, collections_containing, contains_bytes, dump_database, eventually, query_content, raw_documents,
};
pub use logs::{CapturedLogs, capture_logs};
pub use procs::{ServerProcess, SharedServers, redis_bytes, redis_dump, shared};
pub use proxy::CountingProxy;
pub use redis_cluster::{RedisCluster, redis_cluster};
pub use replica::{FoldersReplica, as_gateway};
pub use stack::{ProcessStack, StackOptions};
pub use users::{Session, bearer};
