# The Nix code's own checks and `nix fmt`.
#
# The formatter is nixpkgs-fmt: the one Nix formatter whose binary is on crates.io, so CI
# (which has no Nix) runs the same program, at the same version (1.3.0 in nixpkgs and on
# crates.io), as `nix fmt` and checks.nix-fmt. tests/nix_flake.rs runs it, deadnix and
# nix-instantiate --parse in CI; statix has no registry release, so it runs only here.
_: {
  perSystem =
    { pkgs, lib, ... }:
    let
      root = ../.;

      # Every .nix file of the repository, and nothing else: editing Rust does not rerun these.
      nixFiles = lib.fileset.toSource {
        inherit root;
        fileset = lib.fileset.fileFilter (file: file.hasExt "nix") root;
      };

      lint =
        name: tool: command:
        pkgs.runCommand "profiling-lab-${name}" { nativeBuildInputs = [ tool ]; } ''
          cd ${nixFiles}
          ${command}
          touch $out
        '';
    in
    {
      # `nix fmt` may call the formatter without arguments (recent Nix does); nixpkgs-fmt
      # would then read standard input, so default to the current directory.
      formatter = pkgs.writeShellApplication {
        name = "nixpkgs-fmt-tree";
        runtimeInputs = [ pkgs.nixpkgs-fmt ];
        text = ''
          if [ "$#" -eq 0 ]; then
            set -- .
          fi
          exec nixpkgs-fmt "$@"
        '';
      };

      checks = {
        nix-fmt = lint "nix-fmt" pkgs.nixpkgs-fmt "nixpkgs-fmt --check .";
        deadnix = lint "deadnix" pkgs.deadnix "deadnix --fail .";
        statix = lint "statix" pkgs.statix "statix check .";
      };
    };
}
