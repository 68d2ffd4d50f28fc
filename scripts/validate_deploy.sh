#!/usr/bin/env bash
# Validate the deployment offline: Dockerfile lint, YAML lint, render every kustomize overlay,
# schema-validate every rendered object, security-scan manifests + Dockerfile + secrets.
# No Docker engine and no cluster are needed (images are built elsewhere; see docs/deployment.md).
#
# Usage: scripts/validate_deploy.sh [--setup-only] [--out DIR]
#   --setup-only  only create/refresh .venv-deploy (from requirements-deploy-tools.txt) and exit
#   --out DIR     keep the rendered overlays in DIR (default: a temp dir, removed at exit)
# Env: PYTHON (interpreter for the venv, default python3.11 or python3), K8S_VERSION (1.37.0).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv-deploy"
REQS="$ROOT/requirements-deploy-tools.txt"
K8S_VERSION="${K8S_VERSION:-1.37.0}"
SETUP_ONLY=0
OUT=""

while [[ $# -gt 0 ]]; do
  case "$1" in
    --setup-only) SETUP_ONLY=1; shift ;;
    --out) OUT="$2"; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

log() { printf '== %s\n' "$*"; }

setup_venv() {
  # Same stamp as scripts/setup.sh --with-deploy-tools, so either one can set the venv up.
  local stamp="$VENV/.installed" want
  want="$(sha256sum "$REQS" | cut -c1-16)"
  if [[ -x "$VENV/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    return
  fi
  local py="${PYTHON:-}"
  if [[ -z "$py" ]]; then py="$(command -v python3.11 || command -v python3)"; fi
  log "creating $VENV with $py from $(basename "$REQS")"
  "$py" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQS"
  echo "$want" > "$stamp"
}

setup_venv
[[ "$SETUP_ONLY" == 1 ]] && exit 0

BIN="$VENV/bin"
if [[ -z "$OUT" ]]; then
  OUT="$(mktemp -d)"
  trap 'rm -rf "$OUT"' EXIT
fi
mkdir -p "$OUT"
cd "$ROOT"
# checkov must not phone home (no internet in CI); it then uses its bundled checks only.
CHECKOV=("$BIN/checkov" --compact --quiet --skip-download)

log "hadolint Dockerfile"
"$BIN/hadolint" Dockerfile
echo "hadolint: clean"

log "yamllint k8s/"
"$BIN/yamllint" --strict -c k8s/.yamllint.yaml k8s/
echo "yamllint: clean"

log "render overlays (kubectl kustomize, $("$BIN/kubectl" version --client 2>/dev/null | grep -i kustomize))"
overlays=()
for dir in k8s/overlays/*/; do
  name="$(basename "$dir")"
  "$BIN/kubectl" kustomize "$dir" > "$OUT/$name.yaml"
  echo "$name: $(grep -c '^kind:' "$OUT/$name.yaml") objects"
  overlays+=("$OUT/$name.yaml")
done

log "schema validation (Kubernetes $K8S_VERSION + k8s/schemas CRD subsets) and PromQL"
dashboards=()
for d in k8s/components/monitoring/dashboards/*.json; do dashboards+=(--dashboard "$d"); done
"$BIN/python" k8s/schemas/validate_rendered.py --kubernetes-version "$K8S_VERSION" \
  "${dashboards[@]}" "${overlays[@]}" k8s/secrets/*.yaml

log "checkov: rendered manifests"
"${CHECKOV[@]}" --framework kubernetes -d "$OUT"
log "checkov: Dockerfile"
"${CHECKOV[@]}" --framework dockerfile -f Dockerfile
log "checkov: secrets committed under k8s/"
"${CHECKOV[@]}" --framework secrets -d k8s
echo
echo "validate_deploy: all checks passed"
