"""docker/: compose.yaml, the subscriber image and the README agree with each other and the code.

CI cannot run Docker, so these checks stand in for `docker compose up`: they read the files as
Compose and BuildKit would, and fail on the mistakes that would break a user's first start.
"""

from __future__ import annotations

import importlib.util
import json
import os
import posixpath
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from streamstore import BaseRedisModel
from streamstore.projections import Subscriber

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
README = DOCKER / "README.md"

TOP_LEVEL_KEYS = {"name", "services", "networks", "volumes", "configs", "secrets", "include"}
SERVICE_KEYS = {
    "build", "cap_add", "cap_drop", "command", "configs", "container_name", "cpus", "depends_on",
    "deploy", "develop", "devices", "dns", "entrypoint", "env_file", "environment", "expose",
    "extends", "extra_hosts", "healthcheck", "hostname", "image", "init", "ipc", "labels",
    "logging", "mem_limit", "network_mode", "networks", "pid", "platform", "ports", "privileged",
    "profiles", "pull_policy", "read_only", "restart", "secrets", "security_opt", "shm_size",
    "stdin_open", "stop_grace_period", "stop_signal", "sysctls", "tmpfs", "tty", "ulimits",
    "user", "volumes", "working_dir",
}  # fmt: skip
HEALTHCHECK_KEYS = {"test", "interval", "timeout", "retries", "start_period", "start_interval"}
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
LOOPBACK = {"127.0.0.1", "localhost"}
REDIS_PORT = 6379  # redis-server's port when its command names none


# --- reading compose.yaml -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text())  # resolves the anchors and `<<` merges
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {name: str(value) for name, value in env.items()}


def expand(text: str, env: dict[str, str]) -> str:
    """Unescape Compose's ``$$``, then expand ``$NAME``/``${NAME}`` as the container's shell would."""
    text = text.replace("$$", "$")
    return re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), ""), text)


def command_words(service: dict[str, Any]) -> list[str]:
    """The service's command as words, a ``sh -c`` script split too, variables expanded."""
    command = service.get("command") or []
    words = shlex.split(command) if isinstance(command, str) else [str(w) for w in command]
    env = environment(service)
    if words[:2] == ["sh", "-c"]:
        return shlex.split(expand(words[2], env))
    return [expand(word, env) for word in words]


def option(words: list[str], name: str) -> str | None:
    return words[words.index(name) + 1] if name in words else None


def healthcheck_words(service: dict[str, Any]) -> list[str]:
    test = service["healthcheck"]["test"]
    words = [test] if isinstance(test, str) else list(test)
    return shlex.split(expand(" ".join(words[1:]), environment(service)))


def depends_on(service: dict[str, Any]) -> dict[str, str]:
    """Each dependency of ``service`` and its condition."""
    found = service.get("depends_on") or {}
    if isinstance(found, list):
        return dict.fromkeys(found, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in found.items()}


def enabled_by(service: dict[str, Any]) -> list[str | None]:
    """The profiles that enable ``service``; None stands for "no profile given"."""
    return service.get("profiles") or [None]


def is_enabled(service: dict[str, Any], profile: str | None) -> bool:
    profiles = service.get("profiles")
    return not profiles or profile in profiles


def cluster_nodes(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in services.items()
        if option(command_words(service), "--cluster-enabled") == "yes"
    }


def node_address(node: dict[str, Any]) -> str:
    words = command_words(node)
    return f"{option(words, '--bind')}:{option(words, '--port')}"


def published_ports(service: dict[str, Any]) -> dict[int, int]:
    """Host port -> container port, of each port the service publishes."""
    found = {}
    for port in service.get("ports", []):
        if isinstance(port, dict):
            found[int(port["published"])] = int(port["target"])
        else:  # "[HOST_IP:]HOST:CONTAINER"
            *_, host, container = str(port).split(":")
            found[int(host)] = int(container)
    return found


def redis_port(service: dict[str, Any]) -> int:
    return int(option(command_words(service), "--port") or REDIS_PORT)


def all_strings(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [s for value in node.values() for s in all_strings(value)]
    if isinstance(node, list):
        return [s for value in node for s in all_strings(value)]
    return [node] if isinstance(node, str) else []


# --- reading the subscriber image ---------------------------------------------------------------


@dataclass
class Dockerfile:
    """What the checks need of a Dockerfile: its copies, its final command and health check."""

    path: Path
    context: Path
    #: Image path of each copied source, by its path relative to the build context.
    copies: dict[str, str] = field(default_factory=dict)
    runs: list[tuple[str, str]] = field(default_factory=list)  # (workdir, command)
    cmd: list[str] = field(default_factory=list)
    #: The working directory `cmd` runs in.
    cmd_workdir: str = "/"
    healthcheck: list[str] = field(default_factory=list)
    workdir: str = "/"

    @classmethod
    def read(cls, path: Path, context: Path) -> Dockerfile:
        parsed = cls(path, context)
        text = re.sub(r"\\\n", " ", path.read_text())
        for line in text.splitlines():
            keyword, _, rest = line.strip().partition(" ")
            keyword, rest = keyword.upper(), rest.strip()
            if keyword == "WORKDIR":
                parsed.workdir = posixpath.join(parsed.workdir, rest)
            elif keyword == "COPY":
                *sources, dest = [w for w in shlex.split(rest) if not w.startswith("--")]
                target = posixpath.join(parsed.workdir, dest)
                for source in sources:
                    into_dir = dest.endswith("/") or dest == "." or len(sources) > 1
                    name = posixpath.basename(source.rstrip("/"))
                    image_path = posixpath.join(target, name) if into_dir else target
                    if (context / source).is_dir():
                        image_path = target  # COPY dir/ dest/ copies the folder's contents
                    parsed.copies[source.rstrip("/")] = posixpath.normpath(image_path)
            elif keyword == "RUN":
                parsed.runs.append((parsed.workdir, rest))
            elif keyword == "CMD":
                parsed.cmd = json.loads(rest)
                parsed.cmd_workdir = parsed.workdir
            elif keyword == "HEALTHCHECK":
                parsed.healthcheck = json.loads(rest[rest.index(" CMD ") + 5 :])
        return parsed

    def image_path(self, context_path: str) -> str | None:
        """Where the context's ``context_path`` lands in the image (None: not copied)."""
        for source, target in self.copies.items():
            if context_path == source or context_path.startswith(source + "/"):
                return posixpath.normpath(target + context_path[len(source) :])
        return None

    def source_of(self, image_path: str) -> Path | None:
        """The context file that lands at ``image_path`` (None: nothing copied there)."""
        for source, target in self.copies.items():
            if image_path == target or image_path.startswith(target + "/"):
                return self.context / (source + image_path[len(target) :])
        return None


def dockerignore_patterns(dockerfile: Path, context: Path) -> list[str]:
    # BuildKit prefers <Dockerfile>.dockerignore next to the Dockerfile to the context's own.
    for candidate in (
        dockerfile.with_name(dockerfile.name + ".dockerignore"),
        context / ".dockerignore",
    ):
        if candidate.exists():
            lines = [line.strip() for line in candidate.read_text().splitlines()]
            return [line for line in lines if line and not line.startswith("#")]
    return []


def pattern_regex(pattern: str) -> re.Pattern[str]:
    parts = re.split(r"(\*\*/|\*\*|\*|\?)", pattern.strip("/"))
    wildcards = {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}
    return re.compile("".join(wildcards.get(part, re.escape(part)) for part in parts))


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore ``patterns`` leave ``path`` out (the last matching line decides)."""
    candidates = [path] + [str(parent) for parent in Path(path).parents if str(parent) != "."]
    excluded = False
    for line in patterns:
        keep = line.startswith("!")
        regex = pattern_regex(line.removeprefix("!"))
        if any(regex.fullmatch(candidate) for candidate in candidates):
            excluded = not keep
    return excluded


def build_of(service: dict[str, Any]) -> tuple[Path, Path]:
    """The service's build context and Dockerfile."""
    build = service["build"]
    build = {"context": build} if isinstance(build, str) else build
    context = (COMPOSE.parent / build.get("context", ".")).resolve()
    return context, context / build.get("dockerfile", "Dockerfile")


def subscriber_target(service: dict[str, Any]) -> str:
    """The ``module:attribute`` of ``streamstore run`` that a service with a build runs."""
    context, path = build_of(service)
    command = service.get("command") or Dockerfile.read(path, context).cmd
    assert command[:2] == ["streamstore", "run"], command
    return command[2]


# --- compose.yaml: the whole file ---------------------------------------------------------------


def test_top_level_keys_and_service_keys_are_ones_compose_knows(compose, services):
    assert {key for key in compose if not key.startswith("x-")} <= TOP_LEVEL_KEYS
    for name, service in services.items():
        assert set(service) <= SERVICE_KEYS, f"{name}: {set(service) - SERVICE_KEYS}"
        assert set(service.get("healthcheck", {})) <= HEALTHCHECK_KEYS, name


def test_every_service_has_an_image_or_a_build(services):
    assert all("image" in service or "build" in service for service in services.values())


def test_every_dependency_exists_whenever_its_dependent_is_enabled(services):
    for name, service in services.items():
        for target, condition in depends_on(service).items():
            assert target in services, f"{name} depends on unknown {target}"
            assert condition in CONDITIONS, f"{name} -> {target}: {condition}"
            for profile in enabled_by(service):
                # Compose refuses a dependency that the active profiles leave out.
                assert is_enabled(services[target], profile), f"{name} ({profile}) -> {target}"


def test_waiting_for_a_healthy_service_needs_a_healthcheck(services):
    for name, service in services.items():
        for target, condition in depends_on(service).items():
            if condition == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits on {target}"


def test_no_value_asks_compose_to_interpolate_a_host_variable(compose):
    # `$X` is replaced by the *host's* X when Compose reads the file; the container's shell gets
    # a variable only as `$$X`.
    for text in all_strings(compose):
        assert "$" not in text.replace("$$", ""), text


def test_host_network_services_publish_no_ports(services):
    for name, service in services.items():
        if service.get("network_mode") == "host":
            assert "ports" not in service, name


def test_every_redis_server_starts_through_the_image_entrypoint_which_loads_redisjson(services):
    for name, service in services.items():
        words = command_words(service)
        if "redis-server" in words and words[0] != "redis-server":
            at = words.index("redis-server")
            assert words[at - 1] == "docker-entrypoint.sh", name


def test_the_default_profile_is_one_healthy_redis(services):
    default = [name for name, service in services.items() if not service.get("profiles")]
    assert default == ["redis"]
    redis = services["redis"]
    assert redis["image"].startswith("redis:8")
    assert redis.get("healthcheck"), "redis has no healthcheck"
    assert healthcheck_words(redis)[0] == "redis-cli"
    assert set(published_ports(redis).values()) == {redis_port(redis)}


# --- compose.yaml: the cluster profile -----------------------------------------------------------


def test_the_cluster_has_six_nodes_in_cluster_mode_on_distinct_ports(services):
    nodes = cluster_nodes(services)
    assert len(nodes) == 6
    ports = {redis_port(node) for node in nodes.values()}
    assert len(ports) == 6
    for name, node in nodes.items():
        assert node["profiles"] == ["cluster"], name
        assert node["image"].startswith("redis:8"), name
        # Host networking: the address a node announces is one a client on the host can reach.
        assert node["network_mode"] == "host", name
        assert option(command_words(node), "--bind") in LOOPBACK, name
        assert node.get("healthcheck"), f"{name} has no healthcheck"
        assert option(healthcheck_words(node), "-p") == str(redis_port(node)), name


def test_cluster_init_joins_all_six_nodes_with_one_replica_each_once_they_are_healthy(services):
    nodes = cluster_nodes(services)
    (init,) = [s for s in services.values() if "create" in command_words(s)]
    assert init["profiles"] == ["cluster"]
    assert init["network_mode"] == "host"
    assert depends_on(init) == dict.fromkeys(nodes, "service_healthy")
    words = command_words(init)
    at = words.index("create")
    assert words[at - 1] == "--cluster"
    assert sorted(words[at + 1 : at + 7]) == sorted(node_address(n) for n in nodes.values())
    assert option(words, "--cluster-replicas") == "1"
    assert "--cluster-yes" in words  # no prompt: nobody answers one


# --- the subscriber image -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def built(services) -> dict[str, dict[str, Any]]:
    found = {name: service for name, service in services.items() if "build" in service}
    assert found, "compose.yaml builds no subscriber image"
    return found


def test_every_build_names_a_dockerfile_that_exists(built):
    for name, service in built.items():
        context, dockerfile = build_of(service)
        assert context.is_dir() and dockerfile.is_file(), name


def test_every_copy_source_exists_in_the_build_context_and_is_not_ignored(built):
    for service in built.values():
        context, path = build_of(service)
        dockerfile = Dockerfile.read(path, context)
        patterns = dockerignore_patterns(path, context)
        assert dockerfile.copies
        for source in dockerfile.copies:
            assert (context / source).exists(), source
            assert not ignored(source, patterns), f"{source} is left out of the build context"


def test_the_image_has_what_pip_needs_and_symlinks_resolve_inside_it(built):
    for service in built.values():
        context, path = build_of(service)
        dockerfile = Dockerfile.read(path, context)
        (workdir, run) = next((w, r) for w, r in dockerfile.runs if "pip install" in r)
        project = posixpath.join(workdir, shlex.split(run)[2])
        assert (
            dockerfile.source_of(posixpath.join(project, "pyproject.toml"))
            == context / "pyproject.toml"
        )
        readme = re.search(r'^readme = "(.+)"', (context / "pyproject.toml").read_text(), re.M)
        assert readme and dockerfile.image_path(readme.group(1)), "pyproject's readme is not copied"
        # streamstore/projections links to ../projections: COPY keeps the link, not its target.
        for source in dockerfile.copies:
            for link in (p for p in (context / source).rglob("*") if p.is_symlink()):
                relative = link.relative_to(context).as_posix()
                image_link = dockerfile.image_path(relative)
                assert image_link is not None
                lands = posixpath.normpath(
                    posixpath.join(posixpath.dirname(image_link), os.readlink(link))
                )
                target = link.resolve().relative_to(context).as_posix()
                assert dockerfile.image_path(target) == lands, f"{relative} dangles in the image"


def test_the_subscriber_the_image_runs_imports_and_is_a_subscriber(built, monkeypatch):
    for service in built.values():
        context, path = build_of(service)
        dockerfile = Dockerfile.read(path, context)
        target = subscriber_target(service)
        module_name, _, attribute = target.partition(":")
        # `streamstore run` imports from its working directory: the file copied there.
        image_file = posixpath.join(dockerfile.cmd_workdir, module_name.replace(".", "/") + ".py")
        source = dockerfile.source_of(image_file)
        assert source is not None and source.is_file(), f"nothing is copied to {image_file}"
        spec = importlib.util.spec_from_file_location(module_name, source)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, module_name, module)
        spec.loader.exec_module(module)
        found = getattr(module, attribute)
        assert isinstance(found, Subscriber)
        assert found.models and all(issubclass(m, BaseRedisModel) for m in found.models)
        assert dockerfile.healthcheck == ["streamstore", "check", target]


def test_each_subscriber_reaches_a_redis_of_compose(services, built):
    nodes = {node_address(node) for node in cluster_nodes(services).values()}
    for name, service in built.items():
        url = environment(service)["REDIS_URL"]
        parts = urlsplit(url)
        addresses = parts.netloc.rpartition("@")[2].split(",")
        if parts.scheme.endswith("+cluster"):
            # On the host network, 127.0.0.1 is the host's loopback, where the nodes listen.
            assert service["network_mode"] == "host", name
            assert set(addresses) <= nodes, name
        else:
            (address,) = addresses
            host, _, port = address.partition(":")
            assert host in services, f"{name}: {host} is not a service"
            assert int(port or REDIS_PORT) == redis_port(services[host]), name
            assert host in depends_on(service), f"{name} starts before {host}"


# --- docker/README.md ---------------------------------------------------------------------------


def compose_commands(text: str) -> list[list[str]]:
    """Every ``docker compose`` command of the README (code blocks and inline code), as words."""
    found = re.findall(r"`(docker compose [^`]*)`", text)
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        found += [line.split(" #")[0] for line in block.splitlines() if "docker compose" in line]
    return [shlex.split(command) for command in found]


def test_readme_urls_match_the_ports_compose_publishes(services):
    text = README.read_text()
    urls = re.findall(r"rediss?(?:\+cluster)?://[^\s`'\"|]+", text)
    assert any("+cluster" in url for url in urls) and any("+cluster" not in url for url in urls)
    nodes = {node_address(node) for node in cluster_nodes(services).values()}
    for url in urls:
        parts = urlsplit(url)
        addresses = parts.netloc.rpartition("@")[2].split(",")
        if parts.scheme.endswith("+cluster"):
            assert set(addresses) <= nodes, url
        else:
            (address,) = addresses
            host, _, port = address.partition(":")
            assert host in LOOPBACK, url
            assert int(port) in published_ports(services["redis"]), url


def test_readme_node_ports_and_names_are_the_cluster_nodes(services):
    text = README.read_text()
    ports = {redis_port(node) for node in cluster_nodes(services).values()}
    mentioned = {int(port) for port in re.findall(r"\b(7\d{3})\b", text)}
    assert mentioned <= ports
    assert f"{min(ports)} to {max(ports)}" in text
    for name in re.findall(r"`(redis-\d+)`", text):
        assert name in services


def test_readme_commands_name_compose_services_and_profiles(services):
    profiles = {p for service in services.values() for p in service.get("profiles", [])}
    commands = compose_commands(README.read_text())
    assert commands
    for words in commands:
        rest = words[2:]
        while rest and rest[0] in ("-f", "--profile"):
            if rest[0] == "-f":
                assert (ROOT / rest[1]).resolve() == COMPOSE, words
            else:
                assert rest[1] in profiles, words
            rest = rest[2:]
        named = [word for word in rest[1:] if not word.startswith("-")]
        if rest[0] in ("exec", "run"):  # the service, then the command to run in it
            named = named[:1]
        assert set(named) <= set(services), words
    assert {"cluster", "subscriber"} <= {w for c in commands for w in c}


def test_readme_says_ci_cannot_run_these_files_and_names_this_test():
    text = README.read_text()
    assert "CI cannot run Docker" in text
    assert f"tests/unit/{Path(__file__).name}" in text
