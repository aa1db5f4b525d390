# The repository's monitoring configs (prometheus/ and grafana/, see nix/lab.nix) as one
# store path, laid out as in the repository. The demo and the NixOS module read every
# Prometheus and Grafana file from here, so there is one copy of each config; Rust or Nix
# edits do not change this store path.
{ lib }:
let
  lab = import ./lab.nix;
  root = ../.;
in
lib.fileset.toSource {
  inherit root;
  fileset = lib.fileset.unions (map (dir: root + "/${dir}") lab.configDirs);
}
