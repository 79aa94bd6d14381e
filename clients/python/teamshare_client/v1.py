"""The public API (proto/teamshare/v1): one generated module per .proto file.

    from teamshare_client.v1 import folders_pb2, folders_pb2_grpc

`*_pb2` hold the messages and enums, `*_pb2_grpc` the service stubs. TeamshareClient builds
the stubs for you; use the `*_pb2` modules for requests and responses.
"""

try:
    from ._generated.teamshare.v1 import (
        audit_pb2,
        audit_pb2_grpc,
        auth_pb2,
        auth_pb2_grpc,
        common_pb2,
        common_pb2_grpc,
        folders_pb2,
        folders_pb2_grpc,
        invitations_pb2,
        invitations_pb2_grpc,
        items_pb2,
        items_pb2_grpc,
        license_pb2,
        license_pb2_grpc,
        system_pb2,
        system_pb2_grpc,
    )
except ModuleNotFoundError as error:  # pragma: no cover (depends on the checkout)
    if (error.name or "").startswith(__package__ + "._generated"):
        raise ImportError(
            "teamshare_client: the generated stubs are missing; run "
            "`python clients/python/generate.py` (needs grpcio-tools) or `make python-client`"
        ) from error
    raise

__all__ = [
    "audit_pb2",
    "audit_pb2_grpc",
    "auth_pb2",
    "auth_pb2_grpc",
    "common_pb2",
    "common_pb2_grpc",
    "folders_pb2",
    "folders_pb2_grpc",
    "invitations_pb2",
    "invitations_pb2_grpc",
    "items_pb2",
    "items_pb2_grpc",
    "license_pb2",
    "license_pb2_grpc",
    "system_pb2",
    "system_pb2_grpc",
]
