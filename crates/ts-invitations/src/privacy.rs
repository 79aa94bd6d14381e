//! Invitations' part of a person's privacy rights (issue 14), asked for by auth only: the
//! invitations an export lists, the two halves of an erasure, and the retention purge of
//! closed invitations. Auth runs every erasure; it makes the pseudonym, invitations only
//! writes it.
//!
//! An erasure leaves no invitation to the erased email and none that holds the erased user
//! id: invitations to the address go (any state), pending ones by the account go, and the
//! rest by the account name the pseudonym as their inviter, without the user id or the
//! request keys derived from it. The counter documents keep invites out meanwhile
//! (`crate::store`): `invitee:<email>` until FinishErasure deletes it (its `_id` holds the
//! address), `inviter:<digest of the user id>` for good.

use std::time::SystemTime;

use futures::{Stream, TryStreamExt, stream};
use ts_contract::email::Email;
use ts_contract::ids::UserId;

use crate::error::InvitationsError;
use crate::service::{InvitationView, Invitations};
use crate::store::{InvitationState, Involving, PageCursor};

/// What replaces an erased person's email where it remains: `erased-` and 20 lowercase hex
/// digits, a keyed hash of the email that only auth can make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pseudonym(String);

impl Pseudonym {
    /// `raw` from the request field `field`: INVALID_ARGUMENT naming the field unless it has
    /// the exact form auth makes (so that nothing else is ever written where an email was).
    pub fn parse(field: &str, raw: &str) -> Result<Self, InvitationsError> {
        ts_contract::pseudonym::check(raw).map_err(|why| InvitationsError::field(field, why))?;
        Ok(Pseudonym(raw.to_owned()))
    }

    /// The pseudonym as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whose invitations an export or an erasure is about.
#[derive(Debug, Clone)]
pub struct Subject {
    /// Their account, when the email has one.
    pub user_id: Option<UserId>,
    /// Their email, normalised.
    pub email: Email,
}

/// Which way an exported invitation went, seen from the person whose export it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Sent to their email.
    Received,
    /// Sent by their account.
    Sent,
}

impl Direction {
    /// The direction exported after this one, if any.
    fn next(self) -> Option<Direction> {
        match self {
            Direction::Received => Some(Direction::Sent),
            Direction::Sent => None,
        }
    }
}

/// One invitation of an export.
#[derive(Debug, Clone)]
pub struct Exported {
    /// The invitation as the invitation RPCs show it.
    pub view: InvitationView,
    /// Received or sent.
    pub direction: Direction,
}

/// Where an export has got to: the direction being read (none when done) and the page after
/// which it goes on.
struct ExportAt {
    invitations: Invitations,
    subject: Subject,
    direction: Option<Direction>,
    after: Option<PageCursor>,
}

/// One page of an export's invitations.
type ExportPage = stream::Iter<std::vec::IntoIter<Result<Exported, InvitationsError>>>;

/// The next page of an export (possibly empty, when a direction had nothing), and where the
/// export goes on after it; `None` when it is done.
async fn next_page(mut at: ExportAt, size: usize) -> Result<Option<(ExportPage, ExportAt)>, InvitationsError> {
    let Some(direction) = at.direction else { return Ok(None) };
    let who = match (direction, &at.subject.user_id) {
        (Direction::Received, _) => Involving::Invitee(at.subject.email.as_str()),
        (Direction::Sent, Some(user_id)) => Involving::Inviter(user_id),
        // An email without an account sent nothing.
        (Direction::Sent, None) => return Ok(None),
    };
    let (docs, more) = at.invitations.store.involving_page(who, at.after.as_ref(), size).await?;
    if more {
        at.after = docs.last().map(PageCursor::after);
    } else {
        at.after = None;
        at.direction = direction.next();
    }
    // Shown exactly as ListMyInvitations and ListFolderInvitations show them (one folders
    // call per page for the inviters' standing and the folder names).
    let views = at.invitations.views(docs).await;
    let page: Vec<Result<Exported, InvitationsError>> = views
        .into_iter()
        .map(|mut view| {
            // A folder's current name only while the invitation is open: a closed one's
            // folder may be one the person can no longer see (revoked, declined, removed).
            if view.expired || view.invitation.state != InvitationState::Pending {
                view.folder_name.clear();
            }
            Ok(Exported { view, direction })
        })
        .collect();
    Ok(Some((stream::iter(page), at)))
}

impl Invitations {
    /// Every invitation sent to the subject's email, then every one sent by their account, in
    /// any state, as their readers see them; each direction in creation order, read from the
    /// store a page at a time as the stream is consumed.
    pub fn export(self, subject: Subject) -> impl Stream<Item = Result<Exported, InvitationsError>> + Send + 'static {
        let size = usize::try_from(self.max_per_fetch()).unwrap_or(usize::MAX).max(1);
        let start = ExportAt { invitations: self, subject, direction: Some(Direction::Received), after: None };
        stream::try_unfold(start, move |at| next_page(at, size)).try_flatten()
    }

    /// Starts the erasure of the subject (idempotent): from now on no invitation can be made
    /// to their email until [`Invitations::finish_erasure`], nor ever by their account; every
    /// invitation to the email and every pending one by the account is deleted, and the rest
    /// by the account name `pseudonym` as their inviter. Returns how many were deleted.
    pub async fn begin_erasure(&self, subject: &Subject, pseudonym: &Pseudonym) -> Result<u64, InvitationsError> {
        let removed =
            self.store.begin_erasure(subject.email.as_str(), subject.user_id.as_ref(), pseudonym.as_str()).await?;
        tracing::info!(pseudonym = pseudonym.as_str(), removed, "invitations of an erased person removed");
        Ok(removed)
    }

    /// Ends the erasure of the subject's email (idempotent): anything addressed to it that is
    /// still there goes, then the address may be invited again. Returns how many invitations
    /// this removal found.
    pub async fn finish_erasure(&self, subject: &Subject) -> Result<u64, InvitationsError> {
        Ok(self.store.finish_erasure(subject.email.as_str(), subject.user_id.as_ref()).await?)
    }

    /// Deletes the invitations that closed (accepted, declined, revoked, or expired while
    /// pending) before `before`; how many.
    pub async fn purge_closed(&self, before: SystemTime) -> Result<u64, InvitationsError> {
        Ok(self.store.purge_closed(before).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(raw: &str) -> String {
        match Pseudonym::parse("pseudonym", raw) {
            Err(InvitationsError::InvalidArgument(m)) => m,
            other => panic!("{raw:?} gave {other:?}"),
        }
    }

    #[test]
    fn pseudonyms_have_the_form_auth_makes() {
        let good = "erased-0123456789abcdef0123";
        assert_eq!(Pseudonym::parse("pseudonym", good).unwrap().as_str(), good);
        assert_eq!(refused(""), "pseudonym is required");
        for bad in [
            "erased-",
            "erased-0123456789abcdef012",
            "erased-0123456789abcdef01234",
            "erased-0123456789ABCDEF0123",
            "erased-0123456789abcdeg0123",
            "Erased-0123456789abcdef0123",
            "bob@example.com",
            "erased-0123456789abcdef012\u{e9}",
        ] {
            assert!(refused(bad).starts_with("pseudonym must be"), "{bad:?}");
        }
    }

    #[test]
    fn exports_read_received_then_sent() {
        assert_eq!(Direction::Received.next(), Some(Direction::Sent));
        assert_eq!(Direction::Sent.next(), None);
    }

    #[test]
    fn erasure_refusals_are_the_ones_clients_know() {
        use ts_contract::status::reason_of;
        let invitee = tonic::Status::from(InvitationsError::InviteeErasing);
        assert_eq!(invitee.code(), tonic::Code::FailedPrecondition);
        assert_eq!(invitee.message(), "this address cannot be invited right now");
        assert_eq!(reason_of(&invitee).as_deref(), Some("INVITEE_CANNOT_SHARE"));
        let inviter = tonic::Status::from(InvitationsError::InviterErased);
        assert_eq!(inviter.code(), tonic::Code::Unauthenticated);
        assert_eq!(inviter.message(), "the account was erased");
        assert_eq!(reason_of(&inviter).as_deref(), Some("UNKNOWN_USER"));
    }
}
