"""What the chart's Ingress and HTTPRoute send where: every combination of routing mode (path, subdomain), separate
router (off, on) and exposure (Ingress, HTTPRoute) is rendered, and requests for the API host and for sandbox URLs
are resolved against the rendered rules as the Ingress and Gateway API specifications match them (exact host before
wildcard; the longest matching path prefix, by path segment). The gateway serves the control API, and in path mode
without a router the sandbox URLs too; a separate router serves no control API (`KUBEHANDS_ENABLE_CONTROL_API=false`),
so no control-API request may reach it, and it serves every sandbox URL.

The paths of the control API that path mode sends to the gateway are a list in the chart
(`kubehands.controlApiPaths`): checked here against every route of the gateway's app, and against the router's own
matching (`kubehands.spec.urls.match_path`), so a new route cannot be forgotten there.
"""

import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from kubehands.spec import urls
from kubehands.spec.settings import SpecSettings
from tests.unit import test_chart
from tests.unit.test_chart import CHART, KUBE_CURRENT, KUBE_OLD, ROOT, by_kind, render, validation_errors

pytestmark = pytest.mark.unit
# test_chart.py's session fixtures: the pinned helm, the Kubernetes 1.20 schemas.
helm = test_chart.helm
schemas_1_20 = test_chart.schemas_1_20

API_HOST = "api.example.com"
DOMAIN = "sandboxes.example.com"
GATEWAY, ROUTER = "t-kubehands-gateway", "t-kubehands-router"
RUNTIME_ID = "kh-0a1b2c3d4e5f"
assert urls.is_runtime_id(RUNTIME_ID)

MODES = ("path", "subdomain")
EXPOSURES = ("ingress", "httproute")
CASES = list(itertools.product(MODES, (False, True), EXPOSURES))


def case_name(case: tuple[str, bool, str]) -> str:
    mode, router, exposure = case
    return f"{mode}-{'router' if router else 'gateway-only'}-{exposure}"


def values(mode: str, router: bool, exposure: str) -> list[str]:
    sets = [f"router.enabled={str(router).lower()}", f"routing.mode={mode}"]
    if mode == "subdomain":
        sets.append(f"routing.domain={DOMAIN}")
    if exposure == "ingress":
        sets += ["ingress.enabled=true", f"ingress.host={API_HOST}", "ingress.tlsSecretName=api-tls"]
    else:
        sets += ["httpRoute.enabled=true", f"httpRoute.hostname={API_HOST}", "httpRoute.parentRefs[0].name=public"]
    return ["--set", ",".join(sets)]


@dataclass(frozen=True)
class Rule:
    """One path of one host, and the Service (and port) it sends requests to."""

    hosts: tuple[str, ...]
    path: str
    exact: bool
    service: str
    port: int | str  # a port name (Ingress) or number (HTTPRoute)


def ingress_rules(docs: list[dict[str, Any]]) -> list[Rule]:
    rules = []
    for ingress in by_kind(docs, "Ingress").values():
        assert "defaultBackend" not in ingress["spec"]
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                assert path["pathType"] in ("Prefix", "Exact"), path  # ImplementationSpecific differs by controller
                backend = path["backend"]["service"]
                port = backend["port"].get("name") or backend["port"]["number"]
                rules.append(Rule((rule["host"],), path["path"], path["pathType"] == "Exact", backend["name"], port))
    return rules


def httproute_rules(docs: list[dict[str, Any]]) -> list[Rule]:
    rules = []
    for route in by_kind(docs, "HTTPRoute").values():
        spec = route["spec"]
        assert len(spec["rules"]) <= 16  # the Gateway API CRD's limits
        assert sum(len(r["matches"]) for r in spec["rules"]) <= 64
        for rule in spec["rules"]:
            [backend] = rule["backendRefs"]
            for match in rule["matches"]:
                path = match["path"]
                assert path["type"] in ("PathPrefix", "Exact"), path  # RegularExpression is implementation-specific
                assert set(match) == {"path"}, match  # no header or query conditions
                rules.append(
                    Rule(
                        tuple(spec["hostnames"]),
                        path["value"],
                        path["type"] == "Exact",
                        backend["name"],
                        backend["port"],
                    )
                )
    return rules


def host_matches(pattern: str, host: str) -> bool:
    """Ingress and Gateway API hostnames: exact, or `*.` + suffix matching one label (our sandbox hosts have one)."""
    if pattern.startswith("*."):
        label, _, rest = host.partition(".")
        return bool(label) and rest == pattern[2:]
    return pattern == host


def path_matches(rule: Rule, path: str) -> bool:
    """Exact, or a prefix matched by path segment (`/start` matches `/start` and `/start/x`, not `/startx`)."""
    path = path.split("?", 1)[0]
    if rule.exact:
        return path == rule.path
    prefix = rule.path.rstrip("/")
    return prefix == "" or path == prefix or path.startswith(prefix + "/")


def resolve(rules: list[Rule], host: str, path: str) -> tuple[str, int | str] | None:
    """(Service, port) a request reaches: the exact host's rules before a wildcard's, then the longest matching
    path, an exact one before a prefix of the same length (both specifications); None: nothing routes it."""
    exact_host = [r for r in rules if host in r.hosts]
    candidates = exact_host or [r for r in rules if any(host_matches(h, host) for h in r.hosts)]
    matching = [r for r in candidates if path_matches(r, path)]
    if not matching:
        return None
    best = max(matching, key=lambda r: (len(r.path.rstrip("/")), r.exact))
    return best.service, best.port


def control_api_paths() -> list[str]:
    """A request path for every route of the gateway's app with the control API (`{param}` filled in): the routes
    of its OpenAPI schema (no route leaves itself out of it) and the app's own (the schema, the docs pages)."""
    from kubehands.api.main import create_app
    from kubehands.api.settings import Settings

    for module in (ROOT / "api" / "kubehands" / "api" / "routes").glob("*.py"):
        assert "include_in_schema" not in module.read_text(), f"{module.name}: a route the schema leaves out"
    app = create_app(Settings(enable_router=False))
    own = {route.path for route in app.routes if isinstance(getattr(route, "path", None), str)}
    paths = sorted({re.sub(r"\{[^}]+\}", "x-1", path) for path in {*app.openapi()["paths"], *own}})
    assert {"/start", "/sessions/batch", "/runtime/x-1", "/api/warm-runtime-configs", "/health", "/docs"} <= set(paths)
    return paths


def chart_control_api_paths() -> list[str]:
    """The chart's list (`kubehands.controlApiPaths` in templates/_helpers.tpl)."""
    helpers = (CHART / "templates" / "_helpers.tpl").read_text()
    found = re.search(r'define "kubehands.controlApiPaths" -\}\}\n\{\{- list (.*?) \| toJson', helpers, re.S)
    assert found is not None
    return re.findall(r'"([^"]+)"', found.group(1))


CONTROL_PATHS = control_api_paths()
CONTROL_PATHS_IN_CHART = chart_control_api_paths()
# Sandbox paths in path mode: the agent server (the app's and the SDK's calls), VS Code, the app ports; and paths
# that look like control-API ones behind a runtime id.
SANDBOX_PATHS = [
    f"/{RUNTIME_ID}",
    f"/{RUNTIME_ID}/",
    f"/{RUNTIME_ID}/alive",
    f"/{RUNTIME_ID}/api/conversations?x=1",
    f"/{RUNTIME_ID}/sockets/events/abc",
    f"/{RUNTIME_ID}/vscode/?tkn=abc",
    f"/{RUNTIME_ID}/vscode/connection_token",
    f"/{RUNTIME_ID}/work-1/",
    f"/{RUNTIME_ID}/work-2/index.html",
    f"/{RUNTIME_ID}/start",
    f"/{RUNTIME_ID}/health",
]
SANDBOX_HOSTS = [f"{RUNTIME_ID}.{DOMAIN}", *(f"{service}-{RUNTIME_ID}.{DOMAIN}" for service in urls.SERVICES)]


def test_the_chart_sends_no_more_than_the_control_api_to_the_gateway() -> None:
    """Each of the chart's prefixes is a route of the app (or the prefix of some), and none is a sandbox path."""
    for prefix in CONTROL_PATHS_IN_CHART:
        assert any(p == prefix or p.startswith(prefix + "/") for p in CONTROL_PATHS), prefix
        assert urls.match_path(prefix) is None and not prefix.startswith("/" + RUNTIME_ID[:3]), prefix
    assert len(set(CONTROL_PATHS_IN_CHART)) == len(CONTROL_PATHS_IN_CHART)


def test_the_sample_paths_are_what_the_router_matches() -> None:
    """The samples are right: the router takes every sandbox path and no control-API path, in path mode."""
    for path in SANDBOX_PATHS:
        assert urls.match_path(path.split("?", 1)[0]) is not None, path
    for path in CONTROL_PATHS:
        assert urls.match_path(path) is None, path
    for host in SANDBOX_HOSTS:
        assert urls.match_host(host, DOMAIN, "/") is not None, host


@pytest.fixture(scope="module")
def rendered_cases(helm: str) -> dict[tuple[str, bool, str], list[dict[str, Any]]]:
    return {case: render(helm, None, KUBE_CURRENT, *values(*case)) for case in CASES}


def env_of(docs: list[dict[str, Any]], deployment: str) -> dict[str, str]:
    container = by_kind(docs, "Deployment")[deployment]["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", "") for e in container["env"]}


@pytest.mark.parametrize("case", CASES, ids=case_name)
def test_each_host_and_path_reaches_the_service_that_serves_it(
    rendered_cases: dict[tuple[str, bool, str], list[dict[str, Any]]], case: tuple[str, bool, str]
) -> None:
    mode, router, exposure = case
    docs = rendered_cases[case]
    rules = ingress_rules(docs) if exposure == "ingress" else httproute_rules(docs)
    sandboxes = ROUTER if router else GATEWAY  # the Service that serves the sandbox URLs
    # Every backend is a Service of the release, on a port it has, in front of the Deployment of the same name.
    services = by_kind(docs, "Service")
    for rule in rules:
        ports = services[rule.service]["spec"]["ports"]
        assert rule.port in [p["name"] if isinstance(rule.port, str) else p["port"] for p in ports], rule
    serves = {
        name: (env["KUBEHANDS_ENABLE_CONTROL_API"] == "true", env["KUBEHANDS_ENABLE_ROUTER"] == "true")
        for name in {r.service for r in rules}
        for env in [env_of(docs, name)]
    }

    # The API host: every control-API request reaches the gateway (a separate router has no control API).
    for path in CONTROL_PATHS:
        reached = resolve(rules, API_HOST, path)
        assert reached is not None and reached[0] == GATEWAY, (case, path, reached)
        assert serves[GATEWAY][0]
    # Sandbox URLs reach the router (the gateway when there is none), which serves them.
    if mode == "path":
        public_url = env_of(docs, GATEWAY)["KUBEHANDS_PUBLIC_URL"]
        assert public_url == f"https://{API_HOST}"  # derived from the host (TLS set; httpRoute.https defaults on)
        settings = SpecSettings(routing_mode="path", public_url=public_url)
        handed_out = [
            urls.sandbox_url(settings, RUNTIME_ID),
            *(urls.service_url(settings, RUNTIME_ID, s) for s in urls.SERVICES),
        ]
        requests = [(API_HOST, path) for path in SANDBOX_PATHS]
        requests += [
            (urlsplit(url).hostname, urlsplit(url).path + suffix) for url in handed_out for suffix in ("", "/x")
        ]
    else:
        assert env_of(docs, GATEWAY)["KUBEHANDS_DOMAIN"] == DOMAIN
        paths = ("/", "/alive", "/start", "/health", "/api/conversations")
        requests = [(host, path) for host in SANDBOX_HOSTS for path in paths]
    for host, path in requests:
        reached = resolve(rules, str(host), path)
        assert reached is not None and reached[0] == sandboxes, (case, host, path, reached)
        assert serves[sandboxes][1]
    # Only what serves sandbox URLs gets them: path mode has no wildcard host; the API host's sandbox-looking paths
    # in subdomain mode go to the gateway, which answers them (404) itself.
    if mode == "path":
        assert all(resolve(rules, host, "/") is None for host in SANDBOX_HOSTS)
    else:
        assert {(resolve(rules, API_HOST, path) or ("",))[0] for path in SANDBOX_PATHS} == {GATEWAY}
    # Without a router in path mode, and in subdomain mode, the API host has one rule, `/` (no list to keep in step).
    api_rules = [r for r in rules if API_HOST in r.hosts]
    assert len(api_rules) == (len(CONTROL_PATHS_IN_CHART) + 1 if mode == "path" and router else 1), api_rules


@pytest.mark.parametrize("case", [c for c in CASES if c[2] == "ingress"], ids=case_name)
def test_the_ingress_validates_against_both_kubernetes_releases(
    rendered_cases: dict[tuple[str, bool, str], list[dict[str, Any]]],
    case: tuple[str, bool, str],
    schemas_1_20: Path,
    helm: str,
) -> None:
    ingresses = list(by_kind(rendered_cases[case], "Ingress").values())
    assert validation_errors(ingresses, test_chart._current_schema_dir()) == []
    old = [d for d in render(helm, None, KUBE_OLD, *values(*case)) if d["kind"] == "Ingress"]
    assert validation_errors(old, schemas_1_20) == []
