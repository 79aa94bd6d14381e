#!/usr/bin/env bash
# The sharing story, driven by the real grpcurl against a running `make dev` stack, the way a
# developer debugging the public API would. Sourced by grpcurl_smoke.sh, which provides
# `check`, `public` (grpcurl to the gateway) and the stack's data folder in $tmp/.dev.

mail_code() { # newest verification code mailed to $1
  python3 - "$tmp/.dev/mail" "$1" <<'PY'
import json, os, re, sys
d, to = sys.argv[1], sys.argv[2]
msgs = [json.load(open(os.path.join(d, f))) for f in sorted(os.listdir(d)) if f.endswith(".json")]
codes = [re.search(r"code is (\d{6})", m["body"]).group(1) for m in msgs if m["to"] == to and "code is" in m["body"]]
print(codes[-1])
PY
}
field() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval('d' + sys.argv[1]))" "$1"; }

anon() { # rpc json
  "${grpcurl[@]}" -cacert "$certs/ca.pem" -d "$2" "localhost:$gateway" "teamshare.v1.$1"
}
sign_in() { # email -> prints an access token
  anon AuthService/StartEmailVerification "{\"email\": \"$1\"}" >/dev/null
  local code; code=$(mail_code "$1")
  anon AuthService/CompleteEmailVerification "{\"email\": \"$1\", \"code\": \"$code\"}" | field '["tokens"]["accessToken"]'
}
call() { # token rpc json
  "${grpcurl[@]}" -cacert "$certs/ca.pem" -H "authorization: Bearer $1" -d "$3" "localhost:$gateway" "teamshare.v1.$2"
}

contains() { grep -q -- "$2" <<<"$1"; }
lacks() { ! grep -q -- "$2" <<<"$1"; }
ok() { # token rpc json: the reply of a call that must succeed; on an error, a line that no check accepts
  local out
  if out=$(call "$@" 2>&1); then printf '%s\n' "$out"; else printf 'CALL FAILED: %s\n' "$out" | tr '\n' ' '; fi
}
fails_with() { # code token rpc json: succeeds only when the call fails with exactly that gRPC code
  local want=$1 out got
  shift
  if out=$(call "$@" 2>&1); then echo "expected $want, but the call succeeded: $out"; return 1; fi
  got=$(sed -n 's/^ *Code: //p' <<<"$out" | head -n 1)
  [ "$got" = "$want" ] || { echo "expected $want, got ${got:-no gRPC code}: $out"; return 1; }
}

A=$(sign_in alice@story.example)
check "A verifies by email and gets an access token" test -n "$A"
folder=$(call "$A" FolderService/CreateFolder '{"name": "Story folder"}' | field '["folder"]["id"]')
check "A creates a folder" test -n "$folder"
out=$(ok "$A" ItemService/CreateItem "{\"folderId\": \"$folder\", \"name\": \"Prod\", \"content\": {\"connection\": {\"connectionString\": \"mongodb://app:s3cret@db.story:27017/\"}}}")
check "A shares a connection; its password is removed and reported" contains "$out" "connection_string.password"
check "the reply carries no password" lacks "$out" "s3cret"
query=$(call "$A" ItemService/CreateItem "{\"folderId\": \"$folder\", \"name\": \"Open orders\", \"content\": {\"query\": {\"database\": \"sales\", \"collection\": \"orders\", \"filter\": \"{}\"}}}" | field '["item"]["summary"]["id"]')
check "A shares a query" test -n "$query"
out=$(ok "$A" InvitationService/CreateInvitation "{\"folderId\": \"$folder\", \"inviteeEmail\": \"bob@story.example\", \"access\": \"ACCESS_LEVEL_EDIT\"}")
check "A invites B" contains "$out" "INVITATION_STATE_PENDING"
B=$(sign_in bob@story.example)
invitation=$(call "$B" InvitationService/ListMyInvitations '{}' | field '["invitations"][0]["id"]')
check "B verifies and lists the invitation" test -n "$invitation"
out=$(ok "$B" InvitationService/AcceptInvitation "{\"invitationId\": \"$invitation\"}")
check "B accepts" contains "$out" "ACCESS_LEVEL_EDIT"
out=$(ok "$B" ItemService/ListItems "{\"folderId\": \"$folder\"}")
check "B lists both items" bash -c '[ "$(grep -c "\"sharedByEmail\": \"alice@story.example\"" <<<"$1")" = 2 ]' _ "$out"
out=$(ok "$B" ItemService/GetItem "{\"folderId\": \"$folder\", \"itemId\": \"$query\"}")
check "B reads the query's content" contains "$out" '"collection": "orders"'
bid=$(call "$B" AuthService/GetMe '{}' | field '["user"]["id"]')
out=$(ok "$A" MemberService/UpdateMemberAccess "{\"folderId\": \"$folder\", \"userId\": \"$bid\", \"access\": \"ACCESS_LEVEL_VIEW\"}")
check "A lowers B to VIEW" contains "$out" "ACCESS_LEVEL_VIEW"
check "B cannot edit" fails_with PermissionDenied "$B" ItemService/UpdateItem "{\"folderId\": \"$folder\", \"itemId\": \"$query\", \"expectedVersion\": 1, \"name\": \"x\", \"content\": {\"query\": {}}}"
check "A's RemoveMember call succeeds" call "$A" MemberService/RemoveMember "{\"folderId\": \"$folder\", \"userId\": \"$bid\"}"
out=$(ok "$A" MemberService/ListMembers "{\"folderId\": \"$folder\"}")
check "the member list still reads (A is listed)" contains "$out" "alice@story.example"
check "A removes B: B is no longer a member" lacks "$out" "$bid"
check "A removes B: B's email is not listed" lacks "$out" "bob@story.example"
out=$(ok "$B" FolderService/ListFolders '{}')
check "B's folder list reads" lacks "$out" "CALL FAILED"
check "B sees no folder" lacks "$out" '"id"'
check "B's item reads are refused with NotFound" fails_with NotFound "$B" ItemService/ListItems "{\"folderId\": \"$folder\"}"
check "B's item get is refused with NotFound" fails_with NotFound "$B" ItemService/GetItem "{\"folderId\": \"$folder\", \"itemId\": \"$query\"}"
