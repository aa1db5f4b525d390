# The lab's fixed facts, shared by every Nix runner (demo, NixOS module, OCI images, checks).
#
# A plain attribute set with no functions and no store paths, so that
# `nix-instantiate --eval --strict --json nix/lab.nix` works without a Nix store:
# tests/nix_flake.rs reads it to prove that the Nix runners, docker-compose.yml and the
# cargo tests all use the same files under prometheus/ and grafana/.
{
  # Ports and addresses from the contract. prometheus/prometheus.yml has the same three
  # scrape targets written in it; the runners bind to loopback.
  ports = {
    bad = 9090;
    optimized = 9091;
    prometheus = 9092;
    grafana = 3000;
  };
  host = "127.0.0.1";

  # The guide's Docker settings, used by `nix run .#demo`, the NixOS module's defaults and
  # docker-compose.yml.
  demoArgs = [
    "--tasks"
    "100000"
    "--workers"
    "50"
    "--duration"
    "48h"
  ];

  # The bad worker's switchable problems, one per lesson: what `worker-bad --problems LIST`
  # (env LAB_PROBLEMS) accepts besides `all` and `none`. The NixOS module's `problems` option
  # is typed by this list; the demo and docker-compose.yml pass LAB_PROBLEMS through. The
  # optimized worker has none of them and never gets the setting.
  problems = [
    "leak"
    "capacity"
    "churn"
    "blocking"
    "contention"
    "backlog"
  ];
  # Its environment variable.
  problemsEnv = "LAB_PROBLEMS";

  # The guide's retention flag (`--storage.tsdb.retention.time=30d`).
  retention = "30d";

  # Grafana's login for the local lab (the guide's admin/admin; never expose it).
  grafanaAdmin = {
    user = "admin";
    password = "admin";
  };

  # The one copy of every monitoring config, relative to the repository root. Nix copies
  # `configDirs` into the store and points Prometheus and Grafana at these files; the cargo
  # tests (tests/monitoring_config.rs) check the same files with promtool.
  configDirs = [
    "prometheus"
    "grafana"
  ];
  configFiles = {
    prometheusConfig = "prometheus/prometheus.yml";
    rulesDir = "prometheus/rules";
    grafanaProvisioningDir = "grafana/provisioning";
    datasource = "grafana/provisioning/datasources/prometheus.yaml";
    dashboardProvider = "grafana/provisioning/dashboards/lab.yaml";
    dashboardsDir = "grafana/dashboards";
    dashboard = "grafana/dashboards/worker-performance.json";
  };

  # Identifiers fixed by the provisioning files and the dashboard JSON.
  datasourceUid = "lab-prometheus";
  dashboardUid = "worker-performance";
  # Equal to `scrape_interval` in prometheus/prometheus.yml and `timeInterval` in the
  # datasource file (the cargo tests check those two agree; the NixOS module reuses it).
  scrapeInterval = "2s";
}
