//! `LicenseAuditService`: auth's reader of a license's events, which it serves only to that
//! license's admins.

use tonic::{Request, Response, Status};
use ts_proto::internal::license_audit_service_server::LicenseAuditService;
use ts_proto::internal::{ListLicenseAuditEventsRequest, ListLicenseAuditEventsResponse};

use super::FoldersApi;
use super::audit::event_message;
use crate::paging::PageAsk;

#[tonic::async_trait]
impl LicenseAuditService for FoldersApi {
    async fn list_license_audit_events(
        &self,
        request: Request<ListLicenseAuditEventsRequest>,
    ) -> Result<Response<ListLicenseAuditEventsResponse>, Status> {
        // Only auth calls this, after checking that its caller is an admin of the license; the
        // id is auth's, matched as given.
        let req = request.into_inner();
        let listed = self.folders.license_events(&req.license_id, &PageAsk::from_request(&req.page)).await?;
        let events = listed.items.into_iter().map(event_message).collect();
        Ok(Response::new(ListLicenseAuditEventsResponse { events, page: super::page(listed.next_token) }))
    }
}
