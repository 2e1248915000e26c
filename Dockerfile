# Switchyard container image.
#   docker build -t switchyard .
#   docker run --rm -p 8080:8080 -p 127.0.0.1:9901:9901 -e SWITCHYARD_ADMIN_TOKEN=change-me \
#     -v $PWD/config/switchyard.yaml:/etc/switchyard/switchyard.yaml:ro switchyard
# The example config binds the admin API to 127.0.0.1 inside the container; to reach it from the
# host, bind admin.addr to 0.0.0.0:9901 and set a token (the proxy refuses an exposed admin
# endpoint without one).
#
# TLS: the image carries no certificates and no private keys. Certificates are mounted at run
# time, e.g. -v $PWD/certs:/etc/switchyard/certs:ro, and the configuration's cert/key paths must
# point at the mount (relative paths are relative to the configuration file, so
# `cert: certs/server.crt` in /etc/switchyard/my.yaml). config/tls.yaml, which lands at
# /etc/switchyard/tls.yaml, names ../certs-dev/*, that is /etc/certs-dev/ in the container: to try
# it, mount the development certificates there (-v $PWD/certs-dev:/etc/certs-dev:ro) and run
# with --config /etc/switchyard/tls.yaml; its listeners bind 127.0.0.1, which a published port
# does not reach, so bind 0.0.0.0 in a copy to use it from the host.
#
# Linted by .ci/hadolint. Not built on the project's machines: base images cannot be pulled there.

FROM rust:1-slim-bookworm AS build
# The fleet's etcd client generates its gRPC code at build time: protoc and the well-known types;
# jemalloc, the binary's allocator, is built from C with make.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler libprotobuf-dev make \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first, so source edits do not rebuild them. Cargo reads every target of the
# manifests, so the stub step makes a dummy file for each one, and must stay in step with
# Cargo.toml ([lib], [[bin]] switchyard, [[bench]] routing and head, [[example]] rollout-scenarios,
# mirror-isolation, soak, fleet-propagation, textbook-proxy, floor-proxy, idle-memory, alloc-count,
# pgo-train) and
# loadtest/Cargo.toml ([lib], [[bin]] switchyard-load).
COPY Cargo.toml Cargo.lock clippy.toml ./
COPY loadtest/Cargo.toml loadtest/Cargo.toml
RUN mkdir -p proxy benches loadtest/src \
 && echo 'fn main() {}' > proxy/main.rs && touch proxy/lib.rs \
 && echo 'fn main() {}' > benches/routing.rs && echo 'fn main() {}' > benches/head.rs \
 && echo 'fn main() {}' > loadtest/src/main.rs && touch loadtest/src/lib.rs \
 && echo 'fn main() {}' > loadtest/rollout_scenarios.rs && echo 'fn main() {}' > loadtest/mirror_isolation.rs && echo 'fn main() {}' > loadtest/soak.rs && echo 'fn main() {}' > loadtest/fleet_propagation.rs \
 && echo 'fn main() {}' > loadtest/textbook_proxy.rs && echo 'fn main() {}' > loadtest/floor_proxy.rs && echo 'fn main() {}' > loadtest/idle_memory.rs && echo 'fn main() {}' > loadtest/alloc_count.rs \
 && echo 'fn main() {}' > loadtest/pgo_train.rs \
 && cargo build --release --locked --bin switchyard \
 && rm -rf proxy benches loadtest/src
COPY proxy ./proxy
COPY benches ./benches
COPY loadtest ./loadtest
# --build-arg PGO=true: a profile-guided build (loadtest/pgo.sh: an instrumented build, a 28-second
# training run on loopback inside the build, then the optimised build; about three times the build
# time). It runs about a fifth fewer instructions per request (docs/performance.md).
ARG PGO=false
RUN touch proxy/lib.rs proxy/main.rs \
 && if [ "$PGO" = true ]; then loadtest/pgo.sh --out target/release/switchyard; \
    else cargo build --release --locked --bin switchyard; fi

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --no-create-home switchyard
COPY --from=build /src/target/release/switchyard /usr/local/bin/switchyard
# Example configurations only. No certificates, no keys: TLS material is mounted at run time
# (see the top of this file).
COPY config/ /etc/switchyard/
USER 10001
EXPOSE 8080 9901
STOPSIGNAL SIGTERM
# The admin API answers /healthz; ctl exits non-zero when the admin API does not answer.
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
  CMD ["/usr/local/bin/switchyard", "ctl", "--admin", "http://127.0.0.1:9901", "status"]
ENTRYPOINT ["/usr/local/bin/switchyard"]
CMD ["run", "--config", "/etc/switchyard/switchyard.yaml"]
