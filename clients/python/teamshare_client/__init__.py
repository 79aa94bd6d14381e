"""Python client for teamshare's public gRPC API (the gateway).

    from teamshare_client import TeamshareClient
    from teamshare_client.v1 import folders_pb2

The message and stub modules in `teamshare_client.v1` are generated from proto/teamshare/v1 by
clients/python/generate.py; the internal API is not part of this package.
"""

from .client import (
    IDEMPOTENT_READS,
    NO_TOKEN_METHODS,
    NotSignedIn,
    RetryPolicy,
    Session,
    SessionExpired,
    TeamshareClient,
    TeamshareError,
    Tokens,
    describe_rpc_error,
)
from .errors import error_reason, field_violations, retry_delay

__all__ = [
    "IDEMPOTENT_READS",
    "NO_TOKEN_METHODS",
    "NotSignedIn",
    "RetryPolicy",
    "Session",
    "SessionExpired",
    "TeamshareClient",
    "TeamshareError",
    "Tokens",
    "describe_rpc_error",
    "error_reason",
    "field_violations",
    "retry_delay",
]
