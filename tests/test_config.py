"""Manifest, settings precedence, model names, profiles and prices."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator import Settings, SlotConfig, load_manifest, resolve_profile
from orchestrator.cost.pricing import Prices, Usage, cost_usd
from orchestrator.errors import ManifestError, UnknownModelError
from orchestrator.models.binding import bind_slot
from orchestrator.profiles import UnknownModelWarning

ROOT = Path(__file__).resolve().parent.parent


def _project(tmp_path: Path, body: str) -> Path:
    (tmp_path / "pyproject.toml").write_text(body)
    return tmp_path


def test_the_repo_manifest_loads() -> None:
    manifest = load_manifest(ROOT)
    assert manifest.default_graph == "assistant"
    assert manifest.slots["controller"].role == "racehorse"
    assert manifest.slots["classify"].model == "local:qwen2.5-0.5b"


def test_unknown_key_is_named(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"\[tool.orchestrator\].grpahs: Extra inputs"):
        load_manifest(_project(tmp_path, "[tool.orchestrator]\ngrpahs = {}\n"))


def test_bad_type_is_named_with_the_value(tmp_path: Path) -> None:
    body = '[tool.orchestrator.limits]\nmax_steps = "lots"\n'
    with pytest.raises(ManifestError, match=r"limits.max_steps: .*got 'lots'"):
        load_manifest(_project(tmp_path, body))


def test_bad_role(tmp_path: Path) -> None:
    body = '[tool.orchestrator.slots]\ncontroller = { model = "local:qwen2.5-1.5b", role = "boss" }\n'
    with pytest.raises(ManifestError, match=r"slots\.controller\.role"):
        load_manifest(_project(tmp_path, body))


def test_missing_section_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"no \[tool.orchestrator\] section"):
        load_manifest(_project(tmp_path, '[project]\nname = "x"\n'))
    with pytest.raises(ManifestError, match="not valid TOML"):
        load_manifest(_project(tmp_path, "[tool.orchestrator\n"))


def test_settings_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = _project(tmp_path, '[tool.orchestrator]\ntraces = "from-manifest.db"\n')
    manifest = load_manifest(project)
    monkeypatch.delenv("ORCH_TRACES", raising=False)
    monkeypatch.chdir(tmp_path.parent)
    # a manifest's relative path is relative to its project folder, not to the current folder
    assert Settings.resolve(manifest).traces_path == project.resolve() / "from-manifest.db"
    monkeypatch.setenv("ORCH_TRACES", "from-env.db")
    assert Settings.resolve(manifest).traces_path == Path("from-env.db")
    assert Settings.resolve(manifest, traces_path="from-kwarg.db").traces_path == Path("from-kwarg.db")
    assert Settings.resolve(manifest, traces_path=None).traces_path == Path("from-env.db")


def test_unknown_provider_suggests() -> None:
    with pytest.raises(UnknownModelError, match=r"unknown provider 'opneai'.*did you mean 'openai'"):
        resolve_profile("opneai:gpt-4o-mini")


def test_unknown_local_model_suggests() -> None:
    expected = r"unknown model 'qwen2\.5-1\.5' .*did you mean 'qwen2\.5-1\.5b'"
    with pytest.raises(UnknownModelError, match=expected):
        resolve_profile("local:qwen2.5-1.5")


def test_name_without_provider() -> None:
    with pytest.raises(UnknownModelError, match="not of the form 'provider:model'"):
        resolve_profile("gpt-4o-mini")


def test_slot_error_names_the_slot() -> None:
    with pytest.raises(UnknownModelError, match="slot 'classify': unknown model 'qwen-tiny'"):
        bind_slot("classify", SlotConfig(model="local:qwen-tiny"))


def test_local_models_are_priced_zero_explicitly() -> None:
    p = resolve_profile("local:qwen2.5-0.5b")
    assert p.prices is not None and (p.prices.input, p.prices.output) == (0.0, 0.0)
    assert "explicit" in p.price_source


def test_api_model_prices_from_the_shipped_table() -> None:
    p = resolve_profile("openai:gpt-4o-mini")
    assert p.prices is not None
    assert (p.prices.input, p.prices.output, p.prices.cache_read) == (1.5e-07, 6e-07, 7.5e-08)
    assert p.context_window == 128000


def test_unknown_api_model_runs_with_null_price_and_a_warning() -> None:
    with pytest.warns(UnknownModelWarning, match="gpt-9-turbo"):
        p = resolve_profile("openai:gpt-9-turbo")
    assert p.prices is None
    assert resolve_profile("openai:gpt-9-turbo", price_as="gpt-4o-mini").prices is not None


def test_cost_prices_cached_tokens_at_their_rate() -> None:
    prices = Prices(input=1.0, output=10.0, cache_read=0.1, cache_write=1.25)
    usage = Usage(input_tokens=100, output_tokens=5, cache_read_tokens=60, cache_write_tokens=20)
    assert cost_usd(usage, prices) == pytest.approx(20 * 1.0 + 60 * 0.1 + 20 * 1.25 + 5 * 10.0)
    assert cost_usd(usage, None) is None


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{not json", "not valid JSON"),
        ('{"dependencies": ["."]}', 'no "graphs" map'),
        ('{"graphs": {"g": "no_colon"}}', "graph 'g' must be"),
        ('{"graphs": {"g": "./g.py:graph"}, "env": ".env.missing"}', "names the env file"),
    ],
)
def test_a_bad_langgraph_json_is_a_clear_error(tmp_path: Path, text: str, problem: str) -> None:
    (tmp_path / "langgraph.json").write_text(text)
    with pytest.raises(ManifestError, match=problem):
        load_manifest(tmp_path)


def test_a_slot_overrides_capabilities_over_the_profile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-unused")  # the client is made, never called
    body = (
        "[tool.orchestrator.slots]\n"
        'controller = { model = "openai:gpt-4o-mini", role = "racehorse", '
        "capabilities = { tool_calling = false, json_schema = false } }\n"
        'extract = { model = "openai:gpt-4o-mini", fallback = [{ model = "vllm:qwen", '
        "capabilities = { parallel_tool_calls = true } }] }\n"
    )
    manifest = load_manifest(_project(tmp_path, body))
    caps = bind_slot("controller", manifest.slots["controller"]).profile.capabilities
    assert not caps.tool_calling and not caps.json_schema
    assert caps.streaming_usage and caps.parallel_tool_calls  # the rest stays the profile's
    plain = resolve_profile("openai:gpt-4o-mini").capabilities
    assert plain.tool_calling and plain.json_schema
    with pytest.warns(UnknownModelWarning):
        extract = bind_slot("extract", manifest.slots["extract"])
    assert extract.fallbacks[0][0].capabilities.parallel_tool_calls
    with pytest.warns(UnknownModelWarning):
        assert not resolve_profile("vllm:qwen").capabilities.parallel_tool_calls

    from orchestrator.providers import model_for
    from orchestrator.providers.openai import OpenAIChatModel

    model = model_for(
        bind_slot("controller", manifest.slots["controller"]).profile,
        manifest.slots["controller"],
        Settings(),
    )
    assert isinstance(model, OpenAIChatModel) and not model.json_schema and not model.tool_calling
    assert model.strict  # OpenAI's own API gets strict schemas


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        (
            "{ tool_call = false }",
            r"unknown capability 'tool_call' \(did you mean 'tool_calling'\?\); the "
            r"capabilities are: tool_calling, json_schema, grammar, prefill",
        ),
        ("{ vision = true }", r"unknown capability 'vision'; the capabilities are: tool_calling"),
        ('{ json_schema = "no" }', r"\.json_schema: Input should be a valid boolean"),
    ],
)
def test_an_unknown_or_mistyped_capability_is_named(tmp_path: Path, table: str, problem: str) -> None:
    body = f'[tool.orchestrator.slots]\nc = {{ model = "local:qwen2.5-0.5b", capabilities = {table} }}\n'
    with pytest.raises(ManifestError, match=r"slots\.c\.capabilities.*" + problem):
        load_manifest(_project(tmp_path, body))
