#!/usr/bin/env bash
# Lints deploy/ where nothing of it can run (no Docker engine, no cluster, no systemd as PID 1):
#   hadolint            deploy/Dockerfile
#   kubernetes-validate deploy/k8s/*.yaml against Kubernetes' schemas, strict (unknown fields
#                       are errors), for the oldest and newest versions it ships schemas of
#   systemd-analyze     verify deploy/systemd/aemos.service, its ExecStart pointing at $1
#   python (PyYAML)     compose.yaml and kustomization.yaml parse and hold what they should,
#                       the ports agree across the image, compose and Kubernetes, and the
#                       ConfigMap's config file has only `aemos serve` flags as keys (and, when
#                       $1 is the aemos binary, that binary loads it)
# Usage: bash deploy/check.sh [AEMOS_BINARY]   (default: true, for the unit's ExecStart)
# The tools: bash .ci/install-test-deps puts them in $HOME/.local/bin.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.local/bin:$PATH"

bin=${1:-$(type -P true)}
[ -x "$bin" ] || { echo "check.sh: $bin is not an executable file" >&2; exit 2; }
bin=$(readlink -f "$bin")
# The Kubernetes versions the manifests must be valid for (kubernetes-validate 1.37.0 ships
# schemas from 1.25 on; 1.30 is about the oldest still supported by the big providers).
k8s_versions=(1.30.0 1.37.0)

passed=0
failed=()
need() {
  command -v "$1" >/dev/null 2>&1 && return 0
  echo "$1 not found: bash .ci/install-test-deps installs it into \$HOME/.local/bin"
  return 1
}
run() { # NAME FUNCTION: runs one check, counts it, goes on after a failure
  echo "== $1"
  if "$2"; then
    echo "ok"
    passed=$((passed + 1))
  else
    echo "FAILED: $1"
    failed+=("$1")
  fi
}

# A python with PyYAML (tomllib is Python 3.11's): kubernetes-validate's venv has both.
python=""
for candidate in \
  "$(dirname "$(readlink -f "$(command -v kubernetes-validate 2>/dev/null || echo /nonexistent)")")/python" \
  python3 /usr/bin/python3; do
  if "$candidate" -c 'import yaml, tomllib' >/dev/null 2>&1; then
    python=$candidate
    break
  fi
done

dockerfile() {
  need hadolint || return 1
  hadolint --no-color deploy/Dockerfile
}

manifests() {
  need kubernetes-validate || return 1
  local files=() f v
  for f in deploy/k8s/*.yaml; do
    [ "$(basename "$f")" = kustomization.yaml ] || files+=("$f")
  done
  # kustomization.yaml is kustomize's, not a Kubernetes resource: checked in `consistency`.
  for v in "${k8s_versions[@]}"; do
    kubernetes-validate --strict --quiet -k "$v" "${files[@]}" || return 1
    echo "valid for Kubernetes $v: ${files[*]}"
  done
}

unit() {
  need systemd-analyze || return 1
  local dir out status=0
  dir=$(mktemp -d)
  # The file keeps its name: the unit's name is in its credentials path.
  sed "s|^ExecStart=/usr/local/bin/aemos |ExecStart=$bin |" deploy/systemd/aemos.service \
    > "$dir/aemos.service"
  grep -q "^ExecStart=$bin serve " "$dir/aemos.service" || {
    echo "deploy/systemd/aemos.service: no ExecStart=/usr/local/bin/aemos serve ..."
    rm -rf "$dir"
    return 1
  }
  # verify exits 0 on unknown keys and bad values, only printing them: any output fails.
  out=$(systemd-analyze verify "$dir/aemos.service" 2>&1) || status=$?
  rm -rf "$dir"
  if [ "$status" -ne 0 ] || [ -n "$out" ]; then
    echo "$out"
    return 1
  fi
  echo "systemd-analyze verify: clean (ExecStart=$bin)"
}

config_file() {
  [ -n "$python" ] || { echo "no python with PyYAML and tomllib"; return 1; }
  local dir status=0
  dir=$(mktemp -d)
  "$python" - "$dir/aemos.toml" <<'PY' || status=$?
import re, sys, tomllib, yaml

# The ConfigMap's file, and the flags of `aemos serve` from README's Configuration table.
docs = [d for d in yaml.safe_load_all(open("deploy/k8s/configmap.yaml")) if d]
text = next(d for d in docs if d["kind"] == "ConfigMap")["data"]["aemos.toml"]
open(sys.argv[1], "w").write(text)
config = tomllib.loads(text)
section = open("README.md").read().split("\n## Configuration", 1)[1].split("\n## ", 1)[0]
flags = set()
for row in section.splitlines():
    if row.startswith("| `--"):
        flags.update(re.findall(r"`--([a-z0-9-]+)`", row.split("|")[1]))
# --log-format is a flag of every command, not of `serve`: the file refuses it, as --config.
flags -= {"log-format", "config"}
bad = sorted(k for k in config if k not in flags)
for key in bad:
    print(f"deploy/k8s/configmap.yaml: aemos.toml sets {key!r}, which is no `aemos serve` flag in README's Configuration table")
wrong = sorted(k for k, v in config.items() if not isinstance(v, (str, int, bool)))
for key in wrong:
    print(f"deploy/k8s/configmap.yaml: aemos.toml: {key} is neither a string, an integer nor a boolean")
if bad or wrong:
    sys.exit(1)
print(f"aemos.toml in the ConfigMap: {len(config)} keys, each an `aemos serve` flag")
PY
  # With the real binary: aemos itself reads the file (unknown keys stop it before --help).
  if [ "$status" -eq 0 ] && "$bin" serve --help 2>/dev/null | grep -q -- '--config'; then
    if "$bin" serve --config "$dir/aemos.toml" --help >/dev/null; then
      echo "$bin serve --config <the ConfigMap's aemos.toml>: loads"
    else
      status=1
    fi
  fi
  rm -rf "$dir"
  return "$status"
}

consistency() {
  [ -n "$python" ] || { echo "no python with PyYAML and tomllib"; return 1; }
  "$python" - <<'PY'
import glob, os, re, sys, yaml

problems = []

# compose.yaml parses, and the aemos service has its secret, config file and TLS pair.
compose = yaml.safe_load(open("deploy/compose.yaml"))
aemos = compose["services"]["aemos"]
env = aemos["environment"]
if not str(env.get("AEMOS_JWT_SECRET", "")).startswith("${AEMOS_JWT_SECRET:?"):
    problems.append("compose.yaml: AEMOS_JWT_SECRET must be ${AEMOS_JWT_SECRET:?...} (required, never a default)")
if env.get("AEMOS_CONFIG") != "/etc/aemos/aemos.toml":
    problems.append("compose.yaml: AEMOS_CONFIG is not /etc/aemos/aemos.toml")
targets = {v.split(":")[1] for v in aemos["volumes"]}
for t in ("/var/lib/aemos", "/etc/aemos/aemos.toml", "/etc/aemos/tls"):
    if t not in targets:
        problems.append(f"compose.yaml: nothing mounted at {t}")
compose_ports = set()
for p in aemos["ports"]:
    m = re.fullmatch(r"(\d+):(\d+)/(tcp|udp)", p)
    if not m or m[1] != m[2]:
        problems.append(f"compose.yaml: port {p!r} is not HOST:CONTAINER/PROTO with the same port")
    else:
        compose_ports.add(f"{m[2]}/{m[3]}")

# kustomization.yaml lists exactly the manifests beside it.
k = yaml.safe_load(open("deploy/k8s/kustomization.yaml"))
listed = set(k["resources"])
present = {os.path.basename(f) for f in glob.glob("deploy/k8s/*.yaml")} - {"kustomization.yaml"}
for f in sorted(listed - present):
    problems.append(f"kustomization.yaml lists {f}, which does not exist")
for f in sorted(present - listed):
    problems.append(f"kustomization.yaml does not list {f}")

# The ports: the image's EXPOSE and listener addresses, compose, the Service, the pod.
dockerfile = open("deploy/Dockerfile").read()
exposed = set()
for line in re.findall(r"^EXPOSE (.+)$", dockerfile, re.M):
    exposed |= {p if "/" in p else p + "/tcp" for p in line.split()}
listening = {f"{port}/tcp" for port in re.findall(r"AEMOS_\w+_ADDR=0\.0\.0\.0:(\d+)", dockerfile)}
manifests = [d for f in sorted(present) for d in yaml.safe_load_all(open(f"deploy/k8s/{f}")) if d]
service = next(d for d in manifests if d["kind"] == "Service" and d["metadata"]["name"] == "aemos")
service_ports = {f"{p['port']}/{p.get('protocol', 'TCP').lower()}" for p in service["spec"]["ports"]}
sts = next(d for d in manifests if d["kind"] == "StatefulSet")
container = sts["spec"]["template"]["spec"]["containers"][0]
pod_ports = {f"{p['containerPort']}/{p.get('protocol', 'TCP').lower()}" for p in container["ports"]}
sets = {"Dockerfile EXPOSE": exposed, "Dockerfile 0.0.0.0 listeners": listening,
        "compose.yaml ports": compose_ports, "Service aemos": service_ports,
        "StatefulSet containerPorts": pod_ports}
if len({frozenset(s) for s in sets.values()}) != 1:
    for name, s in sets.items():
        problems.append(f"ports differ: {name}: {' '.join(sorted(s))}")

# The probes use the health routes the README documents.
readme = open("README.md").read()
for probe in ("livenessProbe", "readinessProbe"):
    path = container[probe]["httpGet"]["path"]
    if f"`{path}`" not in readme and f"{path}`" not in readme:
        problems.append(f"statefulset.yaml: {probe} path {path} is not in README.md")

for p in problems:
    print(p)
if problems:
    sys.exit(1)
print(f"compose.yaml and kustomization.yaml parse; ports {' '.join(sorted(exposed))} agree everywhere")
if not os.path.exists("deploy/aemos.toml"):
    print("note: deploy/aemos.toml, which compose.yaml mounts, is missing (generated from the flags: see api/src/config_file/tests.rs)")
PY
}

run "hadolint deploy/Dockerfile" dockerfile
run "kubernetes-validate --strict deploy/k8s" manifests
run "systemd-analyze verify deploy/systemd/aemos.service" unit
run "the ConfigMap's config file" config_file
run "compose.yaml, kustomization.yaml and the ports" consistency

echo "== ${passed} passed, ${#failed[@]} failed"
[ "${#failed[@]}" -eq 0 ]
