# `nix run .#demo` (and plain `nix run`): the whole lab under process-compose.
#
#   worker-bad        127.0.0.1:9090   --tasks 100000 --workers 50 --duration 48h, and the
#                                      problems LAB_PROBLEMS names (default: the worker's own)
#   worker-optimized  127.0.0.1:9091   same settings, never LAB_PROBLEMS
#   prometheus        127.0.0.1:9092   the repository's prometheus/prometheus.yml and rules
#   grafana           127.0.0.1:3000   admin/admin, the repository's grafana/provisioning and
#                                      grafana/dashboards
#   test              disabled here; `nix flake check` runs it (checks.<system>.demo) against
#                     these very processes, and `nix run .#demo-test -- -t=false` runs it locally
#
# State lives under ./data of the directory you start it in. Headless: `nix run .#demo --
# -t=false`. One lesson at a time: `LAB_PROBLEMS=blocking nix run .#demo`. Stop it from another
# terminal in the same directory: `nix run .#demo -- down`.
#
# Prometheus and Grafana are plain processes rather than services-flake services on purpose:
# services-flake generates their configs from Nix values (`--config.file=<generated>`, and
# `cfg:paths.provisioning=<generated>`, which Grafana applies after its ini file and GF_*
# variables), so the repository's files could not be used as they are. Here both read the
# repository's files directly: one source of truth.
{ inputs, ... }:
{
  imports = [ inputs.process-compose-flake.flakeModule ];

  perSystem =
    { config
    , self'
    , pkgs
    , lib
    , ...
    }:
    let
      lab = import ./lab.nix;
      configSrc = import ./config-src.nix { inherit lib; };
      inherit (lab) host ports;
      address = port: "${host}:${toString port}";
      prometheusUrl = "http://${address ports.prometheus}";
      grafanaUrl = "http://${address ports.grafana}";
      # Everything `test` waits for.
      stack = [ "worker-bad" "worker-optimized" "prometheus" "grafana" ];

      # Readiness: process-compose polls each port until it answers; `test` waits for all four.
      probe = port: path: {
        http_get = {
          inherit host port path;
        };
        initial_delay_seconds = 1;
        period_seconds = 2;
        timeout_seconds = 2;
        # Grafana's first start migrates its database: allow about two minutes.
        failure_threshold = 60;
      };

      # Every long-running process: a crash is restarted, a crash loop gives up.
      availability = {
        restart = "on_failure";
        max_restarts = 5;
      };

      # process-compose passes its own environment on to every process, so the bad worker reads
      # LAB_PROBLEMS from the shell (`LAB_PROBLEMS=blocking nix run .#demo`, or a .env file in
      # this directory). The optimized worker has none of the problems and stays the same
      # whatever is set: `env -u` drops the variable from its environment.
      worker = kind: port: {
        command = lib.escapeShellArgs (lib.concatLists [
          (lib.optionals (kind == "optimized") [ "${pkgs.coreutils}/bin/env" "-u" lab.problemsEnv ])
          [ (lib.getExe self'.packages."worker-${kind}") ]
          lab.demoArgs
          [ "--listen" (address port) ]
        ]);
        readiness_probe = probe port "/healthz";
        inherit availability;
      };

      grafanaIni = (pkgs.formats.ini { }).generate "profiling-lab-grafana.ini" {
        server = {
          http_addr = host;
          http_port = ports.grafana;
        };
        security = {
          admin_user = lab.grafanaAdmin.user;
          admin_password = lab.grafanaAdmin.password;
        };
        # The repository's provisioning files, unchanged. They read PROMETHEUS_URL and
        # LAB_DASHBOARDS_DIR from the environment (set in the start script below).
        paths.provisioning = "${configSrc}/${lab.configFiles.grafanaProvisioningDir}";
        # A local lab, and the Nix sandbox of the check, have no business phoning home or
        # installing plugins at startup.
        analytics = {
          reporting_enabled = false;
          check_for_updates = false;
          check_for_plugin_updates = false;
        };
        plugins.preinstall_disabled = true;
        news.news_feed_enabled = false;
      };

      startGrafana = pkgs.writeShellApplication {
        name = "profiling-lab-grafana";
        runtimeInputs = [
          pkgs.grafana
          pkgs.coreutils
        ];
        text = ''
          export PROMETHEUS_URL=${lib.escapeShellArg prometheusUrl}
          export LAB_DASHBOARDS_DIR=${lib.escapeShellArg "${configSrc}/${lab.configFiles.dashboardsDir}"}
          # Grafana resolves every relative path of its [paths] section against its home, which
          # is in the read-only store: paths.data (`data`), paths.logs (`data/log`) and
          # paths.plugins (`data/plugins`) would all land there. What else it writes (the SQLite
          # database, rendered PNG/CSV/PDF files) lives under paths.data. So all three get
          # absolute, writable directories under the demo's ./data, as `lab demo` writes them
          # into its grafana.ini. GF_PATHS_* variables override the ini file and, unlike
          # `cfg:paths.data=...` arguments (which Grafana splits at '='), take any path.
          data="$(realpath -m data/grafana)"
          mkdir -p "$data/log" "$data/plugins"
          export GF_PATHS_DATA="$data" GF_PATHS_LOGS="$data/log" GF_PATHS_PLUGINS="$data/plugins"
          exec grafana server \
            --homepath ${pkgs.grafana}/share/grafana \
            --config ${grafanaIni}
        '';
      };

      demoTest = pkgs.writeShellApplication {
        name = "profiling-lab-demo-test";
        runtimeInputs = [
          pkgs.curl
          pkgs.jq
          pkgs.coreutils
          pkgs.gnused
        ];
        text = builtins.readFile ./demo-test.sh;
      };
    in
    {
      process-compose.demo = {
        cli = {
          # process-compose creates its socket and log here; the directory must exist.
          preHook = "mkdir -p data";
          options = {
            # Keep the API server on (the default) so that `down`, `attach` and `process ...`
            # reach the running demo, over a unix socket instead of TCP port 8080.
            no-server = false;
            use-uds = true;
            unix-socket = "data/process-compose.sock";
            log-file = "data/process-compose.log";
          };
        };

        settings.processes = {
          worker-bad = worker "bad" ports.bad;
          worker-optimized = worker "optimized" ports.optimized;

          prometheus = {
            command = lib.escapeShellArgs [
              "${pkgs.prometheus}/bin/prometheus"
              # rule_files in it are relative to the config file: rules/ sits beside it.
              "--config.file=${configSrc}/${lab.configFiles.prometheusConfig}"
              "--storage.tsdb.path=data/prometheus"
              "--storage.tsdb.retention.time=${lab.retention}"
              "--web.listen-address=${address ports.prometheus}"
            ];
            readiness_probe = probe ports.prometheus "/-/ready";
            inherit availability;
          };

          grafana = {
            command = startGrafana;
            readiness_probe = probe ports.grafana "/api/health";
            inherit availability;
          };

          # Disabled in `nix run .#demo` (process-compose-flake disables a process named
          # `test`); enabled, with exit_on_end, in checks.<system>.demo and `demo-test`.
          test = {
            command = demoTest;
            environment = {
              PROMETHEUS_URL = prometheusUrl;
              GRAFANA_URL = grafanaUrl;
              GRAFANA_AUTH = "${lab.grafanaAdmin.user}:${lab.grafanaAdmin.password}";
              DASHBOARD_FILE = "${configSrc}/${lab.configFiles.dashboard}";
              DASHBOARD_UID = lab.dashboardUid;
              DATASOURCE_UID = lab.datasourceUid;
              TIMEOUT_SECONDS = "600";
            };
            depends_on = lib.genAttrs stack (_: { condition = "process_healthy"; });
          };
        };
      };

      # process-compose-flake's check runs the whole stack on 127.0.0.1 inside the build
      # sandbox, which on macOS denies loopback networking unless the derivation asks for it
      # (the attribute is ignored on Linux).
      checks.demo = lib.mkForce (
        config.process-compose.demo.outputs.check.overrideAttrs { __darwinAllowLocalNetworking = true; }
      );

      # The smoke test with its stack, outside the sandbox: `nix run .#demo-test -- -t=false`.
      packages.demo-test = config.process-compose.demo.outputs.testPackage;

      # `nix run` with no attribute starts the demo; `nix build` still builds the binaries
      # (packages.default).
      apps.default = {
        program = self'.packages.demo;
        meta.description = "Start both workers, Prometheus and Grafana (the profiling-lab demo)";
      };
    };
}
