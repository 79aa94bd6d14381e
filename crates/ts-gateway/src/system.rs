//! `SystemService`: the gateway's view of its backends.

use std::time::Duration;

use tonic::{Request, Response, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use ts_proto::public::system_service_server::SystemService;
use ts_proto::public::{BackendStatus, GetStatusRequest, GetStatusResponse};

use crate::Gateway;

const HEALTH_DEADLINE: Duration = Duration::from_secs(2);

#[tonic::async_trait]
impl SystemService for Gateway {
    async fn get_status(&self, _request: Request<GetStatusRequest>) -> Result<Response<GetStatusResponse>, Status> {
        let checks = self.backends.iter().map(|(name, channel)| {
            let mut client = HealthClient::new(channel.clone());
            async move {
                let mut req = Request::new(HealthCheckRequest { service: String::new() });
                req.set_timeout(HEALTH_DEADLINE);
                let serving = match tokio::time::timeout(HEALTH_DEADLINE, client.check(req)).await {
                    Ok(Ok(r)) => r.into_inner().status == ServingStatus::Serving as i32,
                    Ok(Err(status)) => {
                        tracing::warn!(backend = name, code = ?status.code(), "backend health check failed");
                        false
                    }
                    Err(_) => {
                        tracing::warn!(backend = name, "backend health check timed out");
                        false
                    }
                };
                BackendStatus { name: (*name).to_owned(), serving }
            }
        });
        let backends = futures::future::join_all(checks).await;
        Ok(Response::new(GetStatusResponse { version: env!("CARGO_PKG_VERSION").to_owned(), backends }))
    }
}
