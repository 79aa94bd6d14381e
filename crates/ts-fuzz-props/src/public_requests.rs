//! Every public request message (`ts_proto::public`), decoded from arbitrary bytes as the
//! gateway decodes it off the wire.

use prost::Message;
use ts_proto::public;

/// A decoded message re-encodes (to as many bytes as it says) into bytes that decode to an
/// equal message; not always to the same bytes, since maps encode in hash order. Returns
/// whether `bytes` decoded at all.
fn round_trip<M: Message + Default + PartialEq + std::fmt::Debug>(bytes: &[u8]) -> bool {
    let Ok(message) = M::decode(bytes) else { return false };
    let encoded = message.encode_to_vec();
    assert_eq!(encoded.len(), message.encoded_len(), "encoded_len is exact");
    let back = M::decode(encoded.as_slice()).expect("a re-encoded request decodes");
    assert_eq!(back, message, "a re-encoded request decodes to an equal one");
    true
}

macro_rules! requests {
    ($($ty:ident),* $(,)?) => {
        /// The name of every request message of the public API, as in the protos.
        pub const NAMES: &[&str] = &[$(stringify!($ty)),*];

        /// Runs the round trip on `bytes` as request number `which` of [`NAMES`]; returns
        /// whether it decoded.
        pub fn decode_as(which: usize, bytes: &[u8]) -> bool {
            let decoders: &[fn(&[u8]) -> bool] = &[$(round_trip::<public::$ty>),*];
            decoders[which % decoders.len()](bytes)
        }
    };
}

requests!(
    AcceptInvitationRequest,
    CompleteEmailVerificationRequest,
    CreateFolderRequest,
    CreateInvitationRequest,
    CreateItemRequest,
    DeclineInvitationRequest,
    DeleteFolderRequest,
    DeleteItemRequest,
    DeleteMyAccountRequest,
    ExportMyDataRequest,
    GetFolderRequest,
    GetItemRequest,
    GetLicenseSharingStateRequest,
    GetMeRequest,
    GetStatusRequest,
    LeaveFolderRequest,
    ListFolderAuditRequest,
    ListFolderInvitationsRequest,
    ListFoldersRequest,
    ListItemsRequest,
    ListLicenseAuditRequest,
    ListLicenseEmailsRequest,
    ListMembersRequest,
    ListMyErrorsRequest,
    ListMyInvitationsRequest,
    MoveItemRequest,
    RefreshSessionRequest,
    RemoveMemberRequest,
    RenameFolderRequest,
    ResendInvitationRequest,
    RevokeInvitationRequest,
    SetLicenseSharingBlockedRequest,
    SignInWithSsoRequest,
    SignOutRequest,
    StartEmailVerificationRequest,
    UpdateItemRequest,
    UpdateMemberAccessRequest,
);

/// The fuzz target: `data` as every public request in turn.
pub fn fuzz(data: &[u8]) {
    for which in 0..NAMES.len() {
        decode_as(which, data);
    }
}
