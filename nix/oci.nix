# OCI images `oci-worker-bad` and `oci-worker-optimized` (Linux) for docker-compose.yml:
#
#   nix build .#oci-worker-bad && docker load < result
#
# buildLayeredImage, not streamLayeredImage: the result is an ordinary image tarball in the
# store, loadable with the command above, copyable with skopeo and buildable as a flake check;
# the images are small enough that keeping the tarball costs little. Each image holds one
# worker binary and its runtime closure (glibc, libgcc), no shell, and runs as nobody.
#
# The worker keeps its default loopback address: docker-compose.yml uses host networking, so
# the repository's prometheus.yml scrapes 127.0.0.1:9090/9091 unchanged (see docs/NIX.md).
_: {
  perSystem =
    { self'
    , pkgs
    , lib
    , ...
    }:
    let
      lab = import ./lab.nix;

      image =
        kind:
        let
          worker = self'.packages."worker-${kind}";
        in
        pkgs.dockerTools.buildLayeredImage {
          name = "profiling-lab/worker-${kind}";
          # docker-compose.yml refers to this tag.
          tag = "latest";
          # A writable /tmp, the working directory, for --cpuprofile/--memprofile files.
          extraCommands = ''
            mkdir -p tmp
            chmod 1777 tmp
          '';
          config = {
            # Referencing the binary pulls it and its closure into the image.
            Entrypoint = [ (lib.getExe worker) ];
            # The guide's settings; `docker run IMAGE --duration 5m` replaces them.
            Cmd = lab.demoArgs;
            ExposedPorts."${toString lab.ports.${kind}}/tcp" = { };
            User = "65534:65534";
            WorkingDir = "/tmp";
            Labels = {
              "org.opencontainers.image.title" = "profiling-lab worker-${kind}";
              "org.opencontainers.image.description" = worker.meta.description;
            };
          };
        };
    in
    {
      packages = lib.mkIf pkgs.stdenv.hostPlatform.isLinux {
        oci-worker-bad = image "bad";
        oci-worker-optimized = image "optimized";
      };
    };
}
