//! A second folders replica on the cluster's MongoDB and Redis, reached directly over mTLS
//! as the gateway reaches it: for tests of what holds across replicas.

use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use ts_contract::identity::Peer;
use ts_contract::user::UserContext;

use crate::{Session, TestCluster};

/// A running extra folders replica; dropping it stops the replica.
pub struct FoldersReplica {
    /// An mTLS channel to it, presenting the gateway's certificate.
    pub channel: Channel,
    /// Where it serves.
    pub addr: std::net::SocketAddr,
    stop: watch::Sender<bool>,
}

impl std::fmt::Debug for FoldersReplica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FoldersReplica").finish_non_exhaustive()
    }
}

impl Drop for FoldersReplica {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

impl TestCluster {
    /// Starts another folders replica on the same configuration.
    pub async fn folders_replica(&self) -> anyhow::Result<FoldersReplica> {
        self.folders_replica_on(TcpListener::bind("127.0.0.1:0").await?).await
    }

    /// Starts another folders replica on the same configuration, serving on `listener`.
    pub async fn folders_replica_on(&self, listener: TcpListener) -> anyhow::Result<FoldersReplica> {
        let addr = listener.local_addr()?;
        let config = self.config.clone();
        let clock: ts_contract::clock::SharedClock = std::sync::Arc::new(self.clock.clone());
        let (stop, mut rx) = watch::channel(false);
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            if let Err(e) = teamshare::Service::Folders.serve(&config, clock, listener, shutdown).await {
                tracing::error!(error = %e, "extra folders replica failed");
            }
        });
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(std::fs::read(self.certs.ca_cert())?))
            .identity(Identity::from_pem(
                std::fs::read(self.certs.cert(Peer::Gateway))?,
                std::fs::read(self.certs.key(Peer::Gateway))?,
            ))
            .domain_name("folders");
        let endpoint = Endpoint::from_shared(format!("https://{addr}"))?.tls_config(tls)?;
        // The replica binds before this returns, but may not serve yet: retry briefly.
        let mut tries = 0;
        let channel = loop {
            match endpoint.connect().await {
                Ok(c) => break c,
                Err(_) if tries < 50 => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                Err(e) => return Err(e.into()),
            }
        };
        Ok(FoldersReplica { channel, addr, stop })
    }
}

/// `message` as the gateway sends it to folders on behalf of `user`.
pub fn as_gateway<T>(user: &Session, message: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    UserContext {
        user_id: ts_contract::ids::UserId::parse("user_id", &user.user_id).expect("a signed-in user's id"),
        email: user.email.clone(),
        license_id: None,
        session_id: ts_contract::ids::SessionId::new(),
    }
    .attach(r.metadata_mut());
    r
}
