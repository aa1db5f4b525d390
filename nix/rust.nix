# The Rust build (crane): packages `lab` (= `default`), `worker-bad` and `worker-optimized`.
#
# One `buildDepsOnly` derivation compiles the dependencies once; the packages and every
# cargo check in nix/checks.nix reuse it through the `labRust` module argument set here.
{ inputs, ... }:
{
  perSystem =
    { pkgs, lib, ... }:
    let
      lab = import ./lab.nix;
      root = ../.;
      craneLib = inputs.crane.mkLib pkgs;

      # Cargo sources (every *.rs and *.toml, so .cargo/config.toml too, and Cargo.lock) plus
      # prometheus/ and grafana/, which the crate may read with include_str!.
      src = lib.fileset.toSource {
        inherit root;
        fileset = lib.fileset.unions (
          [ (craneLib.fileset.commonCargoSources root) ] ++ map (dir: root + "/${dir}") lab.configDirs
        );
      };

      commonArgs = {
        inherit src;
        strictDeps = true;
        # No RUSTFLAGS on purpose: `--cfg tokio_unstable` comes from .cargo/config.toml, which
        # the source filter above and crane's dummy source for buildDepsOnly both keep. A
        # RUSTFLAGS variable would replace the file's flags instead of adding to them.
        # tikv-jemalloc-sys builds jemalloc with `make` and the C compiler: both are in stdenv.
      };

      # Every dependency, compiled once (release profile, all targets, dev-dependencies too).
      cargoArtifacts = craneLib.buildDepsOnly commonArgs;

      # All three binaries from one build of the crate.
      profiling-lab = craneLib.buildPackage (commonArgs // {
        inherit cargoArtifacts;
        # The tests run once, in checks.nextest, with the tools they need.
        doCheck = false;
        # The release profile keeps limited debug info (`debug = "limited"`: function paths and
        # file:line) that the in-process symbolization of every profile reads;
        # stdenv's default strip would drop it.
        dontStrip = true;
        meta = {
          description = "A lab for finding and fixing performance bugs in async Rust with metrics and pprof profiles";
          license = [
            lib.licenses.mit
            lib.licenses.asl20
          ];
          mainProgram = "lab";
        };
      });

      # One worker binary copied out of the shared build: `nix run .#worker-bad` runs it, and
      # an OCI image of it does not carry the other two binaries. No second compilation.
      singleBinary =
        name:
        pkgs.runCommand name
          {
            meta = profiling-lab.meta // {
              mainProgram = name;
            };
          }
          ''
            install -Dm755 ${profiling-lab}/bin/${name} $out/bin/${name}
          '';
    in
    {
      _module.args.labRust = {
        inherit
          craneLib
          src
          commonArgs
          cargoArtifacts
          ;
      };

      packages = {
        lab = profiling-lab;
        default = profiling-lab;
        worker-bad = singleBinary "worker-bad";
        worker-optimized = singleBinary "worker-optimized";
      };
    };
}
