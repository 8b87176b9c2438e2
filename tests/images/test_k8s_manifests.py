"""The deployment files agree with the hive-init configs they run: Kubernetes manifests
(images/k8s), compose files and Dockerfiles (images/genie, images/agent).

Needs PyYAML (a dev dependency).
"""

import os
import re
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SERVICES = {
    # service: (API port, password variable, role, database)
    "genie": (48886, "HIVE_DB_PASSWORD", "hive", "hive_genie"),
    "agent": (38886, "AGENT_DB_PASSWORD", "agent", "hive_agent"),
}
INIT_PORT = 9900
MEMORY_LIMIT = 512 * 1024**2


def default_of(value: str) -> str:
    """`${VAR:-default}` → default (what the config means when VAR is unset)."""
    return re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*:-([^}]*)\}", r"\1", value)


def seconds(text: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)", text)
    assert m, text
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60}[m.group(2)]


def memory(text: str) -> int:
    m = re.fullmatch(r"(\d+)(Ki|Mi|Gi|k|m|g|K|M|G)?b?", str(text))
    assert m, text
    unit = {None: 1, "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "k": 1024, "K": 1024, "m": 1024**2, "M": 1024**2,
            "g": 1024**3, "G": 1024**3}[m.group(2)]
    return int(m.group(1)) * unit


def config(service: str) -> dict:
    with open(REPO / "configs" / f"{service}.toml", "rb") as f:
        return tomllib.load(f)


def k8s(service: str) -> dict[str, list[dict]]:
    docs: dict[str, list[dict]] = {}
    with open(REPO / "images" / "k8s" / f"{service}.yaml") as f:
        for doc in yaml.safe_load_all(f):
            docs.setdefault(doc["kind"], []).append(doc)
    return docs


def compose(service: str) -> dict:
    with open(REPO / "images" / service / "docker-compose.yml") as f:
        return yaml.safe_load(f)


@pytest.mark.parametrize("service", SERVICES)
def test_configs_name_the_service_s_port_role_database_and_password(service):
    port, password_var, role, database = SERVICES[service]
    cfg = config(service)
    pg, api = cfg["programs"]["postgres"], cfg["programs"]["api"]
    assert pg["kind"] == "postgres" and pg["critical"] and api["critical"]
    assert pg["port"] == 5432 and pg["listen_addresses"] == "127.0.0.1"
    assert [r["name"] for r in pg["roles"]] == [role] and pg["roles"][0]["password"] == f"${{{password_var}}}"
    assert pg["databases"] == [{"name": database, "owner": role, "extensions": ["vector"]}]
    assert pg["settings"] == {"shared_buffers": "128MB", "effective_cache_size": "512MB", "work_mem": "4MB",
                              "max_connections": "100"}
    env = api["environment"]
    url = urlsplit(env["HIVE_DATABASE_URL"])
    assert (url.username, url.hostname, url.port, url.path) == (role, "127.0.0.1", 5432, f"/{database}")
    assert url.password is None and env["HIVE_DATABASE_PASSWORD"] == f"${{{password_var}}}"
    assert env["HIVE_API_PORT"] == str(port) and env["HIVE_SERVICE"] == service
    assert api["depends_on"] == {"postgres": "ready"}
    for probe in ("readiness", "liveness"):
        assert urlsplit(api[probe]["http"]).port == port
    assert urlsplit(api["readiness"]["http"]).path == "/api/v1/health"
    # the whole stop fits in the init's deadline
    assert seconds(api["stop_timeout"]) + seconds(pg["stop_timeout"]) <= seconds(cfg["init"]["shutdown_timeout"])
    for name in ("conf_file", "hba_file"):
        assert (REPO / "configs" / Path(pg[name]).name).is_file(), pg[name]


@pytest.mark.parametrize("service", SERVICES)
def test_statefulset_agrees_with_the_config(service):
    port, password_var, _, _ = SERVICES[service]
    cfg = config(service)
    docs = k8s(service)
    (sts,) = docs["StatefulSet"]
    pod = sts["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    labels = sts["spec"]["template"]["metadata"]["labels"]
    assert sts["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert sts["spec"]["replicas"] == 1

    # ports: the API's and hive-init's endpoint, which the probes use
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": port, "init": INIT_PORT}
    env = {e["name"]: e for e in container["env"]}
    assert env["HIVE_INIT_HTTP"]["value"] == f"0.0.0.0:{INIT_PORT}"
    assert default_of(cfg["init"]["http"]).endswith(f":{INIT_PORT}") and "${HIVE_INIT_HTTP" in cfg["init"]["http"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": INIT_PORT}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": INIT_PORT}

    # passwords from a Secret, never a literal
    assert "secretKeyRef" in env[password_var]["valueFrom"]
    assert all("value" not in e for name, e in env.items() if "PASSWORD" in name)

    # the kubelet waits longer than the init's whole shutdown
    assert pod["terminationGracePeriodSeconds"] > seconds(cfg["init"]["shutdown_timeout"])
    assert pod["terminationGracePeriodSeconds"] > seconds(cfg["init"]["shutdown_timeout"]) + 5

    # the claim is mounted at the parent of the data directory (PostgreSQL wants its own subfolder)
    data_dir = default_of(cfg["programs"]["postgres"]["data_dir"])
    claims = {t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert claims == {"data"} and mounts["data"] == os.path.dirname(data_dir)
    log_dirs = {os.path.dirname(p["log_file"]) for p in cfg["programs"].values() if "log_file" in p}
    assert log_dirs <= set(mounts.values())

    limits = container["resources"]["limits"]
    assert memory(limits["memory"]) <= MEMORY_LIMIT
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]
    assert "fsGroup" not in pod.get("securityContext", {})


@pytest.mark.parametrize("service", SERVICES)
def test_services_select_the_pod_and_expose_the_api(service):
    port = SERVICES[service][0]
    docs = k8s(service)
    (sts,) = docs["StatefulSet"]
    labels = sts["spec"]["template"]["metadata"]["labels"]
    names = {s["metadata"]["name"]: s for s in docs["Service"]}
    assert sts["spec"]["serviceName"] in names and names[sts["spec"]["serviceName"]]["spec"]["clusterIP"] == "None"
    for svc in names.values():
        assert svc["spec"]["selector"].items() <= labels.items()
        assert [(p["port"], p["targetPort"]) for p in svc["spec"]["ports"]] == [(port, "http")]


@pytest.mark.parametrize("service", SERVICES)
def test_compose_agrees_with_the_config(service):
    port, password_var, _, _ = SERVICES[service]
    cfg = config(service)
    doc = compose(service)
    (name,) = doc["services"]
    svc = doc["services"][name]
    # the documented host port by default, another when the variable says so (the tests' own runs)
    assert svc["ports"] == [f"${{HIVE_{service.upper()}_PORT:-{port}}}:{port}"]
    assert svc["healthcheck"]["test"] == ["CMD", "hive-init", "health"]
    assert svc["restart"] == "unless-stopped"
    assert seconds(svc["stop_grace_period"]) > seconds(cfg["init"]["shutdown_timeout"])
    assert memory(svc["mem_limit"]) <= MEMORY_LIMIT
    data_dir = default_of(cfg["programs"]["postgres"]["data_dir"])
    targets = {v.split(":")[1]: v.split(":")[0] for v in svc["volumes"]}
    assert os.path.dirname(data_dir) in targets and "/var/log/hive" in targets
    assert set(targets.values()) <= set(doc["volumes"]), "named volumes, not host folders"
    assert svc["networks"] == [f"hive_{service}_network"]
    assert doc["networks"][f"hive_{service}_network"]["name"] == \
        f"${{HIVE_{service.upper()}_NETWORK:-hive_{service}_network}}"
    # passwords pass through from the environment: none is written in the file
    env = svc["environment"]
    assert password_var in env and f"{password_var}_FILE" in env
    assert not [e for e in env if "PASSWORD" in e and "=" in e]
    assert svc["build"]["dockerfile"] == f"images/{service}/Dockerfile"


@pytest.mark.parametrize("service", SERVICES)
def test_dockerfile_agrees_with_the_config(service):
    port = SERVICES[service][0]
    text = (REPO / "images" / service / "Dockerfile").read_text()
    assert re.search(rf"^EXPOSE {port}$", text, re.M)
    assert f"HIVE_API_PORT={port}" in text
    assert f"COPY configs/{service}.toml /etc/hive-init/hive-init.toml" in text
    assert re.search(r"^ARG BASE_IMAGE=", text, re.M) and "FROM ${BASE_IMAGE}" in text


def test_base_dockerfile_runs_hive_init_as_pid_1_with_the_design_s_healthcheck():
    text = (REPO / "Dockerfile.base").read_text()
    assert re.search(r"^FROM \$\{DEBIAN_IMAGE\} AS builder$", text, re.M)
    assert "ARG DEBIAN_IMAGE=debian:bookworm-slim" in text
    assert 'ENTRYPOINT ["hive-init", "run"]' in text
    assert "STOPSIGNAL SIGTERM" in text
    assert ('HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 '
            'CMD ["hive-init", "health"]') in text
    # the extra CA is a build secret, never an ARG (ARG values stay in the image history)
    assert "--mount=type=secret,id=extra_ca" in text and not re.search(r"^ARG .*CA_CERT", text, re.M)
