"""Offline tests of teamshare_client: the session's refresh discipline, and the interceptors
against an in-process gRPC server that plays the gateway (local credentials, loopback only).

    .venv/bin/python -m unittest discover -s clients/python/tests -v

The real gateway is exercised by tests/python_story.py (run by tests/grpcurl_smoke.sh).
"""

from __future__ import annotations

import random
import sys
import threading
import time
import unittest
from concurrent import futures
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc  # noqa: E402

from teamshare_client import (  # noqa: E402
    IDEMPOTENT_READS,
    NO_TOKEN_METHODS,
    RetryPolicy,
    Session,
    SessionExpired,
    TeamshareClient,
    Tokens,
)
from teamshare_client.v1 import (  # noqa: E402
    auth_pb2,
    auth_pb2_grpc,
    folders_pb2,
    folders_pb2_grpc,
)
from teamshare_client import v1  # noqa: E402
from teamshare_client import describe_rpc_error, error_reason, field_violations, retry_delay  # noqa: E402
from teamshare_client.errors import BadRequest, ErrorInfo, RetryInfo, Status  # noqa: E402


def status_details(code: grpc.StatusCode, reason: str, *, retry: float | None = None, field: str = "") -> bytes:
    """A google.rpc.Status trailer as the gateway sends it."""
    status = Status(code=code.value[0], message="x")
    status.details.add(
        type_url="type.googleapis.com/google.rpc.ErrorInfo",
        value=ErrorInfo(reason=reason, domain="teamshare.dev").SerializeToString(),
    )
    if retry is not None:
        info = RetryInfo()
        info.retry_delay.seconds = int(retry)
        info.retry_delay.nanos = int((retry - int(retry)) * 1e9)
        status.details.add(type_url="type.googleapis.com/google.rpc.RetryInfo", value=info.SerializeToString())
    if field:
        bad = BadRequest()
        bad.field_violations.add(field=field, description="must not be empty")
        status.details.add(type_url="type.googleapis.com/google.rpc.BadRequest", value=bad.SerializeToString())
    return status.SerializeToString()


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str = "") -> None:
        super().__init__(details)
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Refresher:
    """Rotates like auth does: presenting any refresh token but the newest is reuse."""

    def __init__(self, clock: FakeClock, *, delay: float = 0.05, ttl: float = 900.0) -> None:
        self.clock, self.delay, self.ttl = clock, delay, ttl
        self.issued = 0
        self.current = "r0"
        self.reused = False
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        self.fail_with: grpc.StatusCode | None = None

    def __call__(self, refresh_token: str) -> Tokens:
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            threading.Event().wait(self.delay)  # widen the window for races
            with self.lock:
                if self.fail_with is not None:
                    raise FakeRpcError(self.fail_with, "refused")
                if refresh_token != self.current:
                    self.reused = True
                    raise FakeRpcError(grpc.StatusCode.UNAUTHENTICATED, "refresh token reused")
                self.issued += 1
                self.current = f"r{self.issued}"
                return Tokens(f"a{self.issued}", self.clock() + self.ttl, self.current)
        finally:
            with self.lock:
                self.in_flight -= 1


def in_threads(n: int, fn):  # type: ignore[no-untyped-def]
    barrier = threading.Barrier(n)
    results: list = [None] * n
    errors: list = []

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = fn()
        except BaseException as error:  # noqa: BLE001
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results, errors


class SessionTest(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = FakeClock()
        self.refresher = Refresher(self.clock)
        self.session = Session(self.refresher, refresh_margin=60, clock=self.clock)

    def test_a_fresh_token_is_used_as_is(self) -> None:
        self.session.set_tokens(Tokens("a0", self.clock() + 900, "r0"))
        self.assertEqual(self.session.access_token(), "a0")
        self.assertEqual(self.refresher.issued, 0)

    def test_not_signed_in_means_no_token(self) -> None:
        self.assertIsNone(self.session.access_token())

    def test_a_due_but_valid_token_is_refreshed_once_by_many_threads(self) -> None:
        self.session.set_tokens(Tokens("a0", self.clock() + 30, "r0"))  # inside the margin
        results, errors = in_threads(16, self.session.access_token)
        self.assertEqual(errors, [])
        self.assertEqual(self.refresher.issued, 1)
        self.assertEqual(self.refresher.max_in_flight, 1)
        self.assertFalse(self.refresher.reused)
        self.assertTrue(set(results) <= {"a0", "a1"}, results)  # the old one while it lasts
        self.assertEqual(self.session.access_token(), "a1")

    def test_an_expired_token_makes_every_thread_wait_for_one_refresh(self) -> None:
        self.session.set_tokens(Tokens("a0", self.clock() - 1, "r0"))
        results, errors = in_threads(16, self.session.access_token)
        self.assertEqual(errors, [])
        self.assertEqual(results, ["a1"] * 16)
        self.assertEqual(self.refresher.issued, 1)
        self.assertFalse(self.refresher.reused)

    def test_refreshes_never_overlap_and_never_reuse_a_token(self) -> None:
        # Every token is always due: each call refreshes, one at a time.
        self.session.refresh_margin = 10**9
        self.session.set_tokens(Tokens("a0", self.clock() + 900, "r0"))
        _, errors = in_threads(8, lambda: [self.session.access_token() for _ in range(3)])
        self.assertEqual(errors, [])
        self.assertEqual(self.refresher.max_in_flight, 1)
        self.assertFalse(self.refresher.reused)
        self.assertGreaterEqual(self.refresher.issued, 1)

    def test_forced_refreshes_share_one_when_they_race(self) -> None:
        self.session.set_tokens(Tokens("a0", self.clock() + 900, "r0"))
        self.refresher.delay = 0.3
        results, errors = in_threads(8, self.session.refresh)
        self.assertEqual(errors, [])
        self.assertFalse(self.refresher.reused)
        self.assertEqual(self.refresher.max_in_flight, 1)
        # Those that found the same tokens shared one refresh; none presented a rotated token.
        self.assertLess(self.refresher.issued, 8)
        self.assertEqual(results[0].access_token[0], "a")

    def test_a_refused_refresh_ends_the_session(self) -> None:
        self.session.set_tokens(Tokens("a0", self.clock() - 1, "r0"))
        self.refresher.fail_with = grpc.StatusCode.UNAUTHENTICATED
        with self.assertRaises(SessionExpired):
            self.session.access_token()
        self.assertIsNone(self.session.tokens)

    def test_a_transient_refresh_failure_keeps_a_valid_token(self) -> None:
        self.session.set_tokens(Tokens("a0", self.clock() + 30, "r0"))
        self.refresher.fail_with = grpc.StatusCode.UNAVAILABLE
        self.assertEqual(self.session.access_token(), "a0")
        self.clock.now += 60  # now expired: the failure surfaces
        with self.assertRaises(grpc.RpcError):
            self.session.access_token()
        self.assertIsNotNone(self.session.tokens)  # not signed out by a transient failure

    def test_retry_delays_grow_with_jitter_and_a_cap(self) -> None:
        policy = RetryPolicy(initial_backoff=0.1, max_backoff=1.0, multiplier=2.0)
        rng = random.Random(7)
        for retry, cap in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.0), (9, 1.0)]:
            delays = {policy.delay(retry, rng) for _ in range(50)}
            self.assertTrue(all(cap / 2 <= d <= cap for d in delays), (retry, delays))
            self.assertGreater(len(delays), 1)  # jittered


class MethodSetsTest(unittest.TestCase):
    def public_methods(self) -> dict[str, str]:
        names = {}
        for module in (v1.auth_pb2, v1.system_pb2, v1.folders_pb2, v1.items_pb2, v1.invitations_pb2,
                       v1.audit_pb2, v1.license_pb2, v1.common_pb2):
            for service in module.DESCRIPTOR.services_by_name.values():
                for method in service.methods:
                    names[f"/{service.full_name}/{method.name}"] = method.name
        return names

    def test_every_named_method_exists(self) -> None:
        methods = self.public_methods()
        self.assertEqual(sorted((NO_TOKEN_METHODS | IDEMPOTENT_READS) - methods.keys()), [])

    def test_every_read_is_retried_and_no_write_is(self) -> None:
        for path, name in self.public_methods().items():
            is_read = name.startswith(("Get", "List"))
            self.assertEqual(path in IDEMPOTENT_READS, is_read, path)


class FakeAuth(auth_pb2_grpc.AuthServiceServicer):
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.issued = 0
        self.current = ""
        self.reused = False
        self.seen_auth: dict[str, list[str]] = {}

    def record(self, name: str, context: grpc.ServicerContext) -> str:
        auth = dict(context.invocation_metadata()).get("authorization", "")
        with self.lock:
            self.seen_auth.setdefault(name, []).append(auth)
        return auth

    def issue(self) -> auth_pb2.SessionTokens:
        self.issued += 1
        self.current = f"ref-{self.issued}"
        tokens = auth_pb2.SessionTokens(access_token=f"acc-{self.issued}", refresh_token=self.current)
        tokens.access_token_expires_at.GetCurrentTime()
        tokens.access_token_expires_at.seconds += 900
        return tokens

    def StartEmailVerification(self, request, context):  # noqa: N802
        self.record("StartEmailVerification", context)
        return auth_pb2.StartEmailVerificationResponse()

    def CompleteEmailVerification(self, request, context):  # noqa: N802
        self.record("CompleteEmailVerification", context)
        with self.lock:
            return auth_pb2.CompleteEmailVerificationResponse(
                tokens=self.issue(), user=auth_pb2.User(id="u1", email=request.email)
            )

    def RefreshSession(self, request, context):  # noqa: N802
        self.record("RefreshSession", context)
        with self.lock:
            if request.refresh_token != self.current:
                self.reused = True
                context.abort(grpc.StatusCode.UNAUTHENTICATED, "refresh token reused")
            return auth_pb2.RefreshSessionResponse(tokens=self.issue())

    def GetMe(self, request, context):  # noqa: N802
        auth = self.record("GetMe", context)
        with self.lock:  # like the gateway: any access token issued (and unexpired) is good
            if auth not in {f"Bearer acc-{n}" for n in range(1, self.issued + 1)}:
                context.abort(grpc.StatusCode.UNAUTHENTICATED, f"unknown or missing token {auth!r}")
        return auth_pb2.GetMeResponse(user=auth_pb2.User(id="u1"))


class FakeFolders(folders_pb2_grpc.FolderServiceServicer):
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: dict[str, int] = {}
        self.list_failures = 0
        self.list_retry_info: float | None = None

    def count(self, name: str) -> int:
        with self.lock:
            self.calls[name] = self.calls.get(name, 0) + 1
            return self.calls[name]

    def ListFolders(self, request, context):  # noqa: N802
        if self.count("ListFolders") <= self.list_failures:
            details = status_details(grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE", retry=self.list_retry_info)
            context.set_trailing_metadata([("grpc-status-details-bin", details), ("x-request-id", "req-1")])
            context.abort(grpc.StatusCode.UNAVAILABLE, "backend restarting")
        return folders_pb2.ListFoldersResponse(folders=[folders_pb2.Folder(id="f1", name="Team")])

    def CreateFolder(self, request, context):  # noqa: N802
        self.count("CreateFolder")
        if not request.name:
            details = status_details(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD", field="name")
            context.set_trailing_metadata([("grpc-status-details-bin", details)])
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "name: must not be empty")
        context.abort(grpc.StatusCode.UNAVAILABLE, "backend restarting")


class ClientAgainstFakeGatewayTest(unittest.TestCase):
    def setUp(self) -> None:
        self.auth, self.folders = FakeAuth(), FakeFolders()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        auth_pb2_grpc.add_AuthServiceServicer_to_server(self.auth, self.server)
        folders_pb2_grpc.add_FolderServiceServicer_to_server(self.folders, self.server)
        port = self.server.add_secure_port(
            "127.0.0.1:0", grpc.local_server_credentials(grpc.LocalConnectionType.LOCAL_TCP)
        )
        self.server.start()
        self.client = self.make_client(port)

    def make_client(self, port: int, **kwargs) -> TeamshareClient:  # type: ignore[no-untyped-def]
        self.port = port
        kwargs.setdefault("retry", RetryPolicy(initial_backoff=0.01, max_backoff=0.05))
        return TeamshareClient(
            f"127.0.0.1:{port}",
            credentials=grpc.local_channel_credentials(grpc.LocalConnectionType.LOCAL_TCP),
            options=[("grpc.enable_http_proxy", 0)],
            default_timeout=10,
            **kwargs,
        )

    def tearDown(self) -> None:
        self.client.close()
        self.server.stop(None)

    def test_sign_in_then_the_token_rides_on_every_call_but_sign_in_ones(self) -> None:
        user = self.client.sign_in_with_email("me@example.com", lambda email: "123456")
        self.assertEqual(user.email, "me@example.com")
        self.assertEqual(self.client.me().id, "u1")
        self.assertEqual(self.auth.seen_auth["GetMe"], ["Bearer acc-1"])
        self.assertEqual(self.auth.seen_auth["StartEmailVerification"], [""])
        self.assertEqual(self.auth.seen_auth["CompleteEmailVerification"], [""])

    def test_reads_are_retried_on_unavailable(self) -> None:
        self.client.sign_in_with_email("me@example.com", lambda email: "123456")
        self.folders.list_failures = 2
        response = self.client.folders.ListFolders(folders_pb2.ListFoldersRequest())
        self.assertEqual(response.folders[0].id, "f1")
        self.assertEqual(self.folders.calls["ListFolders"], 3)

    def test_reads_give_up_after_max_attempts(self) -> None:
        self.folders.list_failures = 100
        with self.assertRaises(grpc.RpcError) as caught:
            self.client.folders.ListFolders(folders_pb2.ListFoldersRequest())
        self.assertEqual(caught.exception.code(), grpc.StatusCode.UNAVAILABLE)
        self.assertEqual(self.folders.calls["ListFolders"], RetryPolicy().max_attempts)

    def test_retries_wait_at_least_the_servers_retry_info(self) -> None:
        self.folders.list_failures = 2
        self.folders.list_retry_info = 0.3
        started = time.monotonic()
        self.client.folders.ListFolders(folders_pb2.ListFoldersRequest())
        self.assertGreaterEqual(time.monotonic() - started, 0.6)
        self.assertEqual(self.folders.calls["ListFolders"], 3)

    def test_retries_stop_at_the_deadline(self) -> None:
        self.folders.list_failures = 100
        self.folders.list_retry_info = 5.0  # longer than the call may take: give up at once
        started = time.monotonic()
        with self.assertRaises(grpc.RpcError):
            self.client.folders.ListFolders(folders_pb2.ListFoldersRequest(), timeout=2)
        self.assertLess(time.monotonic() - started, 1.5)
        self.assertEqual(self.folders.calls["ListFolders"], 1)

    def test_error_details_are_read(self) -> None:
        self.folders.list_failures = 100
        self.folders.list_retry_info = 0.01
        with self.assertRaises(grpc.RpcError) as caught:
            self.client.folders.ListFolders(folders_pb2.ListFoldersRequest())
        self.assertEqual(error_reason(caught.exception), "UNAVAILABLE")
        self.assertAlmostEqual(retry_delay(caught.exception) or 0, 0.01, places=3)
        self.assertEqual(
            describe_rpc_error(caught.exception), "UNAVAILABLE UNAVAILABLE: backend restarting (request id req-1)"
        )
        with self.assertRaises(grpc.RpcError) as caught:
            self.client.folders.CreateFolder(folders_pb2.CreateFolderRequest(name=""))
        self.assertEqual(error_reason(caught.exception), "INVALID_FIELD")
        self.assertEqual(field_violations(caught.exception), [("name", "must not be empty")])
        self.assertIsNone(retry_delay(caught.exception))

    def test_every_reason_is_an_error_reason_of_the_api(self) -> None:
        names = {n.removeprefix("ERROR_REASON_") for n in v1.common_pb2.ErrorReason.keys()}
        self.assertIn("FOLDER_NOT_FOUND", names)

    def test_writes_are_never_retried(self) -> None:
        with self.assertRaises(grpc.RpcError) as caught:
            self.client.folders.CreateFolder(folders_pb2.CreateFolderRequest(name="x"))
        self.assertEqual(caught.exception.code(), grpc.StatusCode.UNAVAILABLE)
        self.assertEqual(self.folders.calls["CreateFolder"], 1)

    def test_no_retry_without_a_policy(self) -> None:
        self.client.close()
        self.client = self.make_client(self.port, retry=None)
        self.folders.list_failures = 1
        with self.assertRaises(grpc.RpcError):
            self.client.folders.ListFolders(folders_pb2.ListFoldersRequest())
        self.assertEqual(self.folders.calls["ListFolders"], 1)

    def test_a_due_token_is_refreshed_before_the_call_from_many_threads(self) -> None:
        self.client.sign_in_with_email("me@example.com", lambda email: "123456")
        self.client.session.refresh_margin = 10**9  # always due: every call refreshes first
        _, errors = in_threads(8, lambda: [self.client.me() for _ in range(3)])
        self.assertEqual(errors, [])
        self.assertFalse(self.auth.reused)
        self.assertGreater(self.auth.issued, 1)
        self.assertEqual(self.auth.seen_auth["RefreshSession"][0], "")  # refresh needs no access token

    def test_a_reused_refresh_token_ends_the_session(self) -> None:
        self.client.sign_in_with_email("me@example.com", lambda email: "123456")
        self.auth.current = "someone-else-rotated-it"
        with self.assertRaises(SessionExpired):
            self.client.refresh()
        self.assertFalse(self.client.signed_in)


if __name__ == "__main__":
    unittest.main()
