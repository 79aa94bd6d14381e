//! `InvitationPrivacyService` (auth only, `crate::allowlist`): reads the subject of an export
//! or erasure into typed values, calls the domain (`crate::privacy`) and builds the replies.
//! Not audited here: auth records the export and the erasure as a whole.

use std::time::SystemTime;

use futures::StreamExt;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};
use ts_contract::email::Email;
use ts_contract::ids::UserId;
use ts_proto::internal::invitation_privacy_service_server::InvitationPrivacyService;
use ts_proto::internal::{
    BeginErasureRequest, BeginErasureResponse, ExportUserInvitationsRequest, ExportUserInvitationsResponse,
    FinishErasureRequest, FinishErasureResponse, PurgeClosedRequest, PurgeClosedResponse,
};
use ts_proto::public::export_my_data_response::Part;
use ts_proto::public::{ExportMyDataResponse, ExportedInvitation, InvitationDirection};

use super::{InvitationsApi, message};
use crate::error::InvitationsError;
use crate::privacy::{Direction, Exported, Pseudonym, Subject};

/// Whose data a request is about: `user_id` may be empty (an email without an account),
/// `email` is required.
fn subject(user_id: &str, email: &str) -> Result<Subject, InvitationsError> {
    let user_id = match user_id {
        "" => None,
        raw => Some(UserId::parse("user_id", raw)?),
    };
    let email = Email::parse(email).map_err(|problem| InvitationsError::field("email", problem))?;
    Ok(Subject { user_id, email })
}

/// An exported invitation as one message of the export stream.
fn part(exported: Exported) -> ExportUserInvitationsResponse {
    let direction = match exported.direction {
        Direction::Received => InvitationDirection::Received,
        Direction::Sent => InvitationDirection::Sent,
    };
    let invitation = ExportedInvitation { invitation: Some(message(exported.view)), direction: direction as i32 };
    ExportUserInvitationsResponse { data: Some(ExportMyDataResponse { part: Some(Part::Invitation(invitation)) }) }
}

/// A count as the 32-bit reply field carries it.
fn count(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[tonic::async_trait]
impl InvitationPrivacyService for InvitationsApi {
    async fn export_user_invitations(
        &self,
        request: Request<ExportUserInvitationsRequest>,
    ) -> Result<Response<BoxStream<ExportUserInvitationsResponse>>, Status> {
        let req = request.into_inner();
        let subject = subject(&req.user_id, &req.email)?;
        let parts: BoxStream<ExportUserInvitationsResponse> =
            Box::pin(self.invitations.clone().export(subject).map(|r| r.map(part).map_err(Status::from)));
        Ok(Response::new(parts))
    }

    async fn begin_erasure(
        &self,
        request: Request<BeginErasureRequest>,
    ) -> Result<Response<BeginErasureResponse>, Status> {
        let req = request.into_inner();
        let subject = subject(&req.user_id, &req.email)?;
        let pseudonym = Pseudonym::parse("pseudonym", &req.pseudonym)?;
        let removed = self.invitations.begin_erasure(&subject, &pseudonym).await?;
        Ok(Response::new(BeginErasureResponse { removed: count(removed) }))
    }

    async fn finish_erasure(
        &self,
        request: Request<FinishErasureRequest>,
    ) -> Result<Response<FinishErasureResponse>, Status> {
        let req = request.into_inner();
        // The pseudonym is not needed to finish (nothing is renamed any more).
        let subject = subject(&req.user_id, &req.email)?;
        let removed = self.invitations.finish_erasure(&subject).await?;
        Ok(Response::new(FinishErasureResponse { removed: count(removed) }))
    }

    async fn purge_closed(
        &self,
        request: Request<PurgeClosedRequest>,
    ) -> Result<Response<PurgeClosedResponse>, Status> {
        let before = request.into_inner().before.ok_or_else(|| InvitationsError::field("before", "is required"))?;
        let before =
            SystemTime::try_from(before).map_err(|_| InvitationsError::field("before", "is not a valid time"))?;
        let removed = self.invitations.purge_closed(before).await?;
        Ok(Response::new(PurgeClosedResponse { removed }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid(result: Result<Subject, InvitationsError>) -> String {
        match result {
            Err(InvitationsError::InvalidArgument(m)) => m,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn subjects_are_parsed_once_naming_the_field() {
        let id = UserId::new();
        let s = subject(id.as_str(), " Bob@Example.com ").unwrap();
        assert_eq!((s.user_id, s.email.as_str()), (Some(id), "bob@example.com"));
        assert_eq!(subject("", "bob@example.com").unwrap().user_id, None, "an email without an account");
        assert!(invalid(subject("nope", "bob@example.com")).starts_with("user_id "));
        assert_eq!(invalid(subject("", "")), "email is required");
        assert!(invalid(subject("", "bob")).starts_with("email "));
        let status = Status::from(subject("", "bob").unwrap_err());
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn counts_saturate() {
        assert_eq!(count(3), 3);
        assert_eq!(count(u64::MAX), u32::MAX);
    }
}
