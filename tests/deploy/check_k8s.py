#!/usr/bin/env python3
"""Consistency of the Kubernetes manifests with the binaries they run.

Every kustomization's resources and patches exist; every document parses; every container
command that runs a suite binary uses only options that binary's --help lists; probe ports
are container ports; gRPC readiness probes name the service the binary registers; the
service's Service targets a named container port. Usage: check_k8s.py K8S_DIR BIN...
"""
import os
import re
import subprocess
import sys

import yaml

k8s_dir = sys.argv[1]
binaries = {os.path.basename(b): b for b in sys.argv[2:]}
errors = []
help_cache = {}


def options_of(binary, sub):
    key = (binary, sub)
    if key not in help_cache:
        cmd = [binaries[binary]] + ([sub] if sub else []) + ["--help"]
        out = subprocess.run(cmd, capture_output=True, text=True).stdout
        help_cache[key] = set(re.findall(r"(--[a-z][a-z0-9-]*)", out))
    return help_cache[key]


def check_command(where, words):
    words = [w for w in words if w]
    for i, w in enumerate(words):
        name = os.path.basename(w)
        if name not in binaries:
            continue
        sub = words[i + 1] if i + 1 < len(words) and not words[i + 1].startswith("-") else None
        known = options_of(name, sub)
        for opt in words[i + 1:]:
            if opt in ("&&", ";", "|", "\\"):
                break
            if opt.startswith("--"):
                flag = opt.split("=", 1)[0]
                if flag not in known:
                    errors.append(f"{where}: {name} {sub or ''} has no option {flag}")


docs = []
for root, _, files in os.walk(k8s_dir):
    for f in sorted(files):
        if not f.endswith(".yaml"):
            continue
        path = os.path.join(root, f)
        with open(path) as fh:
            loaded = [d for d in yaml.safe_load_all(fh) if d]
        if f == "kustomization.yaml":
            for d in loaded:
                for r in d.get("resources", []) + [p["path"] for p in d.get("patches", []) if "path" in p]:
                    if not os.path.exists(os.path.join(root, r)):
                        errors.append(f"{path}: missing resource {r}")
        else:
            docs += [(path, d) for d in loaded]

SERVICE_NAMES = {
    "mamba-forecast": "mamba.forecasting.v1.ForecastingService",
    "mamba-rec": "mamba.recommendation.v1.RecommendationService",
}

for path, d in docs:
    kind = d.get("kind")
    spec = d.get("spec", {})
    if kind == "CronJob":
        pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    elif kind in ("Deployment", "StatefulSet", "Job"):
        pod = spec["template"]["spec"]
    else:
        continue
    for c in pod.get("containers", []):
        where = f"{path}: {d['metadata']['name']}/{c['name']}"
        words = list(c.get("command", [])) + list(c.get("args", []))
        if words[:2] == ["/bin/sh", "-c"]:
            words = " ".join(words[2:]).replace("\\\n", " ").split()
        check_command(where, words)
        ports = {p["containerPort"] for p in c.get("ports", [])}
        for probe in ("readinessProbe", "livenessProbe"):
            pr = c.get(probe)
            if not pr:
                continue
            for k in ("grpc", "tcpSocket", "httpGet"):
                if k in pr and isinstance(pr[k].get("port"), int) and pr[k]["port"] not in ports:
                    errors.append(f"{where}: {probe} port {pr[k]['port']} is not a container port")
            if "grpc" in pr and c.get("command", [""])[0] in SERVICE_NAMES:
                want = SERVICE_NAMES[c["command"][0]]
                if pr["grpc"].get("service") != want:
                    errors.append(f"{where}: gRPC probe service {pr['grpc'].get('service')} is not {want}")

print(f"checked {len(docs)} documents, {len(help_cache)} --help outputs")
for e in errors:
    print("ERROR", e)
print(f"deploy: {len(docs) - len(errors) if len(errors) <= len(docs) else 0} passed, {len(errors)} failed")
sys.exit(1 if errors else 0)
