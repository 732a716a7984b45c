"""The provider registry: built-ins and third-party packages come in through the same entry-point group.

The third-party packages here are real distributions as far as `importlib.metadata` knows: a module and a
`.dist-info` folder with an `entry_points.txt`, on `sys.path` (or `PYTHONPATH` for a child process).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from loopback import Loopback
from wire import openai_stream, openai_usage

from orchestrator import Orchestrator, Settings, SlotConfig, UnknownModelError, __version__
from orchestrator._version import DIST_NAME
from orchestrator.config import PriceOverride
from orchestrator.cost.pricing import shipped_table
from orchestrator.models.ask import aask
from orchestrator.models.binding import catalog_names, resolve_profile
from orchestrator.providers import (
    GROUP,
    HttpProvider,
    ModelRequest,
    Provider,
    get_provider,
    provider_names,
)
from orchestrator.providers.http import aclose_clients, reset_model_states
from orchestrator.tracing.store import TraceStore

ROOT = Path(__file__).resolve().parent.parent
BUILTINS = {"local", "python", "openai", "anthropic", "openai-compat", "groq", "together", "mistral"}
BUILTINS |= {"ollama", "vllm"}

# A provider package as a third party would publish it, exactly as docs/providers.md shows it: its own
# price list, an OpenAI-compatible endpoint (the client reused from HttpProvider), registered as a class.
_EXAMPLE = re.search(
    r"```python\n# acme_orchestrator.py\n(.*?)```", (ROOT / "docs" / "providers.md").read_text(), re.DOTALL
)
assert _EXAMPLE is not None, "docs/providers.md lost its provider-plugin example"
ACME = _EXAMPLE[1]
SHAKY = "import shaky_sdk_that_is_not_installed  # noqa\nprovider = None\n"
ACME_PRICES = (2e-6, 8e-6)


def _distribution(site: Path, name: str, version: str, entry_points: dict[str, str]) -> None:
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = "".join(f"{k} = {v}\n" for k, v in entry_points.items())
    (info / "entry_points.txt").write_text(f"[{GROUP}]\n{lines}")


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Two installed plugin packages: acme-orchestrator (works) and shaky-orchestrator (fails to import)."""
    root = tmp_path / "site"
    root.mkdir()
    (root / "acme_orchestrator.py").write_text(ACME)
    (root / "shaky_orchestrator.py").write_text(SHAKY)
    _distribution(root, "acme-orchestrator", "1.2.0", {"acme": "acme_orchestrator:provider"})
    _distribution(root, "shaky-orchestrator", "0.3.0", {"shaky": "shaky_orchestrator:provider"})
    monkeypatch.syspath_prepend(str(root))
    yield root
    for module in ("acme_orchestrator", "shaky_orchestrator"):
        sys.modules.pop(module, None)


@pytest.fixture(autouse=True)
async def _clean(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    monkeypatch.setenv("ACME_API_KEY", "acme-test-key")
    reset_model_states()
    yield
    await aclose_clients()
    reset_model_states()


def test_the_builtins_are_declared_as_entry_points_of_this_distribution() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == DIST_NAME
    assert importlib.metadata.version(DIST_NAME) == __version__
    declared = project["entry-points"][GROUP]
    assert set(declared) == BUILTINS
    installed = importlib.metadata.distribution(DIST_NAME).entry_points.select(group=GROUP)
    assert {ep.name: ep.value for ep in installed} == declared  # `pip install -e .` is up to date
    assert set(provider_names()) >= BUILTINS
    assert all(isinstance(get_provider(name), Provider) for name in BUILTINS)


def test_an_unknown_prefix_lists_the_registered_ones(site: Path) -> None:
    with pytest.raises(UnknownModelError) as caught:
        resolve_profile("acmee:acme-small")
    message = str(caught.value)
    assert "unknown provider 'acmee' in model 'acmee:acme-small'; did you mean 'acme'?" in message
    assert "Registered providers: 'acme', 'anthropic'," in message and "'vllm'" in message


async def test_a_third_party_provider_is_priced_and_traced_like_a_builtin(
    site: Path, loopback: Loopback, settings: Settings
) -> None:
    loopback.push(
        openai_stream(["A card has not arrived."], openai_usage(120, 8)),  # summarize, through acme
        openai_stream(["We'll send a new card."], openai_usage(60, 12)),  # write, through openai-compat
    )
    same_price = PriceOverride(input=ACME_PRICES[0], output=ACME_PRICES[1])
    slots = {
        "summarize": SlotConfig(model="acme:acme-small", base_url=loopback.url + "/v1"),
        "write": SlotConfig(model="openai-compat:small", base_url=loopback.url + "/v1", prices=same_price),
    }
    orch = Orchestrator(settings=settings, slots=slots, graphs={"mine": "usergraphs.two_slots:build"})
    result = await orch.arun("mine", "My card never came.")
    assert result.status == "ok", result.error
    assert result.answer == "We'll send a new card."
    assert loopback.requests[0].headers["authorization"] == "Bearer acme-test-key"
    by_node = {n.node: n for n in result.ledger.by_node()}
    assert by_node["summarize"].model == "acme:acme-small"
    assert by_node["summarize"].cost_usd == pytest.approx(120 * 2e-6 + 8 * 8e-6)
    assert by_node["reply"].cost_usd == pytest.approx(60 * 2e-6 + 12 * 8e-6)
    orch.close()

    store = TraceStore(settings.traces_path)
    chats = {s["model"]: s for s in store.spans("run_id = ?", [result.run_id]) if s["kind"] == "chat"}
    acme, builtin = chats["acme:acme-small"], chats["openai-compat:small"]
    assert acme["name"] == "chat acme:acme-small" and acme["node"] == "summarize"
    assert acme["cost_usd"] == pytest.approx(by_node["summarize"].cost_usd)
    assert (acme["input_tokens"], acme["output_tokens"]) == (120, 8)
    assert acme["ttft_ms"] is not None
    # the same attributes as the built-in's span: nothing is recorded differently for a plugin
    attributes, builtin_attributes = json.loads(acme["attributes"]), json.loads(builtin["attributes"])
    assert set(attributes) == set(builtin_attributes)
    assert attributes["orchestrator.cost_usd"] == pytest.approx(acme["cost_usd"])
    store.close()

    loopback.push(openai_stream(["hi"], openai_usage(10, 1)))
    profile = resolve_profile("acme:acme-small", base_url=loopback.url + "/v1")
    asked = await aask(profile, "hi", settings=settings, max_tokens=8)
    assert asked.text == "hi" and asked.price_source == "acme price list"
    assert asked.cost_usd == pytest.approx(10 * 2e-6 + 1 * 8e-6) and asked.ttft_ms is not None


def test_a_broken_plugin_fails_only_its_own_prefix_and_names_its_package(
    site: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert {"acme", "shaky"} <= set(provider_names())
    assert "shaky_orchestrator" not in sys.modules  # listing imports nothing
    with pytest.raises(UnknownModelError) as caught:
        resolve_profile("shaky:model-x")
    message = str(caught.value)
    assert "shaky-orchestrator 0.3.0" in message and "ModuleNotFoundError" in message
    assert "shaky_sdk_that_is_not_installed" in message and "shaky_orchestrator:provider" in message
    # everything else still resolves
    assert resolve_profile("acme:acme-small", base_url="http://127.0.0.1:1/v1").prices is not None
    assert resolve_profile("local:qwen2.5-0.5b").prices is not None
    with pytest.raises(UnknownModelError, match=r"slot 'style': provider 'shaky'.*shaky-orchestrator"):
        Orchestrator(slots={"style": SlotConfig(model="shaky:model-x")}, tracing=False)
    # a listing skips it, with a log record naming the package
    names = catalog_names(shipped_table())
    assert "openai:gpt-4o-mini" in names and not any(n.startswith("shaky:") for n in names)
    assert any("shaky-orchestrator" in r.getMessage() for r in caplog.records)


def test_a_prefix_claimed_by_two_packages_names_both(site: Path) -> None:
    _distribution(site, "rival-orchestrator", "2.0.0", {"acme": "rival:provider"})
    with pytest.raises(UnknownModelError) as caught:
        resolve_profile("acme:acme-small")
    message = str(caught.value)
    assert "registered by more than one package" in message
    assert "acme-orchestrator 1.2.0" in message and "rival-orchestrator 2.0.0" in message


def test_a_plugin_is_found_by_a_fresh_cli_process(site: Path, loopback: Loopback, tmp_path: Path) -> None:
    loopback.push(openai_stream(["pong"], openai_usage(12, 1)))
    env = {
        **os.environ,
        "PYTHONPATH": str(site),
        "ORCH_TRACES": str(tmp_path / "t.db"),
    }
    base = [sys.executable, "-m", "orchestrator", "ask"]
    proc = subprocess.run(
        [*base, "acme:acme-small", "ping", "--base-url", loopback.url + "/v1", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout)
    assert answer["text"] == "pong" and answer["model"] == "acme:acme-small"
    assert answer["cost_usd"] == pytest.approx(12 * 2e-6 + 1 * 8e-6)

    broken = subprocess.run(
        [*base, "shaky:model-x", "ping"], capture_output=True, text=True, env=env, timeout=60
    )
    assert broken.returncode == 2 and "Traceback" not in broken.stderr
    assert "shaky-orchestrator 0.3.0" in broken.stderr


def test_providers_are_imported_only_when_their_prefix_is_used(site: Path) -> None:
    code = textwrap.dedent(
        """
        import sys
        from orchestrator import Settings
        from orchestrator.config import ModelConfig
        from orchestrator.providers import model_for, provider_names
        from orchestrator.models.binding import resolve_profile

        assert "acme" in provider_names() and "acme_orchestrator" not in sys.modules
        resolve_profile("local:qwen2.5-0.5b")  # a profile needs no llama-cpp
        p = resolve_profile("openai-compat:m", base_url="http://127.0.0.1:1/v1", prices=None)
        model_for(p, ModelConfig(model=p.name), Settings())
        print(sorted(m for m in ("llama_cpp", "orchestrator.providers.local", "acme_orchestrator")
                     if m in sys.modules))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    proc = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_http_provider_is_the_base_for_a_protocol_compatible_plugin() -> None:
    acme = HttpProvider("openai", default_base_url="https://api.acme.test/v1", api_key_env="ACME_API_KEY")
    request = ModelRequest("acme:m", "acme", "m", shipped_table(), prices=None, price_as="gpt-4o-mini")
    profile = acme.profile(request)
    assert profile.provider == "acme" and profile.base_url == "https://api.acme.test/v1"
    assert profile.key_required and profile.prices is not None
