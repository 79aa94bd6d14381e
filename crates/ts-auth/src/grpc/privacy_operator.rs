//! `PrivacyOperatorService` (internal, operator only): data-subject erasure by email and the
//! retention job on demand.

use tonic::{Request, Response, Status};
use ts_proto::internal::privacy_operator_service_server::PrivacyOperatorService;
use ts_proto::internal::*;

use super::*;

#[tonic::async_trait]
impl PrivacyOperatorService for AuthApi {
    async fn erase_subject(
        &self,
        request: Request<EraseSubjectRequest>,
    ) -> Result<Response<EraseSubjectResponse>, Status> {
        let r = request.into_inner();
        let result = self.erase_subject(&r.email, r.hand_over_management).await.map(|e| EraseSubjectResponse {
            pseudonym: e.pseudonym,
            had_account: e.had_account,
            deleted_folder_ids: e.deleted_folder_ids,
            handed_over_folder_ids: e.handed_over_folder_ids,
            memberships_removed: e.memberships_removed,
            invitations_removed: e.invitations_removed,
            license_lists: e.license_lists,
        });
        self.operator_outcome("", "operator.erase_subject", true, result).await
    }

    async fn run_retention(
        &self,
        _request: Request<RunRetentionRequest>,
    ) -> Result<Response<RunRetentionResponse>, Status> {
        let result = self.auth.run_retention().await;
        self.operator_outcome("", "operator.run_retention", true, result).await
    }
}
