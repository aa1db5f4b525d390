# Exports the NixOS module (nix/nixos-module.nix) as nixosModules.default. It gets `self`
# so that services.profiling-lab.package defaults to this flake's package for the host.
{ self, ... }:
{
  flake.nixosModules.default = import ./nixos-module.nix { inherit self; };
}
