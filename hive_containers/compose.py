"""The services hive-containers manages, and what it needs to know from their compose files.

The compose files (images/genie/docker-compose.yml, images/agent/docker-compose.yml) stay the
one description of each service; this module reads from them the project name, the image and
how it is built, the published ports and the password variable. PyYAML is not a dependency of
hive-init, so a small reader of the block-style YAML subset these files use is here (mappings,
lists, scalars, flow lists, comments), with compose's `${VAR}`, `${VAR:-default}`,
`${VAR-default}` and `$$` expansion.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class ComposeError(ValueError):
    """A compose file that is missing or that this reader does not understand."""


@dataclass(frozen=True)
class ServiceInfo:
    """What `hive-containers` knows of a service name before reading any file."""
    name: str  # genie, agent
    compose_file: str  # relative to the compose dir
    password_var: str  # the variable the container cannot start without (or its *_FILE)


SERVICES: dict[str, ServiceInfo] = {
    "genie": ServiceInfo("genie", "genie/docker-compose.yml", "HIVE_DB_PASSWORD"),
    "agent": ServiceInfo("agent", "agent/docker-compose.yml", "AGENT_DB_PASSWORD"),
}


@dataclass(frozen=True)
class PortSpec:
    host_port: int
    container_port: int
    host_ip: str = ""  # "" = every address
    protocol: str = "tcp"


@dataclass(frozen=True)
class Service:
    """One service of a compose file, its variables expanded."""
    name: str
    compose_file: Path
    project: str
    image: str
    build_context: Path | None
    dockerfile: Path | None
    build_args: dict[str, str]
    ports: tuple[PortSpec, ...]
    password_var: str
    stop_grace_period: str | None

    @property
    def base_image(self) -> str | None:
        """The image the service's Dockerfile builds FROM (its BASE_IMAGE build argument)."""
        return self.build_args.get("BASE_IMAGE")

    @property
    def base_dockerfile(self) -> Path | None:
        """Dockerfile.base at the root of the build context, which builds `base_image`."""
        if self.build_context is None or not self.base_image:
            return None
        path = self.build_context / "Dockerfile.base"
        return path if path.is_file() else None


def default_compose_dir() -> Path | None:
    """images/ of the repository checkout this package runs from, else ./images."""
    for candidate in (Path(__file__).resolve().parents[1] / "images", Path.cwd() / "images"):
        if all((candidate / s.compose_file).is_file() for s in SERVICES.values()):
            return candidate
    return None


def load_service(compose_dir: Path, info: ServiceInfo, env: Mapping[str, str] | None = None,
                 project_prefix: str = "") -> Service:
    path = compose_dir / info.compose_file
    try:
        text = path.read_text()
    except OSError as e:
        raise ComposeError(f"cannot read {path}: {e.strerror or e}") from None
    env = dict(os.environ if env is None else env)
    env = {**read_env_file(path.parent / ".env"), **env}  # compose reads .env; the shell wins
    try:
        doc = expand(parse_yaml(text), env)
    except ComposeError as e:
        raise ComposeError(f"{path}: {e}") from None
    services = doc.get("services") if isinstance(doc, dict) else None
    if not isinstance(services, dict) or not isinstance(services.get(info.name), dict):
        raise ComposeError(f"{path}: no service named {info.name!r}")
    svc = services[info.name]
    project = str(doc.get("name") or path.parent.name)
    build = svc.get("build")
    context = dockerfile = None
    args: dict[str, str] = {}
    if isinstance(build, str):
        build = {"context": build}
    if isinstance(build, dict):
        context = (path.parent / str(build.get("context", "."))).resolve()
        dockerfile = context / str(build.get("dockerfile", "Dockerfile"))
        args = _mapping_or_list(build.get("args"))
    image = str(svc.get("image") or f"{project}-{info.name}")
    return Service(name=info.name, compose_file=path, project=project_prefix + project, image=image,
                   build_context=context, dockerfile=dockerfile, build_args=args,
                   ports=tuple(parse_port(p) for p in svc.get("ports") or ()), password_var=info.password_var,
                   stop_grace_period=svc.get("stop_grace_period"))


def _mapping_or_list(value: Any) -> dict[str, str]:
    if isinstance(value, dict):
        return {str(k): "" if v is None else str(v) for k, v in value.items()}
    out = {}
    for item in value or ():
        key, _, val = str(item).partition("=")
        out[key] = val
    return out


def read_env_file(path: Path) -> dict[str, str]:
    """A compose `.env` file: KEY=VALUE lines, # comments, optional quotes."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    out = {}
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key.strip()] = value
    return out


_PORT = re.compile(r"^(?:(?P<ip>\[[^\]]+\]|\d+\.\d+\.\d+\.\d+):)?(?:(?P<host>\d*):)?(?P<ctr>\d+)"
                   r"(?:/(?P<proto>tcp|udp|sctp))?$")


def parse_port(value: Any) -> PortSpec:
    """A compose port: "48886:48886", "127.0.0.1:8080:80", "80/udp", or the long form."""
    if isinstance(value, dict):
        target = int(value["target"])
        return PortSpec(int(value.get("published") or 0), target, str(value.get("host_ip") or ""),
                        str(value.get("protocol") or "tcp"))
    m = _PORT.match(str(value).strip())
    if not m:
        raise ComposeError(f"port {value!r}: not a port mapping this tool understands (HOST:CONTAINER)")
    host = int(m.group("host")) if m.group("host") else 0  # 0: the engine picks one
    return PortSpec(host, int(m.group("ctr")), (m.group("ip") or "").strip("[]"), m.group("proto") or "tcp")


# --------------------------------------------------------------------------------- variables

_VAR = re.compile(r"\$(?:\$|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
                  r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))")


def expand(value: Any, env: Mapping[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: expand(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [expand(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group("name") or m.group("bare")
        op, arg = m.group("op"), m.group("arg") or ""
        current = env.get(name)
        if op in (":-", ":?") and not current or op in ("-", "?") and current is None:
            if op.endswith("?"):
                raise ComposeError(f"${{{name}}} is required: {arg or 'not set'}")
            return arg
        return current or ""

    return _VAR.sub(one, value)


# --------------------------------------------------------------------------------- YAML subset

def parse_yaml(text: str) -> Any:
    """Block mappings and lists of the compose files here; scalars stay strings (flow lists
    become lists). Anchors, multi-line strings and flow mappings are not supported."""
    lines: list[tuple[int, str, int]] = []
    for number, raw in enumerate(text.splitlines(), 1):
        if raw.lstrip().startswith("---") and not raw.startswith(" ") and raw.strip() == "---":
            continue
        if "\t" in raw[: len(raw) - len(raw.lstrip())]:
            raise ComposeError(f"line {number}: tab in indentation")
        line = _strip_comment(raw).rstrip()
        if line.strip():
            lines.append((len(line) - len(line.lstrip(" ")), line.strip(), number))
    if not lines:
        return {}
    value, pos = _block(lines, 0, lines[0][0])
    if pos != len(lines):
        raise ComposeError(f"line {lines[pos][2]}: unexpected indentation")
    return value


def _strip_comment(line: str) -> str:
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"" and (i == 0 or line[i - 1] in " \t:-[,"):
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i]
    return line


_KEY = re.compile(r"""^(?P<key>"[^"]*"|'[^']*'|[^\s'"\[\]{}#,][^:]*?)\s*:(?:\s+(?P<rest>.*))?$""")


def _block(lines: list[tuple[int, str, int]], pos: int, indent: int) -> tuple[Any, int]:
    if lines[pos][1] == "-" or lines[pos][1].startswith("- "):
        items: list[Any] = []
        while pos < len(lines) and lines[pos][0] == indent and (lines[pos][1] == "-" or lines[pos][1].startswith("- ")):
            content, number = lines[pos][1][1:].strip(), lines[pos][2]
            pos += 1
            if not content:
                if pos < len(lines) and lines[pos][0] > indent:
                    value, pos = _block(lines, pos, lines[pos][0])
                    items.append(value)
                else:
                    items.append(None)
            elif _KEY.match(content):
                # "- key: value" starts a mapping whose keys are indented past the dash
                inner = indent + 2
                sub = [(inner, content, number)]
                while pos < len(lines) and lines[pos][0] > indent:
                    sub.append(lines[pos])
                    pos += 1
                value, used = _block(sub, 0, inner)
                if used != len(sub):
                    raise ComposeError(f"line {sub[used][2]}: unexpected indentation")
                items.append(value)
            else:
                items.append(_scalar(content, number))
        return items, pos
    mapping: dict[str, Any] = {}
    while pos < len(lines) and lines[pos][0] == indent:
        content, number = lines[pos][1], lines[pos][2]
        m = _KEY.match(content)
        if not m:
            raise ComposeError(f"line {number}: expected `key: value`")
        key = _unquote(m.group("key"))
        rest = m.group("rest")
        pos += 1
        if rest:
            mapping[key] = _scalar(rest, number)
        elif pos < len(lines) and lines[pos][0] > indent:
            mapping[key], pos = _block(lines, pos, lines[pos][0])
        elif pos < len(lines) and lines[pos][0] == indent and lines[pos][1].startswith("- "):
            mapping[key], pos = _block(lines, pos, indent)  # a list at the key's own indentation
        else:
            mapping[key] = None
    if pos < len(lines) and lines[pos][0] > indent:
        raise ComposeError(f"line {lines[pos][2]}: unexpected indentation")
    return mapping, pos


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def _scalar(text: str, number: int) -> Any:
    text = text.strip()
    if text.startswith("["):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            inner = text[1:-1] if text.endswith("]") else None
            if inner is None:
                raise ComposeError(f"line {number}: unterminated flow list") from None
            return [_unquote(part.strip()) for part in inner.split(",") if part.strip()]
    if text.startswith("{"):
        raise ComposeError(f"line {number}: flow mappings ({{…}}) are not supported")
    if text.startswith('"') and text.endswith('"') and len(text) >= 2:
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text[1:-1]
    if text.startswith("'") and text.endswith("'") and len(text) >= 2:
        return text[1:-1].replace("''", "'")
    return text
