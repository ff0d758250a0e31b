"""The langfuse SDK's private names this project relies on, each with the protection it carries.

Everything the forwarder needs from the SDK beyond its public API is reached through the
functions below, never directly (see ``agent.core.internals``). When one is gone (an SDK
upgrade moved it), the function falls back to the safest behaviour it has and the first miss
logs one WARNING naming the protection that is lost; ``ml-intern observability check`` lists
every miss (``internals.lost()``).

Public API of the SDK used elsewhere, for the record: ``Langfuse(...)``, ``LangfuseGeneration``,
``LangfuseSpan``, ``LangfuseEvent`` (``otel_span=``, ``langfuse_client=``, the attribute
keywords), ``Langfuse.create_trace_id``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from agent.core.internals import Internal, check_version

__all__ = [
    "INTERNALS",
    "app_root_attribute",
    "client_mask_is_unset",
    "client_resources",
    "forget_client",
    "media_manager",
    "serialize_metadata_value",
    "set_media_upload",
    "tracer_name",
    "transforming_exporter",
]

LIBRARY = "langfuse"
# The pin in pyproject.toml: langfuse>=5,<6.
PINNED = ("5", "6")

TRACER_NAME = Internal(
    LIBRARY,
    "langfuse._client.constants:LANGFUSE_TRACER_NAME",
    "our spans carry the SDK's own instrumentation scope, so LangFuse files them as SDK "
    "observations",
)
SERIALIZE_METADATA = Internal(
    LIBRARY,
    "langfuse._client.attributes:_serialize_metadata_value",
    "trace metadata encoded exactly as the SDK encodes observation metadata",
)
APP_ROOT = Internal(
    LIBRARY,
    "langfuse._client.attributes:LangfuseOtelSpanAttributes.IS_APP_ROOT",
    "a turn span of our own trace is marked LangFuse's app root under the SDK's own attribute name",
)
RESOURCE_INSTANCES = Internal(
    LIBRARY,
    "langfuse._client.resource_manager:LangfuseResourceManager._instances",
    "a later setup with the same public key gets a fresh client, not the shut-down one the SDK "
    "caches per key",
)
RESOURCE_LOCK = Internal(
    LIBRARY,
    "langfuse._client.resource_manager:LangfuseResourceManager._lock",
    "the SDK's per-key client cache is changed under its own lock",
)
CLIENT_RESOURCES = Internal(
    LIBRARY,
    "langfuse._client.client:Langfuse._resources",
    "the SDK's exit hook (a flush without a timeout) is replaced by our bounded shutdown",
)
CLIENT_MASK = Internal(
    LIBRARY,
    "langfuse._client.client:Langfuse._mask",
    "attribute values pre-serialised on the fast path only when no SDK mask is configured",
)
MEDIA_MANAGER = Internal(
    LIBRARY,
    "langfuse._client.resource_manager:LangfuseResourceManager._media_manager",
    "inline media is never uploaded unless langfuse_media_upload is on, and uploads are counted",
)
MEDIA_ENABLED = Internal(
    LIBRARY,
    "langfuse._task_manager.media_manager:MediaManager._enabled",
    "the SDK's media upload follows langfuse_media_upload (off by default)",
)
MEDIA_UPLOAD_JOB = Internal(
    LIBRARY,
    "langfuse._task_manager.media_manager:MediaManager._process_upload_media_job",
    "media uploads are counted (media_uploads, media_upload_failures)",
)
TRANSFORMING_EXPORTER = Internal(
    LIBRARY,
    "langfuse._client.span_exporter:LangfuseTransformingSpanExporter",
    "with langfuse_media_upload on, media inside string span attributes is uploaded at export "
    "as the SDK's own processor does",
)

INTERNALS: tuple[Internal, ...] = (
    TRACER_NAME,
    SERIALIZE_METADATA,
    APP_ROOT,
    RESOURCE_INSTANCES,
    RESOURCE_LOCK,
    CLIENT_RESOURCES,
    CLIENT_MASK,
    MEDIA_MANAGER,
    MEDIA_ENABLED,
    MEDIA_UPLOAD_JOB,
    TRANSFORMING_EXPORTER,
)

check_version(LIBRARY, *PINNED)

_MISSING = object()


def _attribute(internal: Internal, obj: Any, name: str) -> Any:
    """``obj.<name>`` (an instance attribute ``internal`` declares), or ``_MISSING`` (reported)."""
    value = getattr(obj, name, _MISSING)
    if value is _MISSING:
        internal.report(f"{type(obj).__name__} has no attribute {name}")
    return value


# -- names and encodings --


DEFAULT_TRACER_NAME = "langfuse-sdk"


def tracer_name() -> str:
    """The SDK tracer's instrumentation scope name (``langfuse-sdk`` in 5.x)."""
    name = TRACER_NAME.get()
    return name if isinstance(name, str) else DEFAULT_TRACER_NAME


def _compact_json(value: Any) -> str:
    # What the SDK's encoder does for plain values (compact, raw non-ASCII, like JS).
    return json.dumps(value, default=str, separators=(",", ":"), ensure_ascii=False)


def serialize_metadata_value() -> Callable[[Any], str]:
    """The SDK's metadata value encoder (every value JSON-encoded, strings included)."""
    fn = SERIALIZE_METADATA.get()
    return fn if callable(fn) else _compact_json


def app_root_attribute() -> str:
    """The span attribute that marks LangFuse's app root of a trace."""
    name = APP_ROOT.get()
    return name if isinstance(name, str) else "langfuse.internal.is_app_root"


# -- the client --


def client_resources(client: Any) -> Any:
    """The client's resource manager (its exit hook, media manager, per-key cache entry)."""
    value = _attribute(CLIENT_RESOURCES, client, "_resources")
    return None if value is _MISSING else value


def client_mask_is_unset(client: Any) -> bool:
    """True when the client has no mask function (unknown counts as set: the slow, safe path)."""
    value = _attribute(CLIENT_MASK, client, "_mask")
    return value is None


def forget_client(public_key: str, resources: Any) -> None:
    """Remove ``resources`` from the SDK's per-key cache (only if it is still the cached one)."""
    if resources is None:
        return
    instances = RESOURCE_INSTANCES.get()
    lock = RESOURCE_LOCK.get()
    if not isinstance(instances, dict) or lock is None:
        return
    with lock:
        if instances.get(public_key) is resources:
            del instances[public_key]


# -- media --


def media_manager(client: Any) -> Any:
    resources = client_resources(client)
    if resources is None:
        return None
    value = _attribute(MEDIA_MANAGER, resources, "_media_manager")
    return None if value is _MISSING else value


def set_media_upload(manager: Any, *, enabled: bool, on_upload: Callable[[bool], None]) -> None:
    """Switch the SDK's media upload on or off; when on, ``on_upload(ok)`` after each upload."""
    if _attribute(MEDIA_ENABLED, manager, "_enabled") is _MISSING:
        return
    manager._enabled = bool(enabled)
    if not enabled:
        return
    upload = _attribute(MEDIA_UPLOAD_JOB, manager, "_process_upload_media_job")
    if upload is _MISSING:
        return

    def counted(*args: Any, **kwargs: Any) -> Any:
        try:
            out = upload(*args, **kwargs)
        except BaseException:
            on_upload(False)
            raise
        on_upload(True)
        return out

    manager._process_upload_media_job = counted


def transforming_exporter(exporter: Any, manager: Any) -> Any:
    """``exporter`` behind the SDK's export-stage media transform (or ``exporter`` alone)."""
    cls = TRANSFORMING_EXPORTER.get()
    if cls is None:
        return exporter
    return cls(exporter=exporter, media_manager=manager, mask_otel_spans=None)
