# Smoke test of the running demo: the `test` process of process-compose.demo (nix/demo.nix).
#
# `nix flake check` runs it headless in the build sandbox (checks.<system>.demo) once both
# workers, Prometheus and Grafana are healthy; `nix run .#demo-test -- -t=false` runs the same
# outside the sandbox. writeShellApplication adds the shebang and `set -euo pipefail`, and
# lints this file with ShellCheck when it builds the script.
#
# It asserts that
#   1. every panel query of the dashboard (read from the very JSON file Grafana loads, with
#      Grafana's interval macros replaced by fixed windows) returns series for both
#      worker_type="bad" and worker_type="optimized"; queries over ALERTS only have to
#      evaluate, since an alert fires only while its condition holds;
#   2. Grafana serves the dashboard by its uid, with the file's title;
#   3. the provisioned datasource points at Prometheus (so ${PROMETHEUS_URL} was expanded)
#      and Grafana can query Prometheus through it.
#
# Environment (set by nix/demo.nix): PROMETHEUS_URL GRAFANA_URL GRAFANA_AUTH DASHBOARD_FILE
# DASHBOARD_UID DATASOURCE_UID TIMEOUT_SECONDS.

deadline=$((SECONDS + ${TIMEOUT_SECONDS:-600}))

fail() {
  echo "demo test: FAIL: $*" >&2
  exit 1
}

# The dashboard's queries, one JSON string per line (expressions span lines). 30s holds 15
# samples at the 2 s scrape interval, so every rate has data as soon as two scrapes exist.
mapfile -t queries < <(
  jq -c '
    [.. | objects | select(has("expr")) | .expr]
    | unique
    | .[]
    | gsub("\\$__rate_interval|\\$\\{__rate_interval\\}"; "30s")
    | gsub("\\$__interval_ms|\\$\\{__interval_ms\\}"; "30000")
    | gsub("\\$__interval|\\$\\{__interval\\}"; "30s")
    | gsub("\\$__range_ms|\\$\\{__range_ms\\}"; "300000")
    | gsub("\\$__range_s|\\$\\{__range_s\\}"; "300")
    | gsub("\\$__range|\\$\\{__range\\}"; "5m")
  ' "$DASHBOARD_FILE"
)
((${#queries[@]} > 0)) || fail "no panel queries found in $DASHBOARD_FILE"
for json in "${queries[@]}"; do
  query=$(jq -r . <<<"$json")
  [[ $query != *'$'* ]] || fail "unknown dashboard variable left in query: $query"
done

# Succeeds when the query returns series for both workers (or, for ALERTS, evaluates).
answers_for_both_workers() {
  local query=$1 response
  response=$(curl -fsS --get "$PROMETHEUS_URL/api/v1/query" --data-urlencode "query=$query") || return 1
  if [[ $query == *ALERTS* ]]; then
    jq -e '.status == "success"' <<<"$response" >/dev/null
  else
    jq -e '
      [.data.result[]? | objects | .metric.worker_type?]
      | index("bad") != null and index("optimized") != null
    ' <<<"$response" >/dev/null
  fi
}

pending=("${queries[@]}")
while ((${#pending[@]} > 0)); do
  remaining=()
  for json in "${pending[@]}"; do
    query=$(jq -r . <<<"$json")
    answers_for_both_workers "$query" || remaining+=("$json")
  done
  pending=("${remaining[@]}")
  if ((${#pending[@]} > 0)); then
    if ((SECONDS >= deadline)); then
      echo "demo test: FAIL: these dashboard queries return no data for both worker types:" >&2
      for json in "${pending[@]}"; do
        jq -r . <<<"$json" | sed 's/^/    /' >&2
      done
      exit 1
    fi
    sleep 5
  fi
done
echo "demo test: all ${#queries[@]} dashboard queries return data for worker_type=bad and worker_type=optimized"

grafana_get() {
  curl -fsS -u "$GRAFANA_AUTH" "$GRAFANA_URL$1"
}

# Grafana provisions dashboards shortly after it reports healthy: poll until it serves ours.
title=$(jq -r .title "$DASHBOARD_FILE")
until grafana_get "/api/dashboards/uid/$DASHBOARD_UID" 2>/dev/null |
  jq -e --arg uid "$DASHBOARD_UID" --arg title "$title" \
    '.dashboard.uid == $uid and .dashboard.title == $title' >/dev/null; do
  ((SECONDS < deadline)) || fail "Grafana does not serve the dashboard with uid $DASHBOARD_UID"
  sleep 3
done
echo "demo test: Grafana serves \"$title\" (uid $DASHBOARD_UID)"

grafana_get "/api/datasources/uid/$DATASOURCE_UID" |
  jq -e --arg url "$PROMETHEUS_URL" '.url == $url' >/dev/null ||
  fail "datasource $DATASOURCE_UID does not point at $PROMETHEUS_URL (was \${PROMETHEUS_URL} expanded?)"
grafana_get "/api/datasources/proxy/uid/$DATASOURCE_UID/api/v1/query?query=up" |
  jq -e '.data.result | length > 0' >/dev/null ||
  fail "Grafana cannot query Prometheus through datasource $DATASOURCE_UID"
echo "demo test: datasource $DATASOURCE_UID reaches $PROMETHEUS_URL"
echo "demo test: PASS"
