# `nix flake check`: the cargo checks (build, clippy, fmt, doc, nextest) on the shared crane
# dependency build, and the NixOS VM test of the module (Linux). The Nix lints are in
# nix/nix-lint.nix; the demo's process-compose test (checks.<system>.demo) is added by
# process-compose-flake from the `test` process in nix/demo.nix.
{ self, ... }:
{
  perSystem =
    { self'
    , pkgs
    , lib
    , labRust
    , ...
    }:
    let
      inherit (labRust)
        craneLib
        src
        commonArgs
        cargoArtifacts
        ;
      root = ../.;

      # The tests read more than the crate's sources (docs/, README.md, the configs), so they
      # get the whole repository minus build outputs and the Nix files (which only the
      # excluded nix_flake tests read; editing them should not rerun the whole suite).
      testSrc = lib.fileset.toSource {
        inherit root;
        fileset = lib.fileset.difference root (
          lib.fileset.unions (
            map lib.fileset.maybeMissing [
              ../.git
              ../target
              ../data
              ../result
              ../pprof
              ../lab-out
              ../flake.nix
              ../flake.lock
              ../nix
            ]
          )
        );
      };
    in
    {
      checks = {
        # The package itself (its tests run in `nextest`, not twice).
        inherit (self'.packages) lab;

        clippy = craneLib.cargoClippy (commonArgs // {
          inherit cargoArtifacts;
          cargoClippyExtraArgs = "--all-targets -- --deny warnings";
        });

        fmt = craneLib.cargoFmt { inherit src; };

        doc = craneLib.cargoDoc (commonArgs // {
          inherit cargoArtifacts;
          # rustdoc does not read build.rustflags: give it the crate's cfg too, so code
          # behind `tokio_unstable` is documented and checked; broken doc links fail.
          env.RUSTDOCFLAGS = "--cfg tokio_unstable --deny warnings";
        });

        nextest = craneLib.cargoNextest (commonArgs // {
          inherit cargoArtifacts;
          src = testSrc;
          # tests/nix_flake.rs checks the Nix files themselves with nix-instantiate,
          # deadnix and the formatter; inside this sandbox there is no Nix store or daemon for
          # nix-instantiate, and the same checks run as their own flake checks (nix-fmt,
          # deadnix, statix; Nix itself refuses a flake.lock that does not match flake.nix).
          cargoNextestExtraArgs = "--no-tests=fail -E 'not binary(nix_flake)'";
          # Every other test gets its tools, and LAB_REQUIRE_TOOLS=1 makes a missing one
          # fail instead of skip, as in CI.
          nativeBuildInputs = [
            pkgs.prometheus
            pkgs.prometheus.cli
            pkgs.go
            pkgs.pprof
            pkgs.graphviz
            pkgs.curl
            pkgs.jq
          ];
          env = {
            LAB_REQUIRE_TOOLS = "1";
            # `go tool pprof` must not try to download a toolchain (no network here).
            GOTOOLCHAIN = "local";
          };
          # The tests talk to workers and Prometheus on 127.0.0.1; macOS' build sandbox denies
          # even loopback networking unless a derivation asks for it (ignored on Linux).
          __darwinAllowLocalNetworking = true;
          # Go wants a writable home and build cache (it builds `go tool pprof` on demand).
          preCheck = ''
            export HOME="$TMPDIR/home" GOCACHE="$TMPDIR/go-cache"
            mkdir -p "$HOME" "$GOCACHE"
          '';
        });
      }
      // lib.optionalAttrs pkgs.stdenv.hostPlatform.isLinux {
        # Boots a VM: needs the `kvm` (and `nixos-test`) system features on the builder.
        nixos-module = pkgs.testers.runNixOSTest (import ./nixos-test.nix { inherit self; });

        inherit (self'.packages) oci-worker-bad oci-worker-optimized;
      };
    };
}
