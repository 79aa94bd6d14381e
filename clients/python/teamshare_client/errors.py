"""The structured details of teamshare's errors (google.rpc.Status in `grpc-status-details-bin`).

Every error of the public API carries a `google.rpc.ErrorInfo` whose `reason` is one of
teamshare.v1.ErrorReason without its `ERROR_REASON_` prefix (branch on it, never on the
message); UNAVAILABLE and RESOURCE_EXHAUSTED carry a `google.rpc.RetryInfo`; INVALID_ARGUMENT a
`google.rpc.BadRequest` naming the field.

The few google.rpc messages needed are declared here in a private descriptor pool, so the
client needs no googleapis-common-protos and never clashes with it when both are installed.
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, duration_pb2, message_factory

DETAILS_KEY = "grpc-status-details-bin"
ERROR_DOMAIN = "teamshare.dev"

_F = descriptor_pb2.FieldDescriptorProto


def _field(name: str, number: int, kind: int, *, repeated: bool = False, type_name: str = "") -> Any:
    field = _F(name=name, number=number, type=kind, label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL)
    if type_name:  # set only for message fields: an empty one still counts as set
        field.type_name = type_name
    return field


def _build() -> Tuple[Any, Any, Any, Any]:
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(any_pb2.DESCRIPTOR.serialized_pb)
    pool.AddSerializedFile(duration_pb2.DESCRIPTOR.serialized_pb)
    file = descriptor_pb2.FileDescriptorProto(
        name="teamshare_client/google_rpc_subset.proto",
        package="google.rpc",
        syntax="proto3",
        dependency=["google/protobuf/any.proto", "google/protobuf/duration.proto"],
    )
    file.message_type.add(
        name="Status",
        field=[
            _field("code", 1, _F.TYPE_INT32),
            _field("message", 2, _F.TYPE_STRING),
            _field("details", 3, _F.TYPE_MESSAGE, repeated=True, type_name=".google.protobuf.Any"),
        ],
    )
    file.message_type.add(
        name="RetryInfo",
        field=[_field("retry_delay", 1, _F.TYPE_MESSAGE, type_name=".google.protobuf.Duration")],
    )
    # ErrorInfo's third field (metadata, a map) is left out: unknown fields are skipped.
    file.message_type.add(
        name="ErrorInfo",
        field=[_field("reason", 1, _F.TYPE_STRING), _field("domain", 2, _F.TYPE_STRING)],
    )
    bad_request = file.message_type.add(name="BadRequest")
    bad_request.nested_type.add(
        name="FieldViolation",
        field=[_field("field", 1, _F.TYPE_STRING), _field("description", 2, _F.TYPE_STRING)],
    )
    bad_request.field.append(
        _field("field_violations", 1, _F.TYPE_MESSAGE, repeated=True, type_name=".google.rpc.BadRequest.FieldViolation")
    )
    pool.Add(file)

    def cls(name: str) -> Any:
        return message_factory.GetMessageClass(pool.FindMessageTypeByName(name))

    return cls("google.rpc.Status"), cls("google.rpc.RetryInfo"), cls("google.rpc.ErrorInfo"), cls("google.rpc.BadRequest")


Status, RetryInfo, ErrorInfo, BadRequest = _build()


def _metadata(error: Any) -> List[Tuple[str, Any]]:
    items: List[Tuple[str, Any]] = []
    for get in ("trailing_metadata", "initial_metadata"):
        method = getattr(error, get, None)
        if callable(method):
            try:
                items.extend(method() or ())
            except Exception:  # noqa: BLE001 (an outcome without metadata)
                pass
    return items


def status_of(error: Any) -> Optional[Any]:
    """The google.rpc.Status a failed call carries, if any."""
    for key, value in _metadata(error):
        if key == DETAILS_KEY and isinstance(value, (bytes, bytearray)):
            try:
                return Status.FromString(bytes(value))
            except Exception:  # noqa: BLE001 (a malformed trailer is no detail)
                return None
    return None


def _details(error: Any, name: str, cls: Any) -> List[Any]:
    status = status_of(error)
    if status is None:
        return []
    found = []
    for detail in status.details:
        if detail.type_url.rsplit("/", 1)[-1] == name:
            try:
                found.append(cls.FromString(detail.value))
            except Exception:  # noqa: BLE001
                pass
    return found


def error_reason(error: Any) -> Optional[str]:
    """The ErrorInfo reason of a failed call ("FOLDER_NOT_FOUND", ...), or None."""
    infos = _details(error, "google.rpc.ErrorInfo", ErrorInfo)
    for info in infos:
        if info.domain == ERROR_DOMAIN:
            return info.reason
    return infos[0].reason if infos else None


def retry_delay(error: Any) -> Optional[float]:
    """Seconds the server asks the client to wait before trying again (RetryInfo), or None.

    Also reads the older `retry-after-seconds` trailer."""
    for info in _details(error, "google.rpc.RetryInfo", RetryInfo):
        if info.HasField("retry_delay"):
            return info.retry_delay.seconds + info.retry_delay.nanos / 1e9
    for key, value in _metadata(error):
        if key == "retry-after-seconds":
            try:
                return float(value)
            except (TypeError, ValueError):
                return None
    return None


def field_violations(error: Any) -> List[Tuple[str, str]]:
    """(field, description) pairs of an INVALID_ARGUMENT's BadRequest detail."""
    return [(v.field, v.description) for b in _details(error, "google.rpc.BadRequest", BadRequest) for v in b.field_violations]
