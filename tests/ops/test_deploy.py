"""docker-compose.yaml, the Dockerfile, .dockerignore and .env.example, checked without a
Docker engine: every command is a real entry point of the project, every BKIT_* name is a
setting (or a secret read from the environment), and no secret is baked into the image."""

from __future__ import annotations

import re
import shlex
from typing import Any

import pytest
import yaml

from bkit.settings import Settings
from tests.ops.conftest import REPO, check_command

COMPOSE = REPO / "docker-compose.yaml"
SECRET_NAME = re.compile(r"^BKIT_(FLOWER_BASIC_AUTH|[A-Z0-9_]+_(API_KEY|SECRET|PASSWORD))$")
SECRET_WORD = re.compile(r"KEY|SECRET|PASSWORD|TOKEN|AUTH", re.IGNORECASE)
BKIT_NAME = re.compile(r"\bBKIT_[A-Z0-9_]+")
LONG_RUNNING = ("beat", "worker-ticks", "worker-orders", "flower", "metrics")


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    return dict(yaml.safe_load(COMPOSE.read_text())["services"])


def _bkit_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in services.items() if s.get("image") == "bkit:latest"}


def test_the_roles_the_issue_asks_for(services: dict[str, dict[str, Any]],
                                      celery_facts: dict[str, Any]) -> None:
    assert {"postgres", "redis", "migrate", *LONG_RUNNING} <= set(services)
    commands = {name: s["command"] for name, s in _bkit_services(services).items()}
    assert commands["migrate"] == ["bkit", "db", "upgrade"]
    beats = [n for n, c in commands.items() if c[:4] == ["celery", "-A", "bkit", "beat"]]
    assert beats == ["beat"]  # exactly one beat
    consumed = {q for c in commands.values() if "-Q" in c
                for q in c[c.index("-Q") + 1].split(",")}
    assert consumed == set(celery_facts["queues"]) == {"ticks", "orders", "maint", "backtest"}
    assert commands["worker-ticks"][commands["worker-ticks"].index("-Q") + 1] == \
        "ticks,maint,backtest"
    assert commands["worker-ticks"][:2] == commands["worker-orders"][:2] == ["bkit", "worker"]
    assert commands["worker-orders"][commands["worker-orders"].index("-Q") + 1] == "orders"


def test_every_command_is_a_real_entry_point(services: dict[str, dict[str, Any]],
                                             celery_facts: dict[str, Any]) -> None:
    assert celery_facts["main"] == "bkit"
    assert celery_facts["task_queues"] == celery_facts["queues"]
    assert {"bkit.fanout_ticks", "bkit.tick", "bkit.tick_batch", "bkit.orders.relay_outbox"} <= set(
        celery_facts["tasks"])
    checked = 0
    for name, service in _bkit_services(services).items():
        check_command(service["command"], celery_facts["queues"])
        checked += 1
        test = (service.get("healthcheck") or {}).get("test")
        if test is None:
            continue
        kind, *rest = test
        if kind == "CMD-SHELL":
            check_command(shlex.split(rest[0].replace("$$", "$")), celery_facts["queues"])
        elif rest[:2] == ["python", "-c"]:
            compile(rest[2], f"{name} healthcheck", "exec")
        else:
            assert kind == "CMD"
            check_command(rest, celery_facts["queues"])
    assert checked == 6


def test_healthchecks_order_and_settings(services: dict[str, dict[str, Any]]) -> None:
    for name in ("postgres", "redis", *LONG_RUNNING):
        assert services[name].get("healthcheck", {}).get("test"), name
    for name, service in _bkit_services(services).items():
        assert service["env_file"] == ".env", name
        depends = service["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy", name
        if name != "migrate":
            assert depends["migrate"]["condition"] == "service_completed_successfully", name
            assert depends["redis"]["condition"] == "service_healthy", name
    assert services["migrate"]["restart"] == "no"
    for service in services.values():  # nothing published beyond this machine
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), port


def _env_names(text: str) -> set[str]:
    return set(BKIT_NAME.findall(text))


def test_every_bkit_name_is_a_setting_or_a_secret() -> None:
    fields = {f"BKIT_{name.upper()}" for name in Settings.model_fields}
    compose_names = _env_names(COMPOSE.read_text())
    example_names = _env_names((REPO / ".env.example").read_text())
    assert {"BKIT_DATABASE_URL", "BKIT_BROKER_URL", "BKIT_STRATEGIES",
            "BKIT_FLOWER_BASIC_AUTH"} <= example_names
    unknown = sorted(n for n in compose_names | example_names
                     if n not in fields and not SECRET_NAME.match(n))
    assert unknown == []
    # values given in the example parse as the settings they configure
    values = dict(line.split("=", 1) for line in (REPO / ".env.example").read_text().splitlines()
                  if line.startswith("BKIT_") and not SECRET_NAME.match(line.split("=")[0]))
    settings = Settings(**{k.removeprefix("BKIT_").lower(): v for k, v in values.items()})
    assert settings.resolved_broker_url() == "redis://redis:6379/0"
    assert settings.strategy_modules == ["examples.my_strategy"]


def test_no_secret_in_the_image() -> None:
    dockerfile = (REPO / "Dockerfile").read_text().splitlines()
    env_lines = [line for line in dockerfile if line.strip().upper().startswith(("ENV", "ARG"))]
    assert env_lines, "the Dockerfile sets its non-secret ENV"
    for line in env_lines:
        names = re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", line)
        assert not [n for n in names if SECRET_WORD.search(n)], line
        assert "URL" not in line, line
    copies = [line for line in dockerfile if line.strip().upper().startswith(("COPY", "ADD"))]
    assert not [c for c in copies if ".env" in c or c.split()[1] == "."], copies
    ignored = (REPO / ".dockerignore").read_text().splitlines()
    assert ".env" in ignored and ".env.*" in ignored
    assert any(line.startswith("CMD") or line.startswith("ENTRYPOINT") for line in dockerfile)
    assert "USER bkit" in dockerfile  # not root


def test_copied_paths_exist() -> None:
    for line in (REPO / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY"):
            for source in line.split()[1:-1]:
                assert (REPO / source).exists(), source
