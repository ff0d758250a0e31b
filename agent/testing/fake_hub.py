"""A fake Hugging Face Hub for tests: the few endpoints a dataset push uses, mocked with respx.

``huggingface_hub`` < 2 sends every request through httpx, so ``respx`` sees them all. The fake
keeps the repository's files, counts every request and commit, and enforces the Hub's commit
budget (128 commits per hour per repository by default): past it, a commit is answered 429 with
a ``Retry-After`` naming when the oldest commit of the window expires, exactly like a refusal
(nothing is stored). Time comes from ``clock`` so tests can simulate hours without sleeping.

    with respx.mock(assert_all_called=False) as router:
        hub = FakeHub(router, "acme/telemetry", clock=fake_clock)
        ...
        hub.rows()   # every row of every Parquet part, decoded
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import httpx

ENDPOINT = "https://huggingface.co"


@dataclass
class Commit:
    at: float
    files: dict[str, bytes]
    deleted: list[str] = field(default_factory=list)


class FakeHub:
    def __init__(
        self,
        router: Any,
        repo_id: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        commits_per_hour: int = 128,
        fail_commits: int = 0,
        lose_reply_of_commits: int = 0,
        exists: bool = True,
    ) -> None:
        self.repo_id = repo_id
        # False: the repository is created by the first create_repo; until then the Hub answers
        # 404 (RepoNotFound) about it, as the real one does.
        self.exists = exists
        self.clock = clock
        self.commits_per_hour = commits_per_hour
        self.files: dict[str, bytes] = {}
        self.commits: list[Commit] = []
        self.refused: list[tuple[float, float, list[str]]] = []  # (at, retry_after, paths)
        self.attempts: list[tuple[float, int, list[str]]] = []  # every commit: (at, status, paths)
        self.requests: Counter[str] = Counter()
        self.uploads: Counter[str] = Counter()  # path -> times it was committed
        self.fail_commits = fail_commits  # answer 503 to the next N commits (nothing stored)
        self.lose_reply_of_commits = lose_reply_of_commits  # store, then answer 500
        self._window: deque[float] = deque()
        self._lock = threading.Lock()
        base = f"{ENDPOINT}/api/datasets/{repo_id}"
        router.post(f"{ENDPOINT}/api/repos/create").mock(side_effect=self._create_repo)
        router.post(f"{ENDPOINT}/api/validate-yaml").mock(side_effect=self._validate_yaml)
        router.post(url__regex=rf"^{base}/preupload/[^/]+$").mock(side_effect=self._preupload)
        router.post(url__regex=rf"^{base}/commit/[^/]+$").mock(side_effect=self._commit)
        router.post(url__regex=rf"^{base}/paths-info/[^/]+$").mock(side_effect=self._paths_info)

    # -- endpoints --

    def _create_repo(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.requests["create_repo"] += 1
            self.exists = True
        return httpx.Response(
            200, json={"url": f"{ENDPOINT}/datasets/{self.repo_id}", "name": self.repo_id}
        )

    def _validate_yaml(self, request: httpx.Request) -> httpx.Response:
        """huggingface_hub asks the Hub to check a README's YAML before committing it."""
        from huggingface_hub import DatasetCard

        with self._lock:
            self.requests["validate_yaml"] += 1
        try:
            DatasetCard(json.loads(request.content)["content"])
        except Exception as exc:
            return httpx.Response(400, json={"errors": [{"message": str(exc)}], "warnings": []})
        return httpx.Response(200, json={"errors": [], "warnings": []})

    def _preupload(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.requests["preupload"] += 1
        files = json.loads(request.content)["files"]
        return httpx.Response(
            200,
            json={
                "files": [
                    {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                    for f in files
                ]
            },
        )

    def _paths_info(self, request: httpx.Request) -> httpx.Response:
        form = parse_qs(request.content.decode())
        with self._lock:
            self.requests["paths_info"] += 1
            if not self.exists:
                return httpx.Response(
                    404,
                    headers={"X-Error-Code": "RepoNotFound"},
                    json={"error": "Repository not found"},
                )
            out = [
                {
                    "type": "file",
                    "path": p,
                    "size": len(self.files[p]),
                    "oid": git_blob_sha1(self.files[p]),
                }
                for p in form.get("paths", [])
                if p in self.files
            ]
        return httpx.Response(200, json=out)

    def _commit(self, request: httpx.Request) -> httpx.Response:
        now = self.clock()
        files: dict[str, bytes] = {}
        deleted: list[str] = []
        for raw in request.content.decode().splitlines():
            item = json.loads(raw)
            if item.get("key") == "file":
                files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
            elif item.get("key") == "deletedFile":
                deleted.append(item["value"]["path"])
        with self._lock:
            self.requests["commit"] += 1
            while self._window and self._window[0] <= now - 3600.0:
                self._window.popleft()
            if len(self._window) >= self.commits_per_hour:
                retry_after = max(1.0, self._window[0] + 3600.0 - now)
                self.refused.append((now, retry_after, sorted(files)))
                self.attempts.append((now, 429, sorted(files)))
                return httpx.Response(
                    429,
                    headers={"Retry-After": str(int(retry_after + 0.999))},
                    json={"error": "You have exceeded the rate limit for repository commits"},
                )
            if self.fail_commits > 0:
                self.fail_commits -= 1
                self.attempts.append((now, 503, sorted(files)))
                return httpx.Response(503, json={"error": "Service Unavailable"})
            self.attempts.append((now, 200, sorted(files)))
            self._window.append(now)
            self.commits.append(Commit(now, files, deleted))
            for path, content in files.items():
                self.files[path] = content
                self.uploads[path] += 1
            for path in deleted:
                self.files.pop(path, None)
            if self.lose_reply_of_commits > 0:
                self.lose_reply_of_commits -= 1
                return httpx.Response(500, json={"error": "Internal Error"})
        oid = hashlib.sha1(repr(now).encode(), usedforsecurity=False).hexdigest()
        return httpx.Response(
            200,
            json={
                "success": True,
                "commitOid": oid,
                "commitUrl": f"{ENDPOINT}/datasets/{self.repo_id}/commit/{oid}",
            },
        )

    # -- what a test looks at --

    def data_files(self) -> dict[str, bytes]:
        return {p: c for p, c in self.files.items() if p.startswith("data/")}

    def rows(self) -> list[dict[str, Any]]:
        """Every row of every data file in the repository (Parquet or JSON Lines)."""
        out: list[dict[str, Any]] = []
        for path, content in sorted(self.data_files().items()):
            if path.endswith(".parquet"):
                import pyarrow.parquet as pq

                out.extend(pq.read_table(io.BytesIO(content)).to_pylist())
            else:
                out.extend(json.loads(x) for x in content.decode().splitlines() if x.strip())
        return out

    def max_commits_in_an_hour(self) -> int:
        times = sorted(c.at for c in self.commits)
        best, j = 0, 0
        for i, t in enumerate(times):
            while times[j] <= t - 3600.0:
                j += 1
            best = max(best, i - j + 1)
        return best


def git_blob_sha1(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content, usedforsecurity=False).hexdigest()
