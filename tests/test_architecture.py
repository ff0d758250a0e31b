"""The import rules of ARCHITECTURE.md, enforced by reading every module under agent/ with ``ast``.

Each rule is one row of ``RULES``: the modules it binds (by dotted prefix), the modules they
must not import, and the exceptions. Lazy imports inside functions count like any other. A
prefix that names no module yet (a room another change creates) binds nothing: the table
holds today's paths and the target layout's side by side, so it keeps holding while the rooms
move. ``COMPLETION_CALLERS`` and ``INTERNALS`` are the two rules that are not about our own
modules: who calls litellm's completion functions, and who imports other libraries' private
modules.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Rule:
    """Modules under ``importers`` (minus ``exempt``) import nothing under ``forbidden``
    except what is under ``allowed``."""

    why: str
    importers: tuple[str, ...]
    forbidden: tuple[str, ...]
    allowed: tuple[str, ...] = ()
    exempt: tuple[str, ...] = ()


# The sinks and what builds them: the core path (llm -> telemetry -> session) never reaches them.
SINKS = (
    "agent.core.observability",
    "agent.core.hf_dataset",
    "agent.core.dataset",
    "agent.core.forwarding",
)
# Plain data inside a sink's package that the core path may read (no sink is loaded with it).
PLAIN_DATA = ("agent.core.dataset.pricing",)
FORWARDING = ("agent.core.forwarding",)
PRIVACY = ("agent.core.privacy",)
EDGE = ("agent.main", "agent.cli")
# Plain building blocks every room may use: they import nothing above themselves.
SHARED = (
    "agent.core.guard",
    "agent.core.batch",
    "agent.core.encodable",
    "agent.core.messages",
    "agent.core.internals",
)
CORE_PATH = ("agent.core.llm", "agent.core.telemetry", "agent.core.session")

RULES = (
    Rule(
        "nothing imports the entry point; only the entry point imports the CLI",
        importers=("agent",),
        forbidden=EDGE,
        exempt=EDGE,
    ),
    Rule(
        "telemetry and the session never import sinks: sinks subscribe to them",
        importers=("agent.core.telemetry", "agent.core.session"),
        forbidden=SINKS,
        allowed=PLAIN_DATA,
    ),
    Rule(
        "the LLM choke point and the agent loop do not know the sinks or the gate",
        importers=("agent.core.llm", "agent.core.agent_loop"),
        forbidden=SINKS,
        allowed=PLAIN_DATA,
    ),
    Rule(
        "the forwarding wing never imports the agent loop, the tools or the CLI",
        importers=FORWARDING,
        forbidden=("agent.core.agent_loop", "agent.tools", *EDGE),
    ),
    Rule(
        "privacy sits below the core path and the sinks: of the rest, only the shared "
        "building blocks and the records",
        importers=PRIVACY,
        forbidden=(
            *CORE_PATH,
            "agent.core.agent_loop",
            "agent.tools",
            *SINKS,
            "agent.config",
            *EDGE,
        ),
    ),
    Rule(
        "tools report through the telemetry hook and know nothing above it",
        importers=("agent.tools",),
        forbidden=("agent.core.agent_loop", "agent.core.llm", *SINKS, *EDGE),
    ),
    Rule(
        "the core path never imports the agent loop or the tools",
        importers=CORE_PATH,
        forbidden=("agent.core.agent_loop", "agent.tools"),
    ),
    Rule(
        "configuration sits below the core: of it, only the guard's warn-once",
        importers=("agent.config",),
        forbidden=("agent.core", "agent.tools", *EDGE),
        allowed=("agent.core.guard",),
    ),
    Rule(
        "test doubles stand alone: agent.testing imports nothing of the agent",
        importers=("agent.testing",),
        forbidden=("agent.core", "agent.config", "agent.tools", *EDGE),
    ),
    Rule(
        "the shared building blocks import nothing above them",
        importers=SHARED,
        forbidden=(
            *CORE_PATH,
            "agent.core.agent_loop",
            *SINKS,
            "agent.core.privacy",
            "agent.tools",
            "agent.config",
            *EDGE,
        ),
        allowed=SHARED,
    ),
)

# Only these modules call litellm's completion functions (DESIGN.md: one choke point).
COMPLETION_CALLERS = ("agent.core.llm",)
COMPLETION_FUNCTIONS = frozenset(
    {
        "completion",
        "acompletion",
        "text_completion",
        "atext_completion",
        "batch_completion",
        "responses",
        "aresponses",
    }
)

# Private modules of other libraries (a name part with a leading underscore, or litellm's
# internal package) are imported only by agent/core/internals/<library>.py. Today's other
# importers are listed until their wing moves them (the lead empties this list after merging).
LIBRARIES = ("litellm", "langfuse", "opentelemetry")
INTERNALS = ("agent.core.internals",)
INTERNALS_NOT_MOVED_YET: tuple[str, ...] = ()


# -- reading the modules --


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def agent_sources(root: Path = ROOT) -> dict[str, str]:
    """Every module under agent/, by dotted name."""
    return {module_name(p, root): p.read_text() for p in sorted((root / "agent").rglob("*.py"))}


def _resolved(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    """The absolute module of a ``from ... import`` (relative ones resolved)."""
    if not node.level:
        return node.module or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def imports_of(module: str, source: str, modules: Iterable[str]) -> Iterator[tuple[str, int]]:
    """``(imported module, line)`` for every import in ``source``, anywhere in the file. A name
    imported from a package is the submodule of that name when there is one."""
    known = set(modules)
    is_package = any(m.startswith(module + ".") for m in known)
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = _resolved(module, node, is_package)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                yield (sub if sub in known else base), node.lineno


def _under(name: str, prefixes: Iterable[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def violations(sources: Mapping[str, str], rules: Iterable[Rule] = RULES) -> list[str]:
    """One line per import that breaks a rule: ``module:line imports target (why)``."""
    found = []
    for module, source in sources.items():
        imports = list(imports_of(module, source, sources))
        for rule in rules:
            if not _under(module, rule.importers) or _under(module, rule.exempt):
                continue
            for target, line in imports:
                if _under(target, rule.forbidden) and not _under(target, rule.allowed):
                    found.append(f"{module}:{line} imports {target} ({rule.why})")
    return found


def completion_calls(sources: Mapping[str, str]) -> list[str]:
    """Uses of litellm's completion functions outside ``COMPLETION_CALLERS``."""
    found = []
    for module, source in sources.items():
        if _under(module, COMPLETION_CALLERS):
            continue
        for node in ast.walk(ast.parse(source)):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "litellm"
                and node.attr in COMPLETION_FUNCTIONS
            ):
                found.append(f"{module}:{node.lineno} uses litellm.{node.attr}")
            elif isinstance(node, ast.ImportFrom) and (node.module or "") == "litellm":
                for alias in node.names:
                    if alias.name in COMPLETION_FUNCTIONS:
                        found.append(f"{module}:{node.lineno} imports litellm.{alias.name}")
    return found


def _private(target: str) -> bool:
    parts = target.split(".")
    return parts[0] in LIBRARIES and (
        any(p.startswith("_") and not p.startswith("__") for p in parts[1:])
        or target.startswith("litellm.litellm_core_utils")
    )


def private_imports(sources: Mapping[str, str]) -> list[str]:
    """Imports of other libraries' private modules or names outside ``INTERNALS``."""
    found = []
    for module, source in sources.items():
        if _under(module, (*INTERNALS, *INTERNALS_NOT_MOVED_YET)):
            continue
        for target, line in imports_of(module, source, sources):
            if _private(target):
                found.append(f"{module}:{line} imports {target}")
    return found


# -- the rules hold --


def test_the_import_rules_hold() -> None:
    assert violations(agent_sources()) == []


def test_only_llm_calls_litellms_completion_functions() -> None:
    assert completion_calls(agent_sources()) == []


def test_other_libraries_private_modules_only_through_internals() -> None:
    assert private_imports(agent_sources()) == []


def test_every_rule_binds_a_module_of_today_or_of_the_target_layout() -> None:
    modules = agent_sources()
    bound = [r.why for r in RULES if any(_under(m, r.importers) for m in modules)]
    assert bound == [r.why for r in RULES]


# -- and would catch a break --


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("agent.core.telemetry", "from agent.core.dataset import sink", "agent.core.dataset.sink"),
        ("agent.core.session", "def f():\n    import agent.core.forwarding.logger", "forwarding"),
        ("agent.core.forwarding.logger", "from agent.core.agent_loop import Agent", "agent_loop"),
        ("agent.core.forwarding.build", "from ..agent_loop import Agent", "agent_loop"),
        ("agent.core.privacy.walker", "from agent.core import telemetry", "agent.core.telemetry"),
        ("agent.core.privacy.redaction", "from ..forwarding import engine", "forwarding"),
        ("agent.core.privacy.spec", "from agent.config import AgentConfig", "agent.config"),
        ("agent.tools.sandbox", "from agent.cli.output import warn", "agent.cli.output"),
        ("agent.core.observability", "import agent.main", "agent.main"),
        ("agent.config.layers", "from agent.core import telemetry", "agent.core.telemetry"),
        ("agent.testing.fake_hub", "from agent.core.session import Event", "agent.core.session"),
        ("agent.core.batch", "from agent.core.session import Event", "agent.core.session"),
    ],
)
def test_a_forbidden_import_is_reported(module: str, source: str, expected: str) -> None:
    sources = {**agent_sources(), module: source}
    found = [v for v in violations(sources) if v.startswith(f"{module}:")]
    assert found and expected in found[0], found


def test_allowed_and_exempt_imports_are_not_reported() -> None:
    sources = {
        **agent_sources(),
        "agent.config.layers": "from agent.core.guard import warn_once",
        "agent.cli.run": "from agent.core.agent_loop import Agent\nfrom agent.cli import output",
    }
    assert violations(sources) == []


def test_a_completion_call_or_a_private_import_elsewhere_is_reported() -> None:
    sources = {
        "agent.core.agent_loop": "import litellm\nlitellm.acompletion(model='m')",
        "agent.tools.base": "from litellm import completion",
        "agent.core.llm": "import litellm\nlitellm.completion(model='m')",
    }
    assert completion_calls(sources) == [
        "agent.core.agent_loop:2 uses litellm.acompletion",
        "agent.tools.base:1 imports litellm.completion",
    ]
    private = {
        "agent.core.session": "from langfuse._client.attributes import x",
        "agent.core.guard": "from litellm.litellm_core_utils.logging_worker import W",
        "agent.core.internals.langfuse": "from langfuse._client.resource_manager import M",
        "agent.core.telemetry": "from opentelemetry.sdk.trace import TracerProvider",
    }
    assert [v.split(" ")[0] for v in private_imports(private)] == [
        "agent.core.session:1",
        "agent.core.guard:1",
    ]
