//! `LicenseAdminService` (public): a license's admins block sharing, list accounts and audit events.

use tonic::{Request, Response, Status};
use ts_proto::internal::*;
use ts_proto::public::license_admin_service_server::LicenseAdminService;
use ts_proto::public::*;

use super::*;

#[tonic::async_trait]
impl LicenseAdminService for AuthApi {
    async fn list_license_emails(
        &self,
        request: Request<ListLicenseEmailsRequest>,
    ) -> Result<Response<ListLicenseEmailsResponse>, Status> {
        let user = caller(&request)?;
        let req = request.get_ref();
        let result = async {
            let l = self.auth.license_as_admin(&user.user_id, &req.license_id).await?;
            let accounts = self.auth.license_accounts(&l, &req.page).await?;
            Ok::<_, AuthError>(ListLicenseEmailsResponse {
                emails: l.emails,
                domains: l.domains,
                admin_emails: l.admin_emails,
                accounts: accounts.emails,
                page: Some(PageResponse { next_page_token: accounts.next }),
            })
        }
        .await;
        self.license_outcome(&user, &req.license_id, "license.list_emails", false, result).await
    }

    async fn set_license_sharing_blocked(
        &self,
        request: Request<SetLicenseSharingBlockedRequest>,
    ) -> Result<Response<SetLicenseSharingBlockedResponse>, Status> {
        let user = caller(&request)?;
        let req = request.get_ref();
        let result = self
            .auth
            .set_license_blocked(&user.user_id, &req.license_id, req.blocked)
            .await
            .map(|blocked| SetLicenseSharingBlockedResponse { blocked });
        let action = if req.blocked { "license.block" } else { "license.unblock" };
        self.license_outcome(&user, &req.license_id, action, true, result).await
    }

    async fn get_license_sharing_state(
        &self,
        request: Request<GetLicenseSharingStateRequest>,
    ) -> Result<Response<GetLicenseSharingStateResponse>, Status> {
        let user = caller(&request)?;
        let req = request.get_ref();
        let result = async {
            let l = self.auth.license_as_admin(&user.user_id, &req.license_id).await?;
            let deployment = self.auth.sharing_enabled("").await?;
            Ok(GetLicenseSharingStateResponse {
                blocked: l.blocked,
                disabled_by_operator: !(deployment && l.sharing_enabled),
            })
        }
        .await;
        self.license_outcome(&user, &req.license_id, "license.get_sharing_state", false, result).await
    }

    async fn list_license_audit(
        &self,
        request: Request<ListLicenseAuditRequest>,
    ) -> Result<Response<ListLicenseAuditResponse>, Status> {
        let user = caller(&request)?;
        let req = request.get_ref();
        let action = "license.list_audit";
        if let Err(e) = self.auth.license_as_admin(&user.user_id, &req.license_id).await {
            return self.license_outcome(&user, &req.license_id, action, false, Err(e)).await;
        }
        let Some(client) = self.auth.license_audit.clone() else {
            return Err(Status::unavailable("the audit trail is not configured"));
        };
        let reply = client
            .clone()
            .list_license_audit_events(ListLicenseAuditEventsRequest {
                license_id: req.license_id.clone(),
                page: req.page.clone(),
            })
            .await;
        match reply {
            Ok(r) => {
                let r = r.into_inner();
                Ok(Response::new(ListLicenseAuditResponse { events: r.events, page: r.page }))
            }
            Err(status) => {
                self.audit_user(&user, &req.license_id, action, status.code());
                Err(status)
            }
        }
    }
}
