# `nix develop`: the Rust toolchain (rustc, cargo, clippy, rustfmt from crane's devShell, plus
# rust-analyzer), the profiling tools the lab teaches, the monitoring stack's binaries and
# the tools the tests and CI use. The shell hook prints the lab's commands.
_: {
  perSystem =
    { pkgs
    , lib
    , labRust
    , ...
    }:
    {
      devShells.default = labRust.craneLib.devShell {
        packages = [
          pkgs.rust-analyzer
          pkgs.cargo-nextest

          # Profiles: `go tool pprof` as the guide writes it, or the standalone `pprof`;
          # graphviz renders their graphs (`web`, `-png`).
          pkgs.go
          pkgs.pprof
          pkgs.graphviz
          pkgs.tokio-console
          pkgs.cargo-flamegraph
          pkgs.inferno
          pkgs.samply
          pkgs.hyperfine

          # The monitoring stack and its tooling: promtool lives in prometheus' `cli` output.
          pkgs.prometheus
          pkgs.prometheus.cli
          pkgs.grafana
          pkgs.process-compose
          pkgs.curl
          pkgs.jq

          # The Nix linters and formatter that CI and `nix flake check` run.
          pkgs.nixpkgs-fmt
          pkgs.deadnix
          pkgs.statix
        ]
        # perf reads the kernel's counters: Linux only.
        ++ lib.optionals pkgs.stdenv.hostPlatform.isLinux [ pkgs.perf ];

        # rust-analyzer finds the standard library's sources here.
        RUST_SRC_PATH = "${pkgs.rustPlatform.rustLibSrc}";

        shellHook = ''
          cat <<'EOF'
          profiling-lab development shell

            cargo build --release                   build worker-bad, worker-optimized and lab
            cargo nextest run                       run the tests (all their tools are in this shell)
            nix run .#demo                          both workers + Prometheus :9092 + Grafana :3000
            nix run .#demo -- -t=false              the same without the terminal UI
            LAB_PROBLEMS=blocking nix run .#demo    one lesson at a time (the bad worker's --problems)
            nix run .#demo -- down                  stop it (from the same directory)
            nix flake check                         clippy, fmt, tests, docs, Nix lints, demo and VM tests

          Profiling a running worker (bad :9090, optimized :9091):
            go tool pprof 'http://localhost:9090/debug/pprof/profile?seconds=30'
            go tool pprof http://localhost:9090/debug/pprof/heap
            go tool pprof http://localhost:9090/debug/pprof/goroutine
            curl -o flame.svg 'http://localhost:9090/debug/pprof/flamegraph?seconds=10'
            cargo flamegraph --bin worker-bad -- --duration 30s
            samply record target/release/worker-bad --duration 30s

          Grafana: http://localhost:3000 (admin/admin)   Prometheus: http://localhost:9092
          EOF
        '';
      };
    };
}
