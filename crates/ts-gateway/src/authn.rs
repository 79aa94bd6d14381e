//! Authenticating public callers by their access token.

use tonic::{Request, Status};
use ts_common::user::UserContext;

/// Checks the `authorization: Bearer <token>` header of public calls.
///
/// Access tokens are minted by auth (the auth issue); until the gateway has auth's token
/// keys to verify them with, it refuses every token rather than trusting any.
#[derive(Debug, Clone, Default)]
pub struct Authenticator {}

impl Authenticator {
    /// For RPCs that need a signed-in user: the verified identity, or UNAUTHENTICATED.
    pub async fn required<T>(&self, request: &Request<T>) -> Result<Option<UserContext>, Status> {
        let _token = bearer_token(request)?;
        Err(Status::unauthenticated("access token could not be verified"))
    }

    /// For RPCs that anyone may call (sign-in, status): no identity is forwarded.
    pub async fn anonymous<T>(&self, _request: &Request<T>) -> Result<Option<UserContext>, Status> {
        Ok(None)
    }
}

/// The bearer token of a request, or UNAUTHENTICATED naming what is wrong. The token itself
/// never appears in the error.
pub fn bearer_token<T>(request: &Request<T>) -> Result<&str, Status> {
    let value = request
        .metadata()
        .get("authorization")
        .ok_or_else(|| Status::unauthenticated("missing access token: send `authorization: Bearer <token>`"))?;
    let value = value.to_str().map_err(|_| Status::unauthenticated("malformed authorization header"))?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or_else(|| Status::unauthenticated("authorization header must use the Bearer scheme"))?
        .trim();
    if token.is_empty() {
        return Err(Status::unauthenticated("empty access token"));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_auth(v: &str) -> Request<()> {
        let mut r = Request::new(());
        r.metadata_mut().insert("authorization", v.parse().unwrap());
        r
    }

    #[test]
    fn bearer_tokens_are_parsed_and_never_echoed() {
        assert_eq!(bearer_token(&with_auth("Bearer abc")).unwrap(), "abc");
        let e = bearer_token(&with_auth("Basic c2VjcmV0")).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        assert!(!e.message().contains("c2VjcmV0"));
        assert_eq!(bearer_token(&Request::new(())).unwrap_err().code(), tonic::Code::Unauthenticated);
        assert!(bearer_token(&with_auth("Bearer  ")).is_err());
    }
}
