"""Structure checks of the deployment files: every YAML document of deploy/**/*.yaml and
docker-compose.yaml (Istio manifests, the Compose bootstrap of Envoy, the Compose file).

    check_manifests.py OUT_DIR

Writes every plugin configuration it finds (WasmPlugin `pluginConfig`, the JSON inside an
EnvoyFilter or an Envoy bootstrap) to OUT_DIR as one JSON file each, for
integration/tests/deploy.rs, which has the filter's own parser accept them. Exits 1 listing
every problem found. Needs PyYAML (the project's .venv has it).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CLUSTER_HEADER = "x-ai-proxy-cluster"
WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
STRING_VALUE_TYPE = "type.googleapis.com/google.protobuf.StringValue"
# Istio's name of the cluster of a host and port: outbound|443||api.openai.com
ISTIO_CLUSTER = re.compile(r"^outbound\|(\d+)\|[^|]*\|(.+)$")
COMPOSE_WASM = "/etc/envoy/envoy_ai_proxy.wasm"
COMPOSE_VOLUMES = {
    "./deploy/compose/envoy.yaml:/etc/envoy/envoy.yaml:ro",
    f"./target/wasm32-wasip1/release/envoy_ai_proxy.wasm:{COMPOSE_WASM}:ro",
}


class Checker:
    def __init__(self) -> None:
        self.problems: list[str] = []
        # (name for the output file, where it was found, the configuration)
        self.plugin_configs: list[tuple[str, str, dict]] = []

    def problem(self, where: str, message: str) -> None:
        self.problems.append(f"{where}: {message}")

    def expect(self, ok: bool, where: str, message: str) -> bool:
        if not ok:
            self.problem(where, message)
        return ok

    def add_config(self, name: str, where: str, config: object) -> None:
        if self.expect(isinstance(config, dict), where, "plugin configuration is not an object"):
            self.plugin_configs.append((name, where, config))


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def dig(doc: object, *keys: object) -> object:
    """doc[k1][k2]..., or None when a step is missing or of the wrong type."""
    for k in keys:
        if isinstance(k, int):
            if not isinstance(doc, list) or k >= len(doc):
                return None
        elif not isinstance(doc, dict):
            return None
        doc = doc[k] if isinstance(k, int) else doc.get(k)
    return doc


def load(path: Path, c: Checker) -> list[object]:
    try:
        with path.open(encoding="utf-8") as f:
            return [d for d in yaml.safe_load_all(f) if d is not None]
    except (OSError, yaml.YAMLError) as e:
        c.problem(rel(path), f"not readable YAML: {e}")
        return []


def cluster_names(config: dict) -> set[str]:
    """The Envoy clusters a plugin configuration routes to (docs/config.md defaults)."""
    instances = config.get("instances")
    if isinstance(instances, list):
        return {
            str(i.get("cluster", i.get("name", "")))
            for i in instances
            if isinstance(i, dict)
        }
    return {str(config.get("cluster", config.get("provider", "")))}


def json_config(text: object, where: str, c: Checker) -> object:
    if not c.expect(isinstance(text, str), where, "configuration value is not a string"):
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        c.problem(where, f"configuration is not JSON: {e}")
        return None


def check_wasm_config(cfg: object, where: str, c: Checker) -> object:
    """An envoy.extensions.filters.http.wasm.v3.Wasm `config`: returns the plugin config."""
    c.expect(
        dig(cfg, "allow_on_headers_stop_iteration") is True,
        where,
        "allow_on_headers_stop_iteration must be true (the filter routes from the body)",
    )
    c.expect(
        dig(cfg, "vm_config", "runtime") == "envoy.wasm.runtime.v8",
        where,
        "vm_config.runtime must be envoy.wasm.runtime.v8",
    )
    c.expect(
        dig(cfg, "configuration", "@type") == STRING_VALUE_TYPE,
        where,
        f"configuration must be a {STRING_VALUE_TYPE}",
    )
    return json_config(dig(cfg, "configuration", "value"), where, c)


# --- Kubernetes / Istio -------------------------------------------------------------------


def check_k8s(doc: dict, where: str, c: Checker) -> None:
    for field in ("apiVersion", "kind"):
        c.expect(isinstance(doc.get(field), str) and doc[field] != "", where, f"no {field}")
    if doc.get("kind") == "Kustomization":
        return
    c.expect(
        isinstance(dig(doc, "metadata", "name"), str) and dig(doc, "metadata", "name") != "",
        where,
        "no metadata.name",
    )
    c.expect(isinstance(doc.get("spec"), dict), where, "no spec object")


def check_wasmplugin(doc: dict, where: str, c: Checker) -> None:
    url = dig(doc, "spec", "url")
    c.expect(
        isinstance(url, str) and url.startswith("oci://"),
        where,
        f"spec.url must be an oci:// image, not {url!r}",
    )
    cfg = dig(doc, "spec", "pluginConfig")
    if c.expect(isinstance(cfg, dict), where, "spec.pluginConfig must be an object"):
        c.add_config(f"istio-wasmplugin-{dig(doc, 'metadata', 'name')}", where, cfg)


def check_envoyfilter(doc: dict, where: str, c: Checker) -> None:
    patches = dig(doc, "spec", "configPatches")
    if not c.expect(isinstance(patches, list), where, "no spec.configPatches list"):
        return
    extension_names = set()
    filter_names = set()
    for i, p in enumerate(patches):
        at = f"{where} configPatches[{i}]"
        value = dig(p, "patch", "value")
        if dig(p, "applyTo") == "EXTENSION_CONFIG":
            if dig(value, "typed_config", "@type") != WASM_TYPE:
                continue
            extension_names.add(dig(value, "name"))
            uri = dig(value, "typed_config", "config", "vm_config", "code", "remote", "http_uri", "uri")
            c.expect(
                isinstance(uri, str) and uri.startswith("oci://"),
                at,
                f"the module must come from an oci:// image, not {uri!r}",
            )
            cfg = check_wasm_config(dig(value, "typed_config", "config"), at, c)
            if cfg is not None:
                c.add_config(f"istio-envoyfilter-{dig(doc, 'metadata', 'name')}", at, cfg)
        elif dig(p, "applyTo") == "HTTP_FILTER":
            if dig(value, "config_discovery") is not None:
                filter_names.add(dig(value, "name"))
                c.expect(
                    WASM_TYPE in (dig(value, "config_discovery", "type_urls") or []),
                    at,
                    f"config_discovery.type_urls must list {WASM_TYPE}",
                )
                c.expect(
                    dig(p, "patch", "operation") == "INSERT_BEFORE"
                    and dig(p, "match", "listener", "filterChain", "filter", "subFilter", "name")
                    == "envoy.filters.http.router",
                    at,
                    "the filter must be inserted before envoy.filters.http.router",
                )
    c.expect(bool(extension_names), where, "no Wasm EXTENSION_CONFIG patch")
    c.expect(
        extension_names == filter_names,
        where,
        f"HTTP_FILTER names {sorted(map(str, filter_names))} must equal the EXTENSION_CONFIG "
        f"names {sorted(map(str, extension_names))}",
    )


def check_mesh(docs: list[tuple[str, dict]], c: Checker) -> None:
    """Cross-checks of the Istio manifests: routing keys, destinations, TLS."""
    by_kind: dict[str, list[tuple[str, dict]]] = {}
    for where, d in docs:
        by_kind.setdefault(str(d.get("kind")), []).append((where, d))

    mesh_configs = [
        (w, cfg) for (_, w, cfg) in c.plugin_configs if w.startswith("deploy/istio/")
    ]
    if not c.expect(bool(mesh_configs), "deploy/istio", "no plugin configuration found"):
        return
    # WasmPlugin and EnvoyFilter are two ways to deploy the same thing: they must agree.
    first_where, first = mesh_configs[0]
    for w, cfg in mesh_configs[1:]:
        c.expect(cfg == first, w, f"plugin configuration differs from the one in {first_where}")

    header = str(first.get("cluster_header", DEFAULT_CLUSTER_HEADER)).lower()
    clusters = set().union(*(cluster_names(cfg) for _, cfg in mesh_configs))

    entries = {
        h: w
        for w, d in by_kind.get("ServiceEntry", [])
        for h in (dig(d, "spec", "hosts") or [])
    }
    rules = {dig(d, "spec", "host"): (w, d) for w, d in by_kind.get("DestinationRule", [])}

    routed: dict[str, tuple[str, int | None]] = {}
    vss = by_kind.get("VirtualService", [])
    c.expect(bool(vss), "deploy/istio", "no VirtualService")
    for where, vs in vss:
        for i, route in enumerate(dig(vs, "spec", "http") or []):
            at = f"{where} http[{i}]"
            values = [
                dig(m, "headers", header, "exact")
                for m in (dig(route, "match") or [])
                if isinstance(dig(m, "headers"), dict)
            ]
            other = [
                k
                for m in (dig(route, "match") or [])
                for k in (dig(m, "headers") or {})
                if str(k).lower() != header
            ]
            c.expect(not other, at, f"matches headers {other}, expected only `{header}`")
            c.expect(
                bool(values) and all(isinstance(v, str) for v in values),
                at,
                f"must match `{header}` with `exact` values",
            )
            c.expect(
                header in (dig(route, "headers", "request", "remove") or []),
                at,
                f"must remove `{header}` so that the provider never sees it",
            )
            dests = dig(route, "route") or []
            c.expect(len(dests) == 1, at, "must have exactly one destination")
            host = dig(dests, 0, "destination", "host")
            port = dig(dests, 0, "destination", "port", "number")
            for v in values:
                if isinstance(v, str):
                    routed[v] = (str(host), port)
                    m = ISTIO_CLUSTER.match(v)
                    if m:
                        c.expect(
                            (m.group(2), int(m.group(1))) == (host, port),
                            at,
                            f"value {v!r} names another cluster than its destination "
                            f"{host}:{port}",
                        )
            c.expect(host in entries, at, f"destination {host} has no ServiceEntry")
            rule = rules.get(host)
            if c.expect(rule is not None, at, f"destination {host} has no DestinationRule"):
                check_tls(rule[1], host, port, rule[0], c)

    c.expect(
        set(routed) == clusters,
        "deploy/istio",
        f"VirtualService `{header}` values {sorted(routed)} must equal the plugin "
        f"configuration's cluster names {sorted(clusters)}",
    )


def check_tls(rule: dict, host: object, port: object, where: str, c: Checker) -> None:
    tls = None
    for s in dig(rule, "spec", "trafficPolicy", "portLevelSettings") or []:
        if dig(s, "port", "number") == port:
            tls = dig(s, "tls")
    if tls is None:
        tls = dig(rule, "spec", "trafficPolicy", "tls")
    if not c.expect(isinstance(tls, dict), where, f"no TLS settings for {host}:{port}"):
        return
    c.expect(tls.get("mode") == "SIMPLE", where, f"{host}: tls.mode must be SIMPLE")
    c.expect(tls.get("sni") == host, where, f"{host}: tls.sni must be {host}")
    c.expect(
        tls.get("insecureSkipVerify") in (None, False),
        where,
        f"{host}: insecureSkipVerify turns certificate checks off",
    )


def check_kustomization(doc: dict, path: Path, c: Checker) -> None:
    where = rel(path)
    kinds: list[str] = []
    for r in doc.get("resources") or []:
        target = path.parent / str(r)
        if c.expect(target.is_file(), where, f"resource {r} does not exist"):
            kinds += [str(d.get("kind")) for d in load(target, c) if isinstance(d, dict)]
    c.expect(
        not ("WasmPlugin" in kinds and "EnvoyFilter" in kinds),
        where,
        "lists both a WasmPlugin and an EnvoyFilter: the filter would run twice",
    )


# --- Envoy bootstrap and Docker Compose -------------------------------------------------


def wasm_filters(bootstrap: dict):
    for li, listener in enumerate(dig(bootstrap, "static_resources", "listeners") or []):
        for chain in dig(listener, "filter_chains") or []:
            for nf in dig(chain, "filters") or []:
                hcm = dig(nf, "typed_config")
                for fi, hf in enumerate(dig(hcm, "http_filters") or []):
                    if dig(hf, "typed_config", "@type") == WASM_TYPE:
                        yield li, hcm, fi, hf


def check_bootstrap(doc: dict, path: Path, c: Checker) -> None:
    where = rel(path)
    c.expect("{{" not in path.read_text(encoding="utf-8"), where, "placeholder {{...}} left")
    clusters = {dig(cl, "name"): cl for cl in dig(doc, "static_resources", "clusters") or []}
    found = False
    for li, hcm, fi, hf in wasm_filters(doc):
        found = True
        at = f"{where} listener {li}"
        cfg = check_wasm_config(dig(hf, "typed_config", "config"), at, c)
        filters = dig(hcm, "http_filters") or []
        c.expect(
            dig(filters, fi + 1, "name") == "envoy.filters.http.router",
            at,
            "the Wasm filter must come just before the router",
        )
        if not isinstance(cfg, dict):
            continue
        c.add_config(f"bootstrap-{path.parent.name}-{path.stem}", at, cfg)
        header = str(cfg.get("cluster_header", DEFAULT_CLUSTER_HEADER)).lower()
        for vh in dig(hcm, "route_config", "virtual_hosts") or []:
            for r in dig(vh, "routes") or []:
                c.expect(
                    dig(r, "route", "cluster_header") == header,
                    at,
                    f"routes must use cluster_header: {header}",
                )
                c.expect(
                    header in (dig(r, "request_headers_to_remove") or []),
                    at,
                    f"routes must remove {header}",
                )
        for name in cluster_names(cfg):
            c.expect(name in clusters, at, f"plugin configuration names cluster {name!r}, not defined")
    c.expect(found, where, "no Wasm HTTP filter")


def check_compose(doc: dict, path: Path, c: Checker) -> None:
    where = rel(path)
    services = dig(doc, "services")
    if not c.expect(isinstance(services, dict), where, "no services"):
        return
    for name in ("mock", "envoy"):
        c.expect(name in services, where, f"no service {name}")
    mock, envoy = services.get("mock"), services.get("envoy")
    c.expect(
        dig(mock, "build", "dockerfile") == "deploy/docker/mock.Dockerfile"
        and dig(mock, "build", "context") == ".",
        where,
        "mock must build deploy/docker/mock.Dockerfile with the repository as context",
    )
    image = dig(envoy, "image")
    c.expect(
        isinstance(image, str) and image.startswith("envoyproxy/envoy:v1.40"),
        where,
        f"envoy image must be envoyproxy/envoy v1.40 (the tested version), not {image!r}",
    )
    volumes = set(dig(envoy, "volumes") or [])
    for v in sorted(COMPOSE_VOLUMES - volumes):
        c.problem(where, f"envoy service lacks the volume {v}")
    for v in volumes:
        src = str(v).split(":", 1)[0]
        if src.startswith("./deploy/"):
            c.expect((ROOT / src).is_file(), where, f"volume source {src} does not exist")
    command = [str(x) for x in dig(envoy, "command") or []]
    c.expect(
        any(a == "-c" and b == "/etc/envoy/envoy.yaml" for a, b in zip(command, command[1:])),
        where,
        "envoy command must include -c /etc/envoy/envoy.yaml",
    )
    depends = dig(envoy, "depends_on")
    c.expect(depends is not None and "mock" in depends, where, "envoy must depend on mock")
    published = {str(p).rsplit(":", 1)[-1] for p in dig(envoy, "ports") or []}
    for port in ("10000", "9901"):
        c.expect(port in published, where, f"envoy must publish port {port}")


def check_compose_bootstrap(bootstrap: dict, c: Checker) -> None:
    """deploy/compose/envoy.yaml fits the Compose file: addresses, ports, paths."""
    where = "deploy/compose/envoy.yaml"
    c.expect(
        dig(bootstrap, "admin", "address", "socket_address")
        == {"address": "0.0.0.0", "port_value": 9901},
        where,
        "admin must listen on 0.0.0.0:9901",
    )
    listeners = dig(bootstrap, "static_resources", "listeners") or []
    c.expect(
        [dig(li, "address", "socket_address") for li in listeners]
        == [{"address": "0.0.0.0", "port_value": 10000}],
        where,
        "one listener on 0.0.0.0:10000",
    )
    for _, _, _, hf in wasm_filters(bootstrap):
        got = dig(hf, "typed_config", "config", "vm_config", "code", "local", "filename")
        c.expect(got == COMPOSE_WASM, where, f"the module must be {COMPOSE_WASM}, not {got!r}")
    mock = [
        cl for cl in dig(bootstrap, "static_resources", "clusters") or [] if dig(cl, "name") == "mock"
    ]
    if c.expect(len(mock) == 1, where, "no cluster `mock`"):
        c.expect(dig(mock[0], "type") == "STRICT_DNS", where, "cluster mock must be STRICT_DNS")
        c.expect(
            dig(mock[0], "load_assignment", "endpoints", 0, "lb_endpoints", 0, "endpoint", "address", "socket_address")
            == {"address": "mock", "port_value": 8081},
            where,
            "cluster mock must point at the compose service mock:8081",
        )


def check_dockerfiles(c: Checker) -> None:
    plugin = ROOT / "deploy/docker/Dockerfile"
    lines = [
        ln.strip()
        for ln in plugin.read_text(encoding="utf-8").splitlines()
        if ln.strip() and not ln.lstrip().startswith("#")
    ] if plugin.is_file() else []
    c.expect(
        lines == ["FROM scratch", "COPY envoy_ai_proxy.wasm ./plugin.wasm"],
        rel(plugin),
        "must be exactly FROM scratch + COPY envoy_ai_proxy.wasm ./plugin.wasm",
    )
    mock = ROOT / "deploy/docker/mock.Dockerfile"
    text = mock.read_text(encoding="utf-8") if mock.is_file() else ""
    c.expect("--bin mock-llm" in text, rel(mock), "must build the mock-llm binary")
    c.expect(
        "TCP-LISTEN:8081" in text, rel(mock), "must publish the mock on port 8081 (socat)"
    )


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    out = Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    c = Checker()

    files = sorted((ROOT / "deploy").rglob("*.yaml")) + [ROOT / "docker-compose.yaml"]
    mesh_docs: list[tuple[str, dict]] = []
    compose_bootstrap = None
    for path in files:
        docs = load(path, c)
        c.expect(bool(docs), rel(path), "no YAML document")
        for n, doc in enumerate(docs):
            where = f"{rel(path)}#{n}"
            if not c.expect(isinstance(doc, dict), where, "document is not a mapping"):
                continue
            if path.name == "docker-compose.yaml":
                check_compose(doc, path, c)
            elif "static_resources" in doc:
                check_bootstrap(doc, path, c)
                if rel(path) == "deploy/compose/envoy.yaml":
                    compose_bootstrap = doc
            elif "apiVersion" in doc or "kind" in doc or rel(path).startswith("deploy/istio/"):
                check_k8s(doc, where, c)
                kind = doc.get("kind")
                if kind == "Kustomization":
                    check_kustomization(doc, path, c)
                    continue
                if kind == "WasmPlugin":
                    check_wasmplugin(doc, where, c)
                elif kind == "EnvoyFilter":
                    check_envoyfilter(doc, where, c)
                mesh_docs.append((where, doc))
            else:
                c.problem(where, "neither a Kubernetes object nor an Envoy bootstrap")

    if c.expect(compose_bootstrap is not None, "deploy/compose/envoy.yaml", "missing"):
        check_compose_bootstrap(compose_bootstrap, c)
    if mesh_docs:
        check_mesh(mesh_docs, c)
    check_dockerfiles(c)

    seen: dict[str, int] = {}
    for name, where, cfg in c.plugin_configs:
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            name = f"{name}-{seen[name]}"
        (out / f"{name}.json").write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
        print(f"plugin configuration: {where} -> {name}.json")

    if c.problems:
        print(f"{len(c.problems)} problem(s):", file=sys.stderr)
        for p in c.problems:
            print(f"  {p}", file=sys.stderr)
        return 1
    print(f"ok: {len(files)} files, {len(c.plugin_configs)} plugin configuration(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
