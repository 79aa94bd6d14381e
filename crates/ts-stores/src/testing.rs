//! Helpers for tests of this workspace's crates: a throwaway `redis-server` on a free
//! loopback port (deploy/install-prereqs.sh installs it). Not used by the services.

use std::time::{Duration, Instant};

use ts_config::RedisConfig;

/// A `redis-server` that keeps nothing on disk, stopped when dropped.
#[derive(Debug)]
pub struct LocalRedis {
    child: Option<std::process::Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl LocalRedis {
    /// A port nothing listens on right now.
    pub fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0)
    }

    /// Starts one on a free port.
    pub fn start() -> std::io::Result<LocalRedis> {
        Self::start_on(Self::free_port())
    }

    /// Starts one on `port` and waits (up to 10 s) until it accepts connections.
    pub fn start_on(port: u16) -> std::io::Result<LocalRedis> {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()?;
        let redis = LocalRedis { child: Some(child), port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err(std::io::Error::other("redis-server did not start within 10 s"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(redis)
    }

    /// Its URL as configuration.
    pub fn config(&self) -> RedisConfig {
        RedisConfig { url: format!("redis://127.0.0.1:{}", self.port).into() }
    }

    /// A connected client, as the services build theirs.
    pub async fn client(&self) -> fred::clients::Client {
        use fred::prelude::*;
        let client = crate::redis(&self.config(), false).expect("a valid redis URL");
        client.wait_for_connect().await.expect("connected to the local redis");
        client
    }
}

impl Drop for LocalRedis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            drop(child.kill());
            drop(child.wait());
        }
    }
}

/// Two store failures for tests of a service's error mapping: a stored document that does
/// not fit its type, and an outage whose cause must stay in the logs.
#[cfg(feature = "mongo")]
pub fn store_failures() -> (mongodb::error::Error, mongodb::error::Error) {
    let unreadable = mongodb::bson::from_document::<mongodb::bson::DateTime>(mongodb::bson::Document::new());
    let unreadable = unreadable.map(drop).map_err(mongodb::error::Error::from);
    (unreadable.expect_err("an empty document is no date"), mongodb::error::Error::custom("connection refused"))
}
