# NixOS VM test of nixosModules.default (checks.<system>.nixos-module, Linux with KVM), for
# pkgs.testers.runNixOSTest: one machine with both workers, Prometheus and Grafana wired by
# the module, and assertions made with curl from inside the VM.
{ self }:
let
  lab = import ./lab.nix;
  bad = toString lab.ports.bad;
  optimized = toString lab.ports.optimized;
  prometheus = toString lab.ports.prometheus;
  grafana = toString lab.ports.grafana;
  problems = [
    "leak"
    "capacity"
    "churn"
  ];
in
{
  name = "profiling-lab-nixos-module";

  nodes.machine =
    { pkgs, ... }:
    {
      imports = [ self.nixosModules.default ];

      services.profiling-lab = {
        enable = true;
        # The Go lab's three lessons: the option reaches the bad worker as --problems, and the
        # worker accepts it (a rejected flag would fail the unit, see RestartPreventExitStatus).
        inherit problems;
        prometheus.enable = true;
        grafana.enable = true;
      };

      # NixOS 26.05 requires a secret key and the module leaves it to the host. A literal is
      # fine in a throwaway VM; a real host uses "$__file{/run/secrets/...}".
      services.grafana.settings.security.secret_key = "profiling-lab-vm-test-only";

      environment.systemPackages = [
        pkgs.curl
        pkgs.jq
      ];
      virtualisation = {
        cores = 2;
        memorySize = 2048;
      };
    };

  testScript = ''
    import json
    import shlex

    def prometheus_query(expr):
        out = machine.succeed(
            "curl -fsS --get http://127.0.0.1:${prometheus}/api/v1/query --data-urlencode "
            + shlex.quote("query=" + expr)
        )
        return json.loads(out)["data"]["result"]

    machine.wait_for_unit("multi-user.target")

    with subtest("both workers run hardened and answer on loopback only"):
        for unit, port, kind in [
            ("profiling-lab-worker-bad", ${bad}, "bad"),
            ("profiling-lab-worker-optimized", ${optimized}, "optimized"),
        ]:
            machine.wait_for_unit(unit + ".service")
            machine.wait_for_open_port(port)
            machine.succeed(f"curl -fsS http://127.0.0.1:{port}/healthz | grep -qx ok")
            machine.succeed(
                f"curl -fsS http://127.0.0.1:{port}/metrics | grep -qF 'worker_type=\"{kind}\"'"
            )
            # The fourth column of `ss` is the local address (the fifth, the peer, is *).
            listeners = machine.succeed(f"ss -Hltn 'sport = :{port}'")
            local = [line.split()[3] for line in listeners.splitlines()]
            assert local == [f"127.0.0.1:{port}"], listeners
            for prop, value in [
                ("DynamicUser", "yes"),
                ("NoNewPrivileges", "yes"),
                ("ProtectSystem", "strict"),
                ("MemoryDenyWriteExecute", "yes"),
            ]:
                machine.succeed(f"systemctl show -P {prop} {unit} | grep -qx {value}")

    with subtest("the problems option reaches the bad worker only"):
        bad_cmd = machine.succeed("systemctl show -P ExecStart profiling-lab-worker-bad")
        assert "--problems ${builtins.concatStringsSep "," problems}" in bad_cmd, bad_cmd
        optimized_cmd = machine.succeed("systemctl show -P ExecStart profiling-lab-worker-optimized")
        assert "--problems" not in optimized_cmd, optimized_cmd

    with subtest("profiles work under MemoryDenyWriteExecute and the syscall filter"):
        machine.succeed(
            "curl -fsS -o /tmp/cpu.pb.gz 'http://127.0.0.1:${optimized}/debug/pprof/profile?seconds=2'"
            " && test -s /tmp/cpu.pb.gz"
        )
        machine.succeed(
            "curl -fsS -o /tmp/heap.pb.gz http://127.0.0.1:${bad}/debug/pprof/heap && test -s /tmp/heap.pb.gz"
        )
        machine.succeed("systemctl is-active profiling-lab-worker-bad profiling-lab-worker-optimized")

    with subtest("Prometheus scrapes both workers and loads the lab's rules"):
        machine.wait_for_unit("prometheus.service")
        machine.wait_for_open_port(${prometheus})
        machine.wait_until_succeeds(
            "curl -fsS --get http://127.0.0.1:${prometheus}/api/v1/query"
            " --data-urlencode 'query=count by (worker_type) (worker_tasks_processed_total)'"
            " | jq -e '[.data.result[].metric.worker_type] | sort == [\"bad\", \"optimized\"]'",
            timeout=180,
        )
        up = prometheus_query('up{job=~"worker-.+"}')
        assert sorted(r["metric"]["job"] for r in up) == ["worker-bad", "worker-optimized"], up
        assert all(r["value"][1] == "1" for r in up), up
        machine.succeed(
            "curl -fsS http://127.0.0.1:${prometheus}/api/v1/rules | jq -e '.data.groups | length > 0'"
        )

    with subtest("Grafana serves the dashboard and queries Prometheus through the datasource"):
        machine.wait_for_unit("grafana.service")
        machine.wait_for_open_port(${grafana})
        auth = "${lab.grafanaAdmin.user}:${lab.grafanaAdmin.password}"
        machine.wait_until_succeeds(
            f"curl -fsS -u {auth} http://127.0.0.1:${grafana}/api/dashboards/uid/${lab.dashboardUid}"
            " | jq -e '.dashboard.uid == \"${lab.dashboardUid}\"'",
            timeout=180,
        )
        machine.succeed(
            f"curl -fsS -u {auth} http://127.0.0.1:${grafana}/api/datasources/uid/${lab.datasourceUid}"
            " | jq -e '.url == \"http://127.0.0.1:${prometheus}\"'"
        )
        machine.wait_until_succeeds(
            f"curl -fsS -u {auth} --get"
            " http://127.0.0.1:${grafana}/api/datasources/proxy/uid/${lab.datasourceUid}/api/v1/query"
            " --data-urlencode 'query=worker_active_goroutines'"
            " | jq -e '[.data.result[].metric.worker_type] | sort == [\"bad\", \"optimized\"]'",
            timeout=120,
        )
  '';
}
