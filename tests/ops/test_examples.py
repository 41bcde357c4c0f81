"""The README's examples: the strategy file runs (a fresh registry, real ticks on SQLite), the
README's Python excerpt is the file's text, and every shell command in the examples and in
the README's "Quickstart" and "Operating bkit" sections is a real bkit or celery command."""

from __future__ import annotations

import importlib
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.ops.conftest import REPO, OpsEnv, check_command

EXAMPLES = REPO / "examples"
README = REPO / "README.md"


def _sections(*titles: str) -> str:
    text = README.read_text(encoding="utf-8")
    parts = re.split(r"(?m)^## ", text)
    chosen = [p for p in parts if p.split("\n", 1)[0].strip() in titles]
    assert len(chosen) == len(titles), f"README lacks one of {titles}"
    return "\n".join(chosen)


def _blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)


def _commands(script: str) -> list[list[str]]:
    """The bkit / celery commands of a shell text (continuations joined, comments dropped),
    also when run as `docker compose exec SERVICE …`."""
    found = []
    for line in script.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        while words and (words[0] == "exec" or re.match(r"^[A-Z_][A-Z0-9_]*=", words[0])):
            words = words[1:]
        if words[:3] == ["docker", "compose", "exec"]:
            words = words[4:]
        if words and Path(words[0]).name in ("bkit", "celery"):
            found.append(words)
    return found


@pytest.fixture
def fresh_my_strategy(sqlite_ops: OpsEnv, monkeypatch: pytest.MonkeyPatch) -> Any:
    """`examples/` on sys.path and `my_strategy` not imported yet (the registry is fresh)."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    for name in ("my_strategy", "try_my_strategy"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    return importlib.import_module("try_my_strategy")


def test_my_strategy_trades_through_live_ticks(fresh_my_strategy: Any,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from bkit.core.registry import REGISTRY
    from bkit.live import Live

    report = fresh_my_strategy.main(minutes=360)
    printed = capsys.readouterr().out
    assert printed.startswith("ticked 360 minutes: {")
    assert "my-momentum" in REGISTRY.strategies and "my-paper" in REGISTRY.exchanges
    data = Live.get_data("XRP/ETH", "my-momentum", "my-paper")
    assert data["total_closed"] >= 2
    assert report.startswith("# Paper report: my-momentum · my-paper · XRP/ETH")
    assert f"- Closed signals: {data['total_closed']}" in report


def test_readme_python_is_the_example_files_text() -> None:
    blocks = _blocks(_sections("Quickstart"), "python")
    assert blocks
    for block in blocks:
        first, _, body = block.partition("\n")
        match = re.match(r"# (examples/\S+\.py)", first)
        assert match, f"a README Python block must name its example file: {first!r}"
        assert body.strip() in (REPO / match.group(1)).read_text(encoding="utf-8")


def test_shell_examples_are_valid_and_run_real_commands(celery_facts: dict[str, Any]) -> None:
    scripts = sorted(EXAMPLES.glob("*.sh"))
    assert [s.name for s in scripts] == ["run_embedded.sh", "scale_out.sh"]
    for script in scripts:
        subprocess.run(["bash", "-n", str(script)], check=True, timeout=10)
        commands = _commands(script.read_text())
        assert len(commands) >= 3, script
        for argv in commands:
            check_command(argv, celery_facts["queues"])
    scale = [" ".join(c) for c in _commands((EXAMPLES / "scale_out.sh").read_text())]
    assert sum(c.startswith("celery -A bkit beat") for c in scale) == 1
    assert any(c.startswith("bkit flower") for c in scale)


def test_readme_commands_are_real(celery_facts: dict[str, Any]) -> None:
    text = _sections("Quickstart", "Operating bkit")
    commands = [c for block in _blocks(text, "bash") for c in _commands(block)]
    programs = [check_command(argv, celery_facts["queues"])[0] for argv in commands]
    assert programs.count("bkit") >= 20 and "celery" in programs
    for script in re.findall(r"(examples/\S+\.(?:sh|py))", text):
        assert (REPO / script).exists(), script


@pytest.mark.integration
def test_the_example_module_loads_in_the_admin_script(sqlite_ops: OpsEnv) -> None:
    listed = sqlite_ops.bkit("strategies", BKIT_STRATEGIES="examples.my_strategy")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[2].split()[:2] == ["my-momentum", "5m"]
    enabled = sqlite_ops.bkit("enable", "my-momentum", "XRP/ETH",
                              BKIT_STRATEGIES="examples.my_strategy")
    assert enabled.returncode == 0, enabled.stderr  # one exchange: --exchange may be omitted
