# Build: docker build -t switchyard .
# Run:   docker run --rm -p 8080:8080 -v $PWD/config:/etc/switchyard:ro switchyard
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock clippy.toml ./
COPY proxy ./proxy
COPY benches ./benches
RUN cargo build --release --locked --bin switchyard

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --no-create-home switchyard
COPY --from=build /src/target/release/switchyard /usr/local/bin/switchyard
COPY config/switchyard.yaml /etc/switchyard/switchyard.yaml
USER 10001
EXPOSE 8080 9901
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/switchyard"]
CMD ["run", "--config", "/etc/switchyard/switchyard.yaml"]
