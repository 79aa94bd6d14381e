#!/usr/bin/env python3
"""Checks the alert rules (the PrometheusRule of the prometheus component, as rendered):

1. promtool (Prometheus' own checker) accepts them: PromQL syntax, durations, templates.
2. Every metric they select is one the services export, named as the collector's Prometheus
   exporter names it; every label they use is one of that metric's attributes or a resource
   label (service_name...). The metrics are read from the Rust sources (each
   `meter.<type>("name")...with_unit("u")` and the `KeyValue::new("key", ..)` of its crate),
   so a renamed metric or attribute fails here instead of leaving an alert that never fires.
3. The collector configuration produces those names: OTLP/gRPC in with TLS, the prometheus
   exporter with resource_to_telemetry_conversion on (service.name -> service_name).
4. `rpc_grpc_status_code` is matched with numeric codes, as the services record it.

usage: alerts_check.py RENDERED.yaml (one that includes the prometheus component)
"""
import pathlib
import re
import subprocess
import sys

import promql_parser
import yaml

from checks import check, finish

REPO = pathlib.Path(__file__).resolve().parent.parent
PROMTOOL = REPO / ".venv/bin/promtool"
COLLECTOR = REPO / "deploy/otel-collector.yaml"
# Labels the collector adds to every series: resource attributes (resource_to_telemetry_conversion)
# and the instrumentation scope.
RESOURCE_LABELS = {"service_name", "job", "instance", "service_instance_id", "otel_scope_name", "otel_scope_version"}
UNITS = {"s": "seconds", "ms": "milliseconds", "us": "microseconds", "ns": "nanoseconds", "By": "bytes"}
INSTRUMENT = re.compile(
    r"\.(u64|f64|i64)_(observable_)?(counter|histogram|up_down_counter|gauge)\(\s*\"([a-z0-9_.]+)\"\s*\)"
    r"(?P<chain>(?:\s*\.\s*with_[a-z_]+\((?:[^()]|\([^()]*\))*\))*)", re.S)
ATTRIBUTE = re.compile(r"KeyValue::new\(\s*\"([a-z0-9_.]+)\"")



def exported_metrics():
    """Prometheus series name -> (instrument, allowed labels), from the Rust sources."""
    out = {}
    for crate in sorted((REPO / "crates").iterdir()):
        src = crate / "src"
        if not src.is_dir() or crate.name in ("ts-bench", "ts-testkit"):
            continue
        files = [p.read_text() for p in src.rglob("*.rs")]
        labels = {k.replace(".", "_") for text in files for k in ATTRIBUTE.findall(text)}
        for text in files:
            for m in INSTRUMENT.finditer(text):
                _, _, kind, name = m.groups()[:4]
                unit = re.search(r"with_unit\(\s*\"([^\"]*)\"", m.group("chain"))
                base = name.replace(".", "_")
                suffix = UNITS.get(unit.group(1), "") if unit else ""
                if suffix and not base.endswith("_" + suffix):
                    base += "_" + suffix
                series = {"counter": [base + "_total"], "histogram": [base + s for s in ("_bucket", "_sum", "_count")]}
                for s in series.get(kind, [base]):
                    out[s] = (name, labels | RESOURCE_LABELS | ({"le"} if s.endswith("_bucket") else set()))
    return out


def selectors_and_labels(expr):
    """The vector selectors of an expression, and the label names it groups or matches on."""
    selectors, grouping = [], set()

    def visit(node):
        kind = type(node).__name__
        if kind == "VectorSelector":
            selectors.append(node)
        elif kind == "AggregateExpr" and node.modifier is not None:
            grouping.update(node.modifier.labels)
        elif kind == "BinaryExpr" and node.modifier is not None and node.modifier.matching is not None:
            grouping.update(node.modifier.matching.labels)
        return True

    promql_parser.walk(expr, visit)
    return selectors, grouping


def main():
    rendered = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "target/k8s/prod-all.yaml")
    rules = [d for d in yaml.safe_load_all(rendered.read_text()) if d and d.get("kind") == "PrometheusRule"]
    if not check(rules, f"{rendered.name} holds PrometheusRules"):
        sys.exit(1)

    # 1. promtool, over the rule groups as a plain rules file.
    work = rendered.parent / "alert-rules"
    work.mkdir(exist_ok=True)
    for rule in rules:
        path = work / f"{rule['metadata']['name']}.rules.yaml"
        path.write_text(yaml.safe_dump(rule["spec"], sort_keys=False))
        run = subprocess.run([str(PROMTOOL), "check", "rules", str(path)], capture_output=True, text=True)
        check(run.returncode == 0, f"promtool check rules {rule['metadata']['name']}: {(run.stdout + run.stderr).strip()}")

    # 2 and 4. Metric names, labels and status codes.
    metrics = exported_metrics()
    check("rpc_server_call_duration_seconds_count" in metrics, "the services export rpc.server.call.duration (s)")
    for rule in (r for g in rules for grp in g["spec"]["groups"] for r in grp["rules"]):
        name = rule.get("alert") or rule.get("record")
        try:
            expr = promql_parser.parse(rule["expr"])
        except Exception as e:  # the parser's own error type
            check(False, f"{name}: expression parses ({e})")
            continue
        selectors, grouping = selectors_and_labels(expr)
        allowed = set()
        for sel in selectors:
            metric = metrics.get(sel.name)
            if not check(metric is not None, f"{name}: {sel.name} is exported by the services (as the collector names it)"):
                continue
            allowed |= metric[1]
            for m in sel.matchers.matchers:
                check(m.name in metric[1], f"{name}: {sel.name} has label {m.name} (attributes of {metric[0]})")
                if m.name == "rpc_grpc_status_code":
                    codes = m.value.split("|")
                    check(all(c.isdigit() and 0 <= int(c) <= 16 for c in codes),
                          f"{name}: rpc_grpc_status_code matched with numeric codes ({m.value})")
        for label in grouping:
            check(label in allowed, f"{name}: groups by {label}, a label of its metrics")
        for text in rule.get("annotations", {}).values():
            for label in re.findall(r"\$labels\.([a-zA-Z_][a-zA-Z0-9_]*)", text):
                check(label in (grouping or allowed), f"{name}: annotation's $labels.{label} survives the aggregation")

    # 3. The collector produces these names.
    config = yaml.safe_load(COLLECTOR.read_text())
    grpc = config["receivers"]["otlp"]["protocols"]["grpc"]
    tls = grpc.get("tls", {})
    check({"cert_file", "key_file", "reload_interval"} <= set(tls), "collector: OTLP/gRPC receiver with TLS, re-read when renewed")
    # Services present no client certificate (the exporter reads one only at start: it
    # would expire under a long-lived pod), so the receiver must not require one.
    check("client_ca_file" not in tls, "collector: no client certificate required of the services")
    prom = config["exporters"].get("prometheus", {})
    check(prom.get("resource_to_telemetry_conversion", {}).get("enabled") is True,
          "collector: prometheus exporter turns resource attributes into labels (service_name)")
    check(prom.get("add_metric_suffixes", True) is True, "collector: prometheus exporter adds unit and type suffixes")
    pipelines = config["service"]["pipelines"]
    check("prometheus" in pipelines["metrics"]["exporters"] and "otlp" in pipelines["metrics"]["receivers"],
          "collector: metrics pipeline otlp -> prometheus")
    check(any(e.startswith("otlp") for e in pipelines["traces"]["exporters"]), "collector: traces go on over OTLP")
    finish("alert rules")


if __name__ == "__main__":
    main()
