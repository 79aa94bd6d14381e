//! `LicenseOperatorService` (internal, operator only): licenses and the deployment-wide sharing switch.

use tonic::{Request, Response, Status};
use ts_proto::internal::license_operator_service_server::LicenseOperatorService;
use ts_proto::internal::*;

use super::*;

#[tonic::async_trait]
impl LicenseOperatorService for AuthApi {
    async fn upsert_license(
        &self,
        request: Request<UpsertLicenseRequest>,
    ) -> Result<Response<UpsertLicenseResponse>, Status> {
        let r = request.into_inner();
        let result = self.auth.upsert_license(&r.license_id, &r.admin_emails, &r.emails, &r.domains).await;
        self.operator_outcome(&r.license_id, "operator.upsert_license", true, result.map(|()| UpsertLicenseResponse {}))
            .await
    }

    async fn set_sharing_enabled(
        &self,
        request: Request<SetSharingEnabledRequest>,
    ) -> Result<Response<SetSharingEnabledResponse>, Status> {
        let r = request.into_inner();
        let result = self.auth.set_sharing_enabled(&r.license_id, r.enabled).await;
        let action = if r.enabled { "operator.enable_sharing" } else { "operator.disable_sharing" };
        self.operator_outcome(&r.license_id, action, true, result.map(|()| SetSharingEnabledResponse {})).await
    }

    async fn get_sharing_enabled(
        &self,
        request: Request<GetSharingEnabledRequest>,
    ) -> Result<Response<GetSharingEnabledResponse>, Status> {
        let id = &request.get_ref().license_id;
        let result = self.auth.sharing_enabled(id).await.map(|enabled| GetSharingEnabledResponse { enabled });
        self.operator_outcome(id, "operator.get_sharing_enabled", false, result).await
    }

    async fn list_licenses(
        &self,
        request: Request<ListLicensesRequest>,
    ) -> Result<Response<ListLicensesResponse>, Status> {
        let r = request.into_inner();
        let size = match r.page_size {
            0 => 100,
            n => n.min(500),
        };
        let result =
            self.auth.store.licenses_after(&r.page_token, i64::from(size)).await.map_err(AuthError::from).map(|page| {
                let next_page_token = if page.len() == size as usize {
                    page.last().map(|l| l.id.to_string()).unwrap_or_default()
                } else {
                    String::new()
                };
                let licenses = page
                    .into_iter()
                    .map(|l| License {
                        license_id: l.id.to_string(),
                        admin_emails: l.admin_emails,
                        emails: l.emails,
                        domains: l.domains,
                        sharing_enabled: l.sharing_enabled,
                        blocked: l.blocked,
                    })
                    .collect();
                ListLicensesResponse { licenses, next_page_token }
            });
        self.operator_outcome("", "operator.list_licenses", false, result).await
    }
}
