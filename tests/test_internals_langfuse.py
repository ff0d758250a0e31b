"""Every private name of the langfuse SDK we rely on: gone (a simulated SDK upgrade), the
forwarder falls back and says once, at WARNING, which protection is lost."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from langfuse._client import attributes, constants, span_exporter
from langfuse._client.resource_manager import LangfuseResourceManager

from agent.config import AgentConfig
from agent.core import guard, internals
from agent.core.internals import langfuse as sdk
from agent.core.observability import Observability
from agent.testing.fake_langfuse import FakeLangfuse
from tests.langfuse_helpers import fresh_keys


@pytest.fixture(autouse=True)
def _fresh_reports(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each miss is reported once per process: start every test with none reported yet.
    monkeypatch.setattr(internals, "_lost", {})
    monkeypatch.setattr(guard, "_seen", set())


def _gone(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> None:
    monkeypatch.delattr(owner, name, raising=False)


def _tracer_name(mp: pytest.MonkeyPatch) -> Any:
    _gone(mp, constants, "LANGFUSE_TRACER_NAME")
    assert sdk.tracer_name() == "langfuse-sdk"


def _serialize(mp: pytest.MonkeyPatch) -> Any:
    _gone(mp, attributes, "_serialize_metadata_value")
    assert sdk.serialize_metadata_value()({"a": "é"}) == '{"a":"é"}'


def _app_root(mp: pytest.MonkeyPatch) -> Any:
    _gone(mp, attributes.LangfuseOtelSpanAttributes, "IS_APP_ROOT")
    assert sdk.app_root_attribute() == "langfuse.internal.is_app_root"


def _instances(mp: pytest.MonkeyPatch) -> Any:
    _gone(mp, LangfuseResourceManager, "_instances")
    sdk.forget_client("pk-lf-x", object())  # nothing to forget from: no error


def _lock(mp: pytest.MonkeyPatch) -> Any:
    _gone(mp, LangfuseResourceManager, "_lock")
    sdk.forget_client("pk-lf-x", object())


def _resources(mp: pytest.MonkeyPatch) -> Any:
    assert sdk.client_resources(object()) is None


def _mask(mp: pytest.MonkeyPatch) -> Any:
    assert sdk.client_mask_is_unset(object()) is False  # unknown: the SDK's own (slow) path


def _media_manager(mp: pytest.MonkeyPatch) -> Any:
    assert sdk.media_manager(SimpleNamespace(_resources=object())) is None


def _media_enabled(mp: pytest.MonkeyPatch) -> Any:
    sdk.set_media_upload(object(), enabled=True, on_upload=lambda ok: None)


def _media_job(mp: pytest.MonkeyPatch) -> Any:
    manager = SimpleNamespace(_enabled=False)
    sdk.set_media_upload(manager, enabled=True, on_upload=lambda ok: None)
    assert manager._enabled is True  # the switch still works; only the counting is lost


def _transforming(mp: pytest.MonkeyPatch) -> Any:
    _gone(mp, span_exporter, "LangfuseTransformingSpanExporter")
    exporter = object()
    assert sdk.transforming_exporter(exporter, object()) is exporter


CASES: dict[Any, Callable[[pytest.MonkeyPatch], Any]] = {
    sdk.TRACER_NAME: _tracer_name,
    sdk.SERIALIZE_METADATA: _serialize,
    sdk.APP_ROOT: _app_root,
    sdk.RESOURCE_INSTANCES: _instances,
    sdk.RESOURCE_LOCK: _lock,
    sdk.CLIENT_RESOURCES: _resources,
    sdk.CLIENT_MASK: _mask,
    sdk.MEDIA_MANAGER: _media_manager,
    sdk.MEDIA_ENABLED: _media_enabled,
    sdk.MEDIA_UPLOAD_JOB: _media_job,
    sdk.TRANSFORMING_EXPORTER: _transforming,
}


def test_every_declared_internal_has_a_case() -> None:
    assert set(CASES) == set(sdk.INTERNALS)


@pytest.mark.parametrize("internal", sdk.INTERNALS, ids=lambda i: i.path.rpartition(":")[2])
def test_a_missing_internal_warns_once_naming_the_lost_protection(
    internal: internals.Internal,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    CASES[internal](monkeypatch)
    CASES[internal](monkeypatch)  # a second miss is not logged again
    warnings = [r.getMessage() for r in caplog.records if internal.path in r.getMessage()]
    assert len(warnings) == 1, caplog.text
    assert internal.protection in warnings[0] and "is lost" in warnings[0]
    assert internals.lost() == {internal.path: internal.protection}


def test_the_pinned_sdk_has_every_internal_a_forwarder_uses(tmp_path: Path) -> None:
    public, secret = fresh_keys()
    env = {"LANGFUSE_PUBLIC_KEY": public, "LANGFUSE_SECRET_KEY": secret}
    with FakeLangfuse() as fake:
        env["LANGFUSE_HOST"] = fake.url
        config = AgentConfig.load(env=env, telemetry_dir=tmp_path, langfuse_media_upload=True)
        obs = Observability.from_config(config)
        assert obs.forwarding
        obs.shutdown(5)
    assert internals.lost() == {}
