"""TeamshareClient: one TLS channel to the gateway, a signed-in session, typed stubs.

    client = TeamshareClient("teamshare.example.com:443")             # system roots
    client = TeamshareClient("localhost:8443", ca_file=".dev/certs/ca.pem")
    client.sign_in_with_email("me@example.com", lambda email: input("code: "))
    folder = client.folders.CreateFolder(folders_pb2.CreateFolderRequest(name="Team")).folder

Every call on the stubs goes through two client interceptors:

- authentication (all four call shapes): adds `authorization: Bearer <access token>` to every
  RPC except the sign-in ones and SystemService.GetStatus, refreshing the access token first
  when it expires within `refresh_margin` seconds. Refreshes are serialised: one thread
  refreshes, the others wait for it (or, while the old token is still valid, keep using it),
  so a refresh token is never presented twice (the server revokes a session whose refresh
  token is reused);
- retry (unary calls): an idempotent read (Get*/List*) that fails with UNAVAILABLE is tried
  again, up to `RetryPolicy.max_attempts` in all, after a jittered exponential backoff (or the
  server's RetryInfo delay, when longer) and within the call's deadline. Writes are never retried: a create that reached the server
  before the connection broke would otherwise be made twice.

Calls without an explicit `timeout=` get `default_timeout` seconds.
"""

from __future__ import annotations

import collections
import random
import threading
import time
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Tuple, Union

import grpc

from . import v1
from .errors import error_reason, retry_delay

_V1 = "/teamshare.v1."

#: RPCs that take no access token: signing in, refreshing, and the deployment status.
NO_TOKEN_METHODS = frozenset(
    _V1 + m
    for m in (
        "AuthService/StartEmailVerification",
        "AuthService/CompleteEmailVerification",
        "AuthService/SignInWithSso",
        "AuthService/RefreshSession",
        "SystemService/GetStatus",
    )
)

#: RPCs that only read, so that trying one again after UNAVAILABLE cannot change anything.
IDEMPOTENT_READS = frozenset(
    _V1 + m
    for m in (
        "AuthService/GetMe",
        "SystemService/GetStatus",
        "FolderService/ListFolders",
        "FolderService/GetFolder",
        "MemberService/ListMembers",
        "ItemService/GetItem",
        "ItemService/ListItems",
        "InvitationService/ListMyInvitations",
        "InvitationService/ListFolderInvitations",
        "AuditService/ListFolderAudit",
        "AuditService/ListMyErrors",
        "LicenseAdminService/ListLicenseEmails",
        "LicenseAdminService/GetLicenseSharingState",
        "LicenseAdminService/ListLicenseAudit",
    )
)

# A token this close to its expiry is not sent while a refresh is under way: wait for the new one.
_EXPIRY_SLACK_SECONDS = 5.0


class TeamshareError(Exception):
    """Base class of the client's own errors (RPC failures are grpc.RpcError)."""


class NotSignedIn(TeamshareError):
    """The operation needs a session and there is none."""


class SessionExpired(TeamshareError):
    """The server refused the refresh token (expired, revoked or reused): sign in again."""


@dataclass(frozen=True)
class Tokens:
    """A session's credentials. `access_expires_at` is in seconds since the epoch."""

    access_token: str = field(repr=False)
    access_expires_at: float
    refresh_token: str = field(repr=False)

    @classmethod
    def from_proto(cls, tokens: Any, now: float) -> "Tokens":
        """From a teamshare.v1.SessionTokens. A missing expiry counts as expired already, so
        the next call refreshes."""
        if tokens.HasField("access_token_expires_at"):
            expires = tokens.access_token_expires_at.seconds + tokens.access_token_expires_at.nanos / 1e9
        else:
            expires = now
        return cls(tokens.access_token, expires, tokens.refresh_token)


class Session:
    """The current tokens of one signed-in user, refreshed one refresh at a time.

    `refresher(refresh_token) -> Tokens` performs the RefreshSession RPC. Thread-safe.
    """

    def __init__(
        self,
        refresher: Callable[[str], Tokens],
        *,
        refresh_margin: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._refresher = refresher
        self.refresh_margin = refresh_margin
        self._clock = clock
        self._state = threading.Lock()  # guards _tokens and refresh_count
        self._refreshing = threading.Lock()  # held for the whole of a refresh: one at a time
        self._tokens: Optional[Tokens] = None
        self.refresh_count = 0

    @property
    def tokens(self) -> Optional[Tokens]:
        with self._state:
            return self._tokens

    def set_tokens(self, tokens: Optional[Tokens]) -> None:
        """Starts (or, with None, forgets) a session, e.g. one saved by an earlier process."""
        with self._state:
            self._tokens = tokens

    def clear(self) -> None:
        self.set_tokens(None)

    def _due(self, tokens: Tokens, now: float) -> bool:
        return now >= tokens.access_expires_at - self.refresh_margin

    def _valid(self, tokens: Tokens, now: float) -> bool:
        return now < tokens.access_expires_at - _EXPIRY_SLACK_SECONDS

    def access_token(self) -> Optional[str]:
        """A current access token, refreshed first when it is due; None when not signed in.

        Raises SessionExpired when the server refuses the refresh token, and the refresh's
        grpc.RpcError when a refresh fails otherwise and the old token has expired.
        """
        tokens = self.tokens
        if tokens is None:
            return None
        now = self._clock()
        if not self._due(tokens, now):
            return tokens.access_token
        if self._valid(tokens, now):
            # Still usable: refresh only if no other thread is doing it right now.
            if not self._refreshing.acquire(blocking=False):
                return tokens.access_token
        else:
            self._refreshing.acquire()
        try:
            return self._refresh_locked(tokens, force=False).access_token
        except grpc.RpcError:
            # A transient failure (UNAVAILABLE, a deadline): the old token serves while it lasts.
            if self._valid(tokens, self._clock()):
                return tokens.access_token
            raise
        finally:
            self._refreshing.release()

    def refresh(self) -> Tokens:
        """Refreshes now, whatever the expiry. Concurrent callers share one refresh."""
        seen = self.tokens
        if seen is None:
            raise NotSignedIn("not signed in")
        with self._refreshing:
            return self._refresh_locked(seen, force=True)

    def _refresh_locked(self, seen: Tokens, *, force: bool) -> Tokens:
        """With _refreshing held. `seen` is what the caller found due: if the tokens changed
        while it waited for the lock, another thread refreshed and that result is used."""
        current = self.tokens
        if current is None:
            raise NotSignedIn("signed out while a refresh was waiting")
        if current is not seen or (not force and not self._due(current, self._clock())):
            return current
        try:
            fresh = self._refresher(current.refresh_token)
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.UNAUTHENTICATED:
                with self._state:
                    if self._tokens is current:
                        self._tokens = None
                raise SessionExpired(f"the session ended: {describe_rpc_error(error)}") from error
            raise
        with self._state:
            if self._tokens is not current:  # signed out (or replaced) meanwhile: that wins
                raise NotSignedIn("the session was replaced while it was being refreshed")
            self._tokens = fresh
            self.refresh_count += 1
        return fresh


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of idempotent reads that fail with UNAVAILABLE.

    The n-th retry waits a random time between half and all of
    min(max_backoff, initial_backoff * multiplier ** (n - 1)) seconds, or the delay of the
    server's google.rpc.RetryInfo when that is longer, and never past the call's deadline.
    """

    max_attempts: int = 4
    initial_backoff: float = 0.1
    max_backoff: float = 2.0
    multiplier: float = 2.0

    def delay(self, retry: int, rng: random.Random) -> float:
        cap = min(self.max_backoff, self.initial_backoff * self.multiplier ** (retry - 1))
        return cap * (0.5 + rng.random() / 2)


class _CallDetails(
    collections.namedtuple(
        "_CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")
    ),
    grpc.ClientCallDetails,
):
    pass


def _with(details: grpc.ClientCallDetails, **changes: Any) -> _CallDetails:
    return _CallDetails(
        method=details.method,
        timeout=details.timeout,
        metadata=details.metadata,
        credentials=details.credentials,
        wait_for_ready=getattr(details, "wait_for_ready", None),
        compression=getattr(details, "compression", None),
    )._replace(**changes)


class _AuthInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds the access token (refreshed when due) and the default timeout."""

    def __init__(self, session: Session, default_timeout: Optional[float]) -> None:
        self._session = session
        self._default_timeout = default_timeout

    def _prepare(self, details: grpc.ClientCallDetails) -> _CallDetails:
        metadata = list(details.metadata or ())
        # A caller that set its own authorization header keeps it.
        if details.method not in NO_TOKEN_METHODS and not any(k.lower() == "authorization" for k, _ in metadata):
            token = self._session.access_token()
            if token is not None:
                metadata.append(("authorization", f"Bearer {token}"))
        timeout = details.timeout if details.timeout is not None else self._default_timeout
        return _with(details, metadata=metadata, timeout=timeout)

    def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return continuation(self._prepare(client_call_details), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return continuation(self._prepare(client_call_details), request)

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        return continuation(self._prepare(client_call_details), request_iterator)

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        return continuation(self._prepare(client_call_details), request_iterator)


class _RetryInterceptor(grpc.UnaryUnaryClientInterceptor):
    """Tries idempotent reads again on UNAVAILABLE. Outermost, so that every attempt passes
    through authentication again (and picks up a token refreshed meanwhile)."""

    def __init__(
        self,
        policy: Optional[RetryPolicy],
        default_timeout: Optional[float],
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: Optional[random.Random] = None,
    ) -> None:
        self._policy = policy
        self._default_timeout = default_timeout
        self._sleep = sleep
        self._clock = clock
        self._rng = rng or random.Random()

    def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        policy = self._policy
        if policy is None or policy.max_attempts <= 1 or client_call_details.method not in IDEMPOTENT_READS:
            return continuation(client_call_details, request)
        timeout = client_call_details.timeout if client_call_details.timeout is not None else self._default_timeout
        deadline = None if timeout is None else self._clock() + timeout
        attempt = 1
        while True:
            details = _with(
                client_call_details, timeout=None if deadline is None else max(0.0, deadline - self._clock())
            )
            outcome = continuation(details, request)
            if outcome.code() != grpc.StatusCode.UNAVAILABLE or attempt >= policy.max_attempts:
                return outcome
            delay = policy.delay(attempt, self._rng)
            hint = retry_delay(outcome)  # the gateway's RetryInfo
            if hint is not None:
                delay = max(delay, hint)
            if deadline is not None and self._clock() + delay >= deadline:
                return outcome
            self._sleep(delay)
            attempt += 1


def describe_rpc_error(error: BaseException) -> str:
    """`CODE REASON: details (request id ...)` for a grpc.RpcError; str() for anything else."""
    code = getattr(error, "code", None)
    if not callable(code):
        return str(error)
    reason = error_reason(error)
    text = f"{code().name}{' ' + reason if reason else ''}: {error.details()}"  # type: ignore[attr-defined]
    request_id = None
    for get in ("trailing_metadata", "initial_metadata"):
        try:
            for key, value in getattr(error, get)() or ():
                if key == "x-request-id":
                    request_id = value
        except Exception:  # noqa: BLE001 (metadata is a nicety here)
            pass
    return f"{text} (request id {request_id})" if request_id else text


class TeamshareClient:
    """A TLS channel to the gateway, a session, and the public API's stubs.

    target: `host:port` of the gateway. TLS roots: `ca_file` (a PEM file) or
    `root_certificates` (PEM bytes); neither means the system's roots. `server_name`
    overrides the name checked against the certificate (when connecting by address).
    `credentials` replaces all of that with ready-made channel credentials.
    `options` are extra gRPC channel options.
    """

    def __init__(
        self,
        target: str,
        *,
        ca_file: Union[str, "PathLike[str]", None] = None,
        root_certificates: Optional[bytes] = None,
        server_name: Optional[str] = None,
        credentials: Optional[grpc.ChannelCredentials] = None,
        refresh_margin: float = 60.0,
        retry: Optional[RetryPolicy] = RetryPolicy(),
        default_timeout: Optional[float] = 30.0,
        options: Sequence[Tuple[str, Any]] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        if credentials is None:
            if ca_file is not None:
                root_certificates = Path(ca_file).read_bytes()
            credentials = grpc.ssl_channel_credentials(root_certificates=root_certificates)
        channel_options = list(options)
        if server_name:
            channel_options.append(("grpc.ssl_target_name_override", server_name))
        self._clock = clock
        self._raw_channel = grpc.secure_channel(target, credentials, options=channel_options)
        self.session = Session(self._refresh_rpc, refresh_margin=refresh_margin, clock=clock)
        # The first interceptor is the outermost: retry wraps authentication.
        self.channel = grpc.intercept_channel(
            self._raw_channel,
            _RetryInterceptor(retry, default_timeout),
            _AuthInterceptor(self.session, default_timeout),
        )
        self.auth = v1.auth_pb2_grpc.AuthServiceStub(self.channel)
        self.system = v1.system_pb2_grpc.SystemServiceStub(self.channel)
        self.folders = v1.folders_pb2_grpc.FolderServiceStub(self.channel)
        self.members = v1.folders_pb2_grpc.MemberServiceStub(self.channel)
        self.items = v1.items_pb2_grpc.ItemServiceStub(self.channel)
        self.invitations = v1.invitations_pb2_grpc.InvitationServiceStub(self.channel)
        self.audit = v1.audit_pb2_grpc.AuditServiceStub(self.channel)
        self.license_admin = v1.license_pb2_grpc.LicenseAdminServiceStub(self.channel)

    # --- signing in -------------------------------------------------------------------

    def start_email_sign_in(self, email: str) -> Any:
        """Mails a one-time code to `email`; returns the StartEmailVerificationResponse."""
        return self.auth.StartEmailVerification(v1.auth_pb2.StartEmailVerificationRequest(email=email))

    def complete_email_sign_in(self, email: str, code: str) -> Any:
        """Checks the code and opens a session; returns the signed-in teamshare.v1.User."""
        response = self.auth.CompleteEmailVerification(
            v1.auth_pb2.CompleteEmailVerificationRequest(email=email, code=code)
        )
        self.session.set_tokens(Tokens.from_proto(response.tokens, self._clock()))
        return response.user

    def sign_in_with_email(self, email: str, code_for: Callable[[str], str]) -> Any:
        """Both steps: `code_for(email)` returns the code that was mailed (asks the user,
        reads a development mailbox, ...)."""
        self.start_email_sign_in(email)
        return self.complete_email_sign_in(email, code_for(email))

    def sign_in_with_sso(self, id_token: str) -> Any:
        """Opens a session from an OIDC ID token; returns the signed-in teamshare.v1.User."""
        response = self.auth.SignInWithSso(v1.auth_pb2.SignInWithSsoRequest(id_token=id_token))
        self.session.set_tokens(Tokens.from_proto(response.tokens, self._clock()))
        return response.user

    def refresh(self) -> Tokens:
        """Refreshes the session now (calls refresh on their own when tokens are due)."""
        return self.session.refresh()

    def sign_out(self) -> None:
        """Ends the session on the server, and forgets it here whatever the server said."""
        try:
            if self.session.tokens is not None:
                self.auth.SignOut(v1.auth_pb2.SignOutRequest())
        finally:
            self.session.clear()

    @property
    def signed_in(self) -> bool:
        return self.session.tokens is not None

    def me(self) -> Any:
        """The signed-in teamshare.v1.User."""
        return self.auth.GetMe(v1.auth_pb2.GetMeRequest()).user

    def _refresh_rpc(self, refresh_token: str) -> Tokens:
        # Not retried (RefreshSession is not in IDEMPOTENT_READS): a retry after the server
        # rotated the token would present the old one again and revoke the session.
        response = self.auth.RefreshSession(v1.auth_pb2.RefreshSessionRequest(refresh_token=refresh_token))
        return Tokens.from_proto(response.tokens, self._clock())

    # --- lifetime ---------------------------------------------------------------------

    def close(self) -> None:
        self._raw_channel.close()

    def __enter__(self) -> "TeamshareClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
