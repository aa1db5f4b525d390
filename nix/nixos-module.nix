# NixOS module (nixosModules.default): both workers as hardened systemd services, and
# options to wire them into services.prometheus (scrape jobs plus the repository's alert
# rules) and services.grafana (the repository's dashboard and a datasource with its uid).
#
#   services.profiling-lab = {
#     enable = true;
#     problems = [ "blocking" ];  # optional: the bad worker's --problems (one lesson at a time)
#     prometheus.enable = true;   # Prometheus on 127.0.0.1:9092 scraping both workers
#     grafana.enable = true;      # also set services.grafana.settings.security.secret_key
#   };
#
# Everything listens on loopback unless you say otherwise, and no port is opened in the
# firewall. The module never sets Grafana's secret_key: NixOS 26.05 asserts that you set one
# (use "$__file{/run/secrets/grafana-secret-key}"; a literal would land in the Nix store).
{ self }:
{ config
, lib
, pkgs
, ...
}:
let
  inherit (lib)
    mkEnableOption
    mkIf
    mkMerge
    mkOption
    types
    ;
  cfg = config.services.profiling-lab;
  lab = import ./lab.nix;
  configSrc = import ./config-src.nix { inherit lib; };

  kinds = [
    "bad"
    "optimized"
  ];
  enabledKinds = lib.filter (kind: cfg.workers.${kind}.enable) kinds;
  unitName = kind: "profiling-lab-worker-${kind}";

  # host:port, with brackets around an IPv6 address.
  hostPort = host: port: if lib.hasInfix ":" host then "[${host}]:${toString port}" else "${host}:${toString port}";
  # Where a local client reaches a server bound to `host` (a wildcard is reached on loopback).
  localHost =
    host:
    if host == "0.0.0.0" then
      "127.0.0.1"
    else if host == "::" then
      "::1"
    else
      host;
  isLoopback =
    host:
    lib.elem host [
      "localhost"
      "::1"
    ]
    || lib.hasPrefix "127." host;

  # The repository's alert and recording rules (prometheus/rules/*.yml), from the store copy.
  ruleFiles = map (file: "${configSrc}/${lab.configFiles.rulesDir}/${file}") (
    lib.attrNames (
      lib.filterAttrs (name: type: type == "regular" && lib.hasSuffix ".yml" name) (
        builtins.readDir (../. + "/${lab.configFiles.rulesDir}")
      )
    )
  );

  workerOptions = kind: {
    enable = mkEnableOption "the ${kind} worker" // {
      default = true;
    };
    listenAddress = mkOption {
      type = types.str;
      default = lab.host;
      example = "0.0.0.0";
      description = "Address the ${kind} worker's HTTP server (metrics, pprof) binds to.";
    };
    port = mkOption {
      type = types.port;
      default = lab.ports.${kind};
      description = "Port of the ${kind} worker's HTTP server.";
    };
    extraArgs = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [
        "--rate"
        "2000"
      ];
      description = "Extra command-line arguments for the ${kind} worker, after `args`.";
    };
  };

  # A scrape job per worker, named as in prometheus/prometheus.yml (the rules match on it).
  scrapeConfig = kind:
    let
      worker = cfg.workers.${kind};
    in
    {
      job_name = "worker-${kind}";
      scrape_interval = cfg.prometheus.scrapeInterval;
      static_configs = [{ targets = [ (hostPort (localHost worker.listenAddress) worker.port) ]; }];
    };

  # `--problems` for the bad worker: nothing when `problems` is null (the worker's default),
  # `none` for an empty list. The optimized worker has none of the problems.
  problemsArgs = lib.optionals (cfg.problems != null) [
    "--problems"
    (if cfg.problems == [ ] then "none" else lib.concatStringsSep "," (lib.unique cfg.problems))
  ];

  workerService = kind: worker: {
    description = "profiling-lab ${kind} worker";
    wantedBy = [ "multi-user.target" ];
    after = [ "network.target" ];
    serviceConfig = {
      ExecStart = lib.escapeShellArgs (lib.concatLists [
        [ "${cfg.package}/bin/worker-${kind}" ]
        cfg.args
        [ "--listen" (hostPort worker.listenAddress worker.port) ]
        (lib.optionals (kind == "bad") problemsArgs)
        worker.extraArgs
      ]);
      # The worker exits 0 when --duration is over: start the next run. Exit status 2 is a
      # flag it rejected (in args or extraArgs): restarting cannot fix that, so the unit
      # fails at once with the worker's message in its journal instead of looping.
      Restart = "always";
      RestartSec = 5;
      RestartPreventExitStatus = [ 2 ];

      # Profiles written with --cpuprofile/--memprofile land in /var/lib/<unit>.
      StateDirectory = unitName kind;
      WorkingDirectory = "%S/${unitName kind}";

      # Hardening. The worker only serves HTTP and allocates: no privileges, a read-only
      # system, no devices, no other users' processes.
      DynamicUser = true;
      NoNewPrivileges = true;
      CapabilityBoundingSet = [ "" ];
      ProtectSystem = "strict";
      ProtectHome = true;
      PrivateTmp = true;
      PrivateDevices = true;
      DevicePolicy = "closed";
      PrivateUsers = true;
      ProtectClock = true;
      ProtectHostname = true;
      ProtectKernelLogs = true;
      ProtectKernelModules = true;
      ProtectKernelTunables = true;
      ProtectControlGroups = true;
      # Other processes are hidden; /proc/self, /proc/stat and /proc/sys stay readable (the
      # process collector reads /proc/stat for the boot time, jemalloc reads
      # /proc/sys/vm/overcommit_memory), so no ProcSubset=pid.
      ProtectProc = "invisible";
      RestrictAddressFamilies = [
        "AF_INET"
        "AF_INET6"
        "AF_UNIX"
      ];
      RestrictNamespaces = true;
      RestrictRealtime = true;
      RestrictSUIDSGID = true;
      LockPersonality = true;
      RemoveIPC = true;
      # jemalloc maps memory PROT_READ|PROT_WRITE only and nothing in the worker generates
      # code (pprof-rs samples with setitimer/SIGPROF), so W^X holds; the VM test takes CPU
      # and heap profiles under it.
      MemoryDenyWriteExecute = true;
      SystemCallArchitectures = "native";
      SystemCallFilter = [
        "@system-service"
        "~@privileged"
      ];
      SystemCallErrorNumber = "EPERM";
      UMask = "0077";
    }
    # Loopback-only workers also refuse packets from anywhere else.
    // lib.optionalAttrs (isLoopback worker.listenAddress) {
      IPAddressAllow = [ "localhost" ];
      IPAddressDeny = [ "any" ];
    };
  };
in
{
  options.services.profiling-lab = {
    enable = mkEnableOption "the profiling-lab workers (a leaking, allocation-heavy worker and its fixed twin)";

    package = mkOption {
      type = types.package;
      inherit (self.packages.${pkgs.stdenv.hostPlatform.system}) default;
      defaultText = lib.literalExpression "profiling-lab.packages.\${pkgs.stdenv.hostPlatform.system}.default";
      description = "Package providing bin/worker-bad and bin/worker-optimized.";
    };

    args = mkOption {
      type = types.listOf types.str;
      default = lab.demoArgs;
      example = [
        "--tasks"
        "20000"
        "--workers"
        "8"
        "--duration"
        "1h"
      ];
      description = ''
        Workload flags passed to both workers. The default is the guide's demo setting;
        the worker exits when --duration is over and systemd starts the next run.
      '';
    };

    problems = mkOption {
      type = types.nullOr (types.listOf (types.enum lab.problems));
      default = null;
      example = [
        "blocking"
        "contention"
      ];
      description = ''
        The problems the bad worker has, one per lesson, passed as `--problems` (the same
        setting as LAB_PROBLEMS in the demo and docker-compose.yml): null keeps the worker's
        default, `[ ]` turns every problem off, and the list of all six turns every one on.
        Show one lesson at a time by naming only it. The optimized worker never gets it.
      '';
    };

    workers = {
      bad = workerOptions "bad";
      optimized = workerOptions "optimized";
    };

    prometheus = {
      # Adds the jobs `worker-bad` and `worker-optimized` (the names prometheus/prometheus.yml
      # and the alert rules use) and the repository's rules, and enables Prometheus on
      # 127.0.0.1:9092 unless configured otherwise (its own default port, 9090, is the bad
      # worker's).
      enable = mkEnableOption "scraping both workers with services.prometheus, with the lab's alert rules";
      scrapeInterval = mkOption {
        type = types.str;
        default = lab.scrapeInterval;
        description = "Scrape interval of the two jobs (the datasource's timeInterval follows it).";
      };
    };

    grafana = {
      # Provisions the dashboard from grafana/dashboards and a Prometheus datasource with the
      # uid the dashboard uses, and enables Grafana unless configured otherwise. You must still
      # set services.grafana.settings.security.secret_key.
      enable = mkEnableOption "the lab's dashboard and datasource in services.grafana";
      prometheusUrl = mkOption {
        type = types.str;
        default = "http://${hostPort (localHost config.services.prometheus.listenAddress) config.services.prometheus.port}";
        defaultText = lib.literalExpression ''"http://''${config.services.prometheus.listenAddress}:''${toString config.services.prometheus.port}"'';
        description = "URL Grafana queries Prometheus at.";
      };
    };
  };

  config = mkIf cfg.enable (mkMerge [
    {
      systemd.services = lib.listToAttrs (
        map (kind: lib.nameValuePair (unitName kind) (workerService kind cfg.workers.${kind})) enabledKinds
      );
    }

    (mkIf cfg.prometheus.enable {
      services.prometheus = {
        enable = lib.mkDefault true;
        listenAddress = lib.mkDefault lab.host;
        port = lib.mkDefault lab.ports.prometheus;
        scrapeConfigs = map scrapeConfig enabledKinds;
        inherit ruleFiles;
      };
    })

    (mkIf cfg.grafana.enable {
      services.grafana = {
        enable = lib.mkDefault true;
        provision = {
          enable = true;
          # Restated rather than read from grafana/provisioning/datasources/prometheus.yaml
          # so that it merges with the host's own datasources (a `path` would replace them):
          # the uid is what the dashboard refers to; no isDefault, the host may have one.
          datasources.settings.datasources = [
            {
              name = "Prometheus (profiling-lab)";
              type = "prometheus";
              uid = lab.datasourceUid;
              url = cfg.grafana.prometheusUrl;
              access = "proxy";
              jsonData = {
                timeInterval = cfg.prometheus.scrapeInterval;
                httpMethod = "POST";
              };
            }
          ];
          dashboards.settings.providers = [
            {
              name = "profiling-lab";
              folder = "Profiling Lab";
              options.path = "${configSrc}/${lab.configFiles.dashboardsDir}";
            }
          ];
        };
      };
    })
  ]);
}
