# profiling-lab's flake (flake-parts). One file per concern under nix/; docs/NIX.md explains
# each output:
#
#   nix run .#demo       both workers, Prometheus and Grafana under process-compose
#   nix run              the same (apps.default)
#   nix build            the three binaries (packages.default = packages.lab)
#   nix develop          toolchain, profilers, monitoring tools
#   nix flake check      cargo checks, Nix lints, the demo's smoke test, the NixOS VM test
#   nixosModules.default, packages.oci-worker-{bad,optimized}, formatter (nixpkgs-fmt)
#
# tests/nix_flake.rs checks that flake.lock locks exactly these inputs.
{
  description = "profiling-lab: find performance bugs in async Rust with metrics and pprof profiles";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";
    flake-parts = {
      url = "github:hercules-ci/flake-parts";
      # flake-parts only needs nixpkgs' lib: reuse our nixpkgs instead of a second pin.
      inputs.nixpkgs-lib.follows = "nixpkgs";
    };
    # crane requires nixpkgs >= 26.05.
    crane.url = "github:ipetkov/crane";
    process-compose-flake.url = "github:Platonic-Systems/process-compose-flake";
  };

  outputs =
    inputs@{ flake-parts, ... }:
    flake-parts.lib.mkFlake { inherit inputs; } {
      # Linux is the lab's home (perf, OCI images, VM test); macOS on Apple
      # silicon gets the packages, the demo and the shell.
      systems = [
        "x86_64-linux"
        "aarch64-linux"
        "aarch64-darwin"
      ];

      imports = [
        ./nix/rust.nix
        ./nix/demo.nix
        ./nix/devshell.nix
        ./nix/checks.nix
        ./nix/nix-lint.nix
        ./nix/oci.nix
        ./nix/nixos.nix
      ];
    };
}
