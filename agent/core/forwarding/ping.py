"""``ml-intern observability check --ping``: one authenticated round trip to a LangFuse host.

Contract: ``ping_langfuse(settings, traces_endpoint=..., timeout=...)`` sends ``GET
/api/public/projects`` with the keys (what the SDK's ``auth_check`` does, with the headers the
forwarder sends: ``otlp.langfuse_headers``), then a ``GET`` of the OTLP traces endpoint (which
sends no data: a LangFuse server older than 3.22, or a wrong path, answers 404). It returns a
``PingResult`` whose ``problem`` tells the failures apart (``dns``, ``refused``, ``tls``,
``timeout``, ``connection``: named by ``agent.core.forwarding.network``, as the exporter names
them; ``unauthorized``, ``forbidden``, ``not_langfuse``, ``no_project``, ``http_error``,
``no_otlp``), never raises for network conditions, and never puts the secret key in a message.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from agent.core.forwarding.network import network_cause
from agent.core.forwarding.otlp import destination
from agent.core.forwarding.otlp.destination import LangfuseKeys

__all__ = ["CLOUD_REGIONS", "PROJECTS_PATH", "PingResult", "ping_langfuse"]

CLOUD_REGIONS: dict[str, str] = {
    "EU": "https://cloud.langfuse.com",
    "US": "https://us.cloud.langfuse.com",
    "Japan": "https://jp.cloud.langfuse.com",
    "HIPAA": "https://hipaa.cloud.langfuse.com",
}
PROJECTS_PATH = "/api/public/projects"
# Network failures ping names by their own kind; any other (a reset, a non-HTTP answer ...) is
# reported as "connection".
_NETWORK_PROBLEMS = frozenset({"dns", "refused", "tls", "timeout"})


@dataclass
class PingResult:
    """What ``ping_langfuse`` found. ``problem`` names the failure (None on success)."""

    ok: bool
    message: str
    problem: str | None = None
    status: int | None = None
    project: str | None = None
    elapsed_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "problem": self.problem,
            "status": self.status,
            "project": self.project,
            "message": self.message,
            "elapsed_s": round(self.elapsed_s, 3),
        }


def _network_problem(exc: BaseException, where: str, timeout: float) -> PingResult:
    cause = network_cause(exc, host=urlsplit(where).hostname or where, timeout_s=timeout)
    problem = cause.kind if cause.kind in _NETWORK_PROBLEMS else "connection"
    detail = f" ({exc})" if problem == "connection" and str(exc) else ""
    return PingResult(False, f"cannot reach {where}: {cause.text}{detail}", problem)


def _unauthorized(host: str) -> PingResult:
    others = [f"{name} {url}" for name, url in CLOUD_REGIONS.items() if url != host.rstrip("/")]
    where = "this region" if host.rstrip("/") in CLOUD_REGIONS.values() else "this server"
    return PingResult(
        False,
        f"401 Unauthorized: {host} rejected the keys. Check LANGFUSE_PUBLIC_KEY and "
        f"LANGFUSE_SECRET_KEY (a pair from one project). Keys only work in the LangFuse Cloud "
        f"region or server that issued them: if they are not from {where}, set LANGFUSE_HOST "
        f"to the one that did ({', '.join(others)}, or your self-hosted URL).",
        "unauthorized",
        401,
    )


def _refused_answer(host: str, response: httpx.Response) -> PingResult | None:
    """The failure a non-2xx answer to the projects request means, or None for a 2xx."""
    status = response.status_code
    if status == 401:
        return _unauthorized(host)
    if status == 403:
        return PingResult(
            False,
            f"403 Forbidden: {host} knows the keys but refuses this request (a key without API "
            "access, an organisation-level key, or a proxy or WAF in front of LangFuse)",
            "forbidden",
            403,
        )
    if 300 <= status < 400:
        location = response.headers.get("location", "elsewhere")
        return PingResult(
            False,
            f"{host} redirects (HTTP {status}) to {location}: set LANGFUSE_HOST to the URL "
            "LangFuse is served at",
            "not_langfuse",
            status,
        )
    if status == 404:
        return PingResult(
            False,
            f"HTTP {status} for {PROJECTS_PATH}: {host} is not a LangFuse API (a wrong host or "
            "path prefix?)",
            "not_langfuse",
            status,
        )
    if not 200 <= status < 300:
        return PingResult(False, f"{host} answered HTTP {status}", "http_error", status)
    return None


def _project_names(host: str, response: httpx.Response) -> list[str] | PingResult:
    try:
        projects = response.json().get("data")
        names = [str(p.get("name") or p.get("id")) for p in projects]
    except Exception:
        return PingResult(
            False,
            f"{host} answered HTTP {response.status_code} but not as LangFuse does (no JSON "
            "project list): a wrong host, or a login page in front of it?",
            "not_langfuse",
            response.status_code,
        )
    if not names:
        return PingResult(False, "the keys are valid but belong to no project", "no_project")
    return names


def _probe_otlp(client: httpx.Client, endpoint: str, project: str, timeout: float) -> PingResult:
    try:
        probe = client.get(endpoint)
    except httpx.HTTPError as exc:
        result = _network_problem(exc, endpoint, timeout)
        result.message = f"the keys work, but the OTLP endpoint does not: {result.message}"
        result.project = project
        return result
    if probe.status_code == 404:
        return PingResult(
            False,
            f"the keys work (project {project!r}), but {endpoint} answered 404: a LangFuse "
            "server older than 3.22 has no OTLP endpoint (upgrade it), or the traces endpoint "
            "override is wrong",
            "no_otlp",
            404,
            project,
        )
    return PingResult(
        True,
        f"authenticated to project {project!r}; OTLP endpoint {endpoint} is there",
        project=project,
    )


def _round_trip(
    client: httpx.Client, settings: LangfuseKeys, endpoint: str, timeout: float
) -> PingResult:
    try:
        response = client.get(settings.host + PROJECTS_PATH)
    except httpx.HTTPError as exc:
        return _network_problem(exc, settings.host, timeout)
    refused = _refused_answer(settings.host, response)
    if refused is not None:
        return refused
    names = _project_names(settings.host, response)
    if isinstance(names, PingResult):
        return names
    result = _probe_otlp(client, endpoint, names[0], timeout)
    if result.ok:
        result.status = response.status_code
    return result


def ping_langfuse(
    settings: LangfuseKeys,
    *,
    traces_endpoint: str | None = None,
    timeout: float = 5.0,
    transport: httpx.BaseTransport | None = None,
) -> PingResult:
    """One authenticated round trip and an OTLP endpoint check (see the module docstring)."""
    started = time.monotonic()
    with httpx.Client(
        timeout=httpx.Timeout(timeout),
        trust_env=False,
        follow_redirects=False,
        transport=transport,
        headers={**destination.langfuse_headers(settings), "Accept": "application/json"},
    ) as client:
        endpoint = traces_endpoint or destination.traces_endpoint(settings.host)
        result = _round_trip(client, settings, endpoint, timeout)
    result.elapsed_s = time.monotonic() - started
    result.message = result.message.replace(destination.secret_key(settings), "[secret key]")
    return result
