#!/usr/bin/env python3
"""The sharing story through the Python client (clients/python), against a running stack.

    .venv/bin/python tests/python_story.py --gateway localhost:8443 --ca .dev/certs/ca.pem \
        --mail-dir .dev/mail

tests/grpcurl_smoke.sh runs it against the `make dev` stack it starts on free ports. Alice
signs in with a code read from the development mailbox (`[mail] mode = "file"`: one JSON
file per message), creates a folder, shares a connection (its password is stripped: the
Connection message has no password field at all), and invites Bob; Bob signs in, finds and
accepts the invitation and reads the item; Alice removes Bob, and Bob's reads answer
NOT_FOUND. Along the way the client refreshes tokens from many threads at once (a refresh
token presented twice would revoke the session, so every later call would fail).

Prints one line per check; exits 1 with the failing step's message (gRPC code, details and
the request id) on the first failure.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "clients" / "python"))

try:
    import grpc

    from teamshare_client import TeamshareClient, describe_rpc_error, error_reason
    from teamshare_client.v1 import auth_pb2, common_pb2, folders_pb2, invitations_pb2, items_pb2
except ImportError as error:
    print(f"python story: cannot import the client: {error}", file=sys.stderr)
    print("  (run `.venv/bin/python clients/python/generate.py` or `make python-client` first)", file=sys.stderr)
    sys.exit(1)

CODE = re.compile(r"code is (\d{6})")


class StoryFailed(Exception):
    pass


class Mailbox:
    """The file mailer's folder: `<nanos>-<uuid>.json` files with `to`, `subject`, `body`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def names(self) -> set[str]:
        if not self.folder.is_dir():
            return set()
        return {p.name for p in self.folder.glob("*.json")}

    def wait_for(self, to: str, seen: set[str], want: re.Pattern[str], timeout: float = 15.0) -> re.Match[str]:
        """The first new message (not in `seen`) to `to` whose body matches `want`."""
        deadline = time.monotonic() + timeout
        while True:
            for name in sorted(self.names() - seen):
                try:
                    message = json.loads((self.folder / name).read_text())
                except (OSError, ValueError):
                    continue  # still being written: read it on the next pass
                if message.get("to") == to:
                    match = want.search(message.get("body", ""))
                    if match:
                        return match
            if time.monotonic() > deadline:
                raise StoryFailed(f"no message to {to} matching {want.pattern!r} in {self.folder} after {timeout:.0f} s")
            time.sleep(0.1)


class Story:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.mail = Mailbox(Path(args.mail_dir))
        self.passed = 0

    def check(self, what: str, ok: bool, detail: str = "") -> None:
        if not ok:
            raise StoryFailed(f"{what}{': ' + detail if detail else ''}")
        self.passed += 1
        print(f"ok   {what}", flush=True)

    def step(self, what: str, fn):  # type: ignore[no-untyped-def]
        """Runs one RPC-making step; a gRPC error fails the story with its code and request id."""
        try:
            result = fn()
        except grpc.RpcError as error:
            raise StoryFailed(f"{what}: {describe_rpc_error(error)}") from error
        self.passed += 1
        print(f"ok   {what}", flush=True)
        return result

    def refused(self, what: str, code: grpc.StatusCode, fn) -> None:  # type: ignore[no-untyped-def]
        try:
            result = fn()
        except grpc.RpcError as error:
            if error.code() != code:
                raise StoryFailed(f"{what}: expected {code.name}, got {describe_rpc_error(error)}") from error
            # Every error of the API names a stable reason (google.rpc.ErrorInfo).
            reason = error_reason(error)
            if not reason:
                raise StoryFailed(f"{what}: the error carries no ErrorInfo reason: {describe_rpc_error(error)}")
            self.passed += 1
            print(f"ok   {what} [{reason}]", flush=True)
            return
        raise StoryFailed(f"{what}: expected {code.name}, but the call succeeded: {result}")

    def client(self) -> TeamshareClient:
        return TeamshareClient(
            self.args.gateway,
            ca_file=self.args.ca,
            default_timeout=20,
            # Loopback: never through an HTTP proxy the environment may name.
            options=[("grpc.enable_http_proxy", 0)],
        )

    def sign_in(self, client: TeamshareClient, email: str):  # type: ignore[no-untyped-def]
        def code_for(address: str) -> str:
            return self.mail.wait_for(address, seen, CODE).group(1)

        seen = self.mail.names()  # the code to look for is in a message written after this
        return client.sign_in_with_email(email, code_for)

    def run(self) -> None:
        run_id = uuid.uuid4().hex[:8]
        alice_email = f"alice-{run_id}@python-story.example"
        bob_email = f"bob-{run_id}@python-story.example"
        alice, bob = self.client(), self.client()
        try:
            self.story(alice, bob, alice_email, bob_email)
        finally:
            alice.close()
            bob.close()

    def story(self, alice: TeamshareClient, bob: TeamshareClient, alice_email: str, bob_email: str) -> None:
        self.check(
            "the Connection message has no password field (secrets never travel in the API)",
            not any("password" in name for name in items_pb2.Connection.DESCRIPTOR.fields_by_name),
            str(sorted(items_pb2.Connection.DESCRIPTOR.fields_by_name)),
        )
        user = self.step("Alice signs in with the code mailed to her", lambda: self.sign_in(alice, alice_email))
        self.check("Alice's email is verified", user.email == alice_email and user.email_verified, str(user))

        folder = self.step(
            "Alice creates a folder",
            lambda: alice.folders.CreateFolder(folders_pb2.CreateFolderRequest(name="Python story")).folder,
        )
        self.check("Alice manages her folder", folder.my_access == common_pb2.ACCESS_LEVEL_MANAGE, str(folder))

        created = self.step(
            "Alice shares a connection",
            lambda: alice.items.CreateItem(
                items_pb2.CreateItemRequest(
                    folder_id=folder.id,
                    name="Prod (python)",
                    description="the reporting replica set",
                    content=items_pb2.ItemContent(
                        connection=items_pb2.Connection(
                            connection_string="mongodb://report:s3cret-py@db1.story:27017,db2.story:27017/?replicaSet=rs0",
                            replica_set="rs0",
                            tls=True,
                        )
                    ),
                )
            ),
        )
        item_id = created.item.summary.id
        self.check(
            "the connection string's password was removed and reported",
            any(f.endswith("connection_string.password") for f in created.removed_fields),
            str(list(created.removed_fields)),
        )
        self.check("the reply carries no password", "s3cret-py" not in str(created), str(created))

        # Tokens refresh from many threads at once: one refresh at a time, each presenting
        # the newest refresh token (a reused one revokes the session server-side).
        alice.session.refresh_margin = 10**9  # every call finds its token due
        errors: list[str] = []

        def reader() -> None:
            for _ in range(3):
                try:
                    alice.folders.GetFolder(folders_pb2.GetFolderRequest(folder_id=folder.id))
                except Exception as error:  # noqa: BLE001
                    errors.append(describe_rpc_error(error))

        threads = [threading.Thread(target=reader) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        alice.session.refresh_margin = 60.0
        self.check(
            f"Alice's reads from 6 threads all succeed while her token is refreshed ({alice.session.refresh_count} refreshes)",
            not errors and alice.session.refresh_count >= 1,
            "; ".join(errors[:3]) or "no refresh happened",
        )
        self.step("Alice's session still works after the refreshes (no refresh token was presented twice)", alice.me)

        seen = self.mail.names()
        invitation = self.step(
            "Alice invites Bob with VIEW access",
            lambda: alice.invitations.CreateInvitation(
                invitations_pb2.CreateInvitationRequest(
                    folder_id=folder.id, invitee_email=bob_email, access=common_pb2.ACCESS_LEVEL_VIEW
                )
            ).invitation,
        )
        self.check(
            "the invitation is pending", invitation.state == invitations_pb2.INVITATION_STATE_PENDING, str(invitation)
        )
        self.mail.wait_for(bob_email, seen, re.compile(re.escape(alice_email) + r" invited you"))
        self.check("Bob is mailed the invitation", True)

        self.step("Bob signs in with the code mailed to him", lambda: self.sign_in(bob, bob_email))
        mine = self.step(
            "Bob lists his invitations",
            lambda: bob.invitations.ListMyInvitations(invitations_pb2.ListMyInvitationsRequest()).invitations,
        )
        found = [i for i in mine if i.id == invitation.id]
        self.check(
            "Alice's invitation is there, naming the folder and Alice",
            len(found) == 1 and found[0].folder_name == "Python story" and found[0].inviter_email == alice_email,
            str(list(mine)),
        )
        accepted = self.step(
            "Bob accepts",
            lambda: bob.invitations.AcceptInvitation(invitations_pb2.AcceptInvitationRequest(invitation_id=invitation.id)),
        )
        self.check(
            "Bob joined with VIEW access",
            accepted.folder_id == folder.id and accepted.access == common_pb2.ACCESS_LEVEL_VIEW,
            str(accepted),
        )

        listed = self.step(
            "Bob lists the folder's items",
            lambda: bob.items.ListItems(items_pb2.ListItemsRequest(folder_id=folder.id)).items,
        )
        self.check(
            "Bob sees the connection, shared by Alice",
            [(i.id, i.shared_by_email) for i in listed] == [(item_id, alice_email)],
            str(list(listed)),
        )
        item = self.step(
            "Bob reads the connection",
            lambda: bob.items.GetItem(items_pb2.GetItemRequest(folder_id=folder.id, item_id=item_id)).item,
        )
        connection = item.content.connection
        self.check(
            "Bob gets the hosts and options, and no password",
            "db1.story:27017" in connection.connection_string
            and connection.replica_set == "rs0"
            and connection.tls
            and item.description == "the reporting replica set"
            and "s3cret" not in str(item),
            str(item),
        )
        self.refused(
            "Bob (VIEW) cannot delete the item",
            grpc.StatusCode.PERMISSION_DENIED,
            lambda: bob.items.DeleteItem(
                items_pb2.DeleteItemRequest(folder_id=folder.id, item_id=item_id, expected_version=item.summary.version)
            ),
        )

        bob_id = self.step("Bob's user id", bob.me).id
        self.step(
            "Alice removes Bob",
            lambda: alice.members.RemoveMember(folders_pb2.RemoveMemberRequest(folder_id=folder.id, user_id=bob_id)),
        )
        members = self.step(
            "Alice lists the members",
            lambda: alice.members.ListMembers(folders_pb2.ListMembersRequest(folder_id=folder.id)).members,
        )
        self.check(
            "only Alice is left", [m.email for m in members] == [alice_email], str([m.email for m in members])
        )
        self.refused(
            "Bob can no longer read the item (NOT_FOUND)",
            grpc.StatusCode.NOT_FOUND,
            lambda: bob.items.GetItem(items_pb2.GetItemRequest(folder_id=folder.id, item_id=item_id)),
        )
        self.refused(
            "Bob can no longer list the items (NOT_FOUND)",
            grpc.StatusCode.NOT_FOUND,
            lambda: bob.items.ListItems(items_pb2.ListItemsRequest(folder_id=folder.id)),
        )
        self.refused(
            "Bob can no longer see the folder (NOT_FOUND)",
            grpc.StatusCode.NOT_FOUND,
            lambda: bob.folders.GetFolder(folders_pb2.GetFolderRequest(folder_id=folder.id)),
        )
        folders = self.step(
            "Bob lists his folders",
            lambda: bob.folders.ListFolders(folders_pb2.ListFoldersRequest()).folders,
        )
        self.check("Bob's folder list no longer has it", all(f.id != folder.id for f in folders), str(list(folders)))

        self.step("Bob signs out", bob.sign_out)
        self.check("Bob's client forgot the session", not bob.signed_in)

        # What the serialised refreshes above protect against: the server rotates the refresh
        # token, and one presented again ends the session. (Two rotations back: auth may
        # answer a retry of the token just replaced, for a few seconds, with the same new one.)
        old = alice.session.tokens
        self.step("Alice's client refreshes on demand", alice.refresh)
        self.step("and again", alice.refresh)
        self.refused(
            "a refresh token rotated twice since is refused",
            grpc.StatusCode.UNAUTHENTICATED,
            lambda: alice.auth.RefreshSession(auth_pb2.RefreshSessionRequest(refresh_token=old.refresh_token)),
        )
        deadline = time.monotonic() + 5
        while True:
            try:
                alice.me()
            except grpc.RpcError as error:
                self.check(
                    "presenting it again ended Alice's session (her new access token is refused)",
                    error.code() == grpc.StatusCode.UNAUTHENTICATED,
                    describe_rpc_error(error),
                )
                break
            if time.monotonic() > deadline:
                raise StoryFailed("Alice's access token still works 5 s after her refresh token was reused")
            time.sleep(0.2)


def main() -> int:
    parser = argparse.ArgumentParser(description="The sharing story through the Python client.")
    parser.add_argument("--gateway", required=True, help="host:port of the gateway (TLS)")
    parser.add_argument("--ca", required=True, help="PEM file of the CA that signed the gateway's certificate")
    parser.add_argument("--mail-dir", required=True, help="the development mailer's folder ([mail] dir)")
    args = parser.parse_args()

    story = Story(args)
    try:
        story.run()
    except StoryFailed as failure:
        print(f"FAIL {failure}", flush=True)
        print(f"python story: failed after {story.passed} checks", file=sys.stderr)
        return 1
    except Exception as error:  # noqa: BLE001 (any surprise is a failure with a message)
        print(f"FAIL unexpected {type(error).__name__}: {describe_rpc_error(error)}", flush=True)
        return 1
    print(f"python story: {story.passed} checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
