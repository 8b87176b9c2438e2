"""The log lines and the compose files as hive-containers reads them."""

from pathlib import Path

import pytest
import yaml

from hive_containers import logline
from hive_containers.compose import (
    SERVICES,
    ComposeError,
    PortSpec,
    default_compose_dir,
    expand,
    load_service,
    parse_port,
    parse_yaml,
    read_env_file,
)
from tests.containers.conftest import REPO, fixture

# ------------------------------------------------------------------------------ logs


def captured_lines() -> list[logline.LogLine]:
    return [logline.parse_line(line) for line in fixture("podman_logs_genie.txt").splitlines()]


def test_every_captured_line_is_hive_init_json():
    lines = captured_lines()
    assert lines and all(line.program in ("hive-init", "postgres", "api") for line in lines)


def test_filter_by_program():
    lines = captured_lines()
    postgres = [line for line in lines if logline.belongs_to(line, "postgres")]
    assert any(line.program == "postgres" and "database system is ready" in line.msg for line in postgres)
    assert any(line.program == "hive-init" and line.target == "postgres" and line.msg == "ready" for line in postgres)
    assert not any(line.program == "api" or line.target == "api" for line in postgres)
    init_only = [line for line in lines if logline.belongs_to(line, "hive-init")]
    assert init_only and all(line.program == "hive-init" for line in init_only)


def test_render():
    event = logline.parse_line('{"ts": "2026-11-27T08:42:37.976Z", "level": "info", "program": "hive-init", '
                            '"target": "postgres", "msg": "ready", "probe_ms": 47.0}')
    assert logline.render(event) == "08:42:37.976 hive-init | [postgres] ready probe_ms=47.0"
    line = logline.parse_line('{"ts": "2026-11-27T08:42:38.100Z", "program": "api", "stream": "stderr", '
                           '"msg": "INFO uvicorn.error: Application startup complete."}')
    assert logline.render(line) == "08:42:38.100 api       | INFO uvicorn.error: Application startup complete."
    warning = logline.parse_line('{"ts": "2026-11-27T08:42:38.100Z", "level": "warning", "program": "hive-init", '
                              '"target": "api", "msg": "exited", "status": 1, "note": "two words"}')
    assert logline.render(warning) == "08:42:38.100 hive-init | WARNING: [api] exited status=1 note='two words'"


@pytest.mark.parametrize("raw", ["plain text from an entrypoint", "{not json}", '{"no": "program"}', "[1, 2]", ""])
def test_other_lines_stay_as_they_are(raw):
    line = logline.parse_line(raw)
    assert line.program is None and logline.render(line) == raw and not logline.belongs_to(line, "api")


# ------------------------------------------------------------------------------ compose files


@pytest.mark.parametrize("path", ["images/genie/docker-compose.yml", "images/agent/docker-compose.yml"])
def test_the_yaml_reader_agrees_with_pyyaml_on_the_compose_files(path):
    text = (REPO / path).read_text()

    def strings(value):  # the reader keeps scalars as strings
        if isinstance(value, dict):
            return {str(k): strings(v) for k, v in value.items()}
        if isinstance(value, list):
            return [strings(v) for v in value]
        return None if value is None else str(value)

    assert strings(parse_yaml(text)) == strings(yaml.safe_load(text))


def test_yaml_subset():
    text = """
# comment
name: x   # trailing comment
list:
- a
- "b # not a comment"
nested:
  items:
    - key: 1
      other: two
    - plain
  flow: ["CMD", "hive-init", "health"]
  quoted: 'it''s'
  empty:
"""
    assert parse_yaml(text) == {"name": "x", "list": ["a", "b # not a comment"],
                                "nested": {"items": [{"key": "1", "other": "two"}, "plain"],
                                           "flow": ["CMD", "hive-init", "health"], "quoted": "it's", "empty": None}}
    with pytest.raises(ComposeError, match="line 2"):
        parse_yaml("a: 1\n   b: 2\n")
    with pytest.raises(ComposeError, match="flow mappings"):
        parse_yaml("a: {b: 1}\n")


def test_expand():
    env = {"SET": "v", "EMPTY": ""}
    assert expand("${SET:-d} ${UNSET:-d} ${EMPTY:-d} ${EMPTY-d} ${UNSET-d} $SET $$ ${UNSET}", env) == "v d d  d v $ "
    with pytest.raises(ComposeError, match="required"):
        expand("${UNSET:?give it}", env)


@pytest.mark.parametrize("text, spec", [
    ("48886:48886", PortSpec(48886, 48886)),
    ("127.0.0.1:8080:80", PortSpec(8080, 80, "127.0.0.1")),
    ("[::1]:8080:80/udp", PortSpec(8080, 80, "::1", "udp")),
    ("80", PortSpec(0, 80)),
    ({"target": 80, "published": "8080", "host_ip": "127.0.0.1"}, PortSpec(8080, 80, "127.0.0.1")),
])
def test_ports(text, spec):
    assert parse_port(text) == spec


def test_the_real_services():
    folder = default_compose_dir()
    assert folder == REPO / "images"
    genie = load_service(folder, SERVICES["genie"], env={})
    assert (genie.project, genie.image, genie.base_image) == ("hive-genie", "hive-genie:latest",
                                                              "hive-init-base:latest")
    assert genie.ports == (PortSpec(48886, 48886),) and genie.password_var == "HIVE_DB_PASSWORD"
    assert genie.build_context == REPO and genie.dockerfile == REPO / "images/genie/Dockerfile"
    assert genie.base_dockerfile == REPO / "Dockerfile.base" and genie.stop_grace_period == "30s"
    agent = load_service(folder, SERVICES["agent"], env={"HIVE_AGENT_IMAGE": "localhost/a:1", "HIVE_BASE_IMAGE": "b:2"},
                         project_prefix="t-")
    assert (agent.project, agent.image, agent.base_image) == ("t-hive-agent", "localhost/a:1", "b:2")
    assert agent.ports == (PortSpec(38886, 38886),)
    # the host port is overridable (the podman tests publish a free one)
    moved = load_service(folder, SERVICES["genie"], env={"HIVE_GENIE_PORT": "51234"})
    assert moved.ports == (PortSpec(51234, 48886),)


def test_dotenv_next_to_the_compose_file(tmp_path: Path):
    (tmp_path / "genie").mkdir()
    (tmp_path / "genie/docker-compose.yml").write_text((REPO / "images/genie/docker-compose.yml").read_text())
    (tmp_path / "genie/.env").write_text("# comment\nexport HIVE_GENIE_IMAGE='from-dotenv:1'\nHIVE_BASE_IMAGE=b\n")
    assert read_env_file(tmp_path / "genie/.env") == {"HIVE_GENIE_IMAGE": "from-dotenv:1", "HIVE_BASE_IMAGE": "b"}
    service = load_service(tmp_path, SERVICES["genie"], env={"HIVE_BASE_IMAGE": "shell-wins"})
    assert service.image == "from-dotenv:1" and service.base_image == "shell-wins"
    with pytest.raises(ComposeError, match="cannot read"):
        load_service(tmp_path, SERVICES["agent"], env={})
