# wasmeca in a container: the host and the seed plugins, on a small non-root runtime image.
#
#   docker build -t wasmeca .
#   docker run --rm -p 3000:3000 wasmeca              # the demo; curl localhost:3000/user
#
# Your plugins, on top of it (they join the seeds in /plugins; `RUN rm /plugins/*.wasm` first
# to serve only yours):
#
#   FROM wasmeca
#   COPY target/wasm32-wasip2/release/*.wasm /plugins/
#
# Configuration comes from the environment (12-factor): AMQP_URL, CONSUL_HTTP_ADDR,
# DATABASE_URL, REDIS_URL, OTEL_EXPORTER_OTLP_ENDPOINT and every WASMECA_* flag (`wasmeca serve
# --help`); or mount your own /etc/wasmeca/wasmeca.toml. Logs are JSON lines on stderr.
# The bases are arguments, so a machine without a registry can build from local ones.
ARG BUILD_BASE=rust:1-bookworm
ARG BASE=debian:bookworm-slim

FROM ${BUILD_BASE} AS build
WORKDIR /src
RUN rustup target add wasm32-wasip2
COPY . .
RUN cargo build --release --locked -p wasmeca --bin wasmeca \
 && cargo build --release --locked --target wasm32-wasip2 \
      --manifest-path plugins/Cargo.toml --target-dir target/plugins \
 && mkdir -p /out/plugins \
 && cp target/release/wasmeca /out/wasmeca \
 && cp /etc/ssl/certs/ca-certificates.crt /out/ca-certificates.crt \
 && strip /out/wasmeca \
 && for p in salute math account config user audit; do \
      cp target/plugins/wasm32-wasip2/release/$p.wasm /out/plugins/; \
    done

FROM ${BASE}
RUN useradd --uid 10001 --user-group --no-create-home --home-dir /data --shell /usr/sbin/nologin wasmeca \
 && mkdir -p /plugins /data /etc/wasmeca /var/cache/wasmeca \
 && chown wasmeca:wasmeca /data /var/cache/wasmeca
COPY --from=build /out/wasmeca /usr/local/bin/wasmeca
# The public CAs (the build stage's Debian bundle), so https collectors and Consul agents are
# trusted as anywhere else. OTEL_EXPORTER_OTLP_CERTIFICATE adds a company's own for the
# collector; SSL_CERT_FILE names a bundle to use instead of this one.
COPY --from=build /out/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/plugins/ /plugins/
COPY deploy/image/wasmeca.toml /etc/wasmeca/wasmeca.toml
COPY deploy/image/entrypoint.sh /usr/local/bin/wasmeca-entrypoint
ENV WASMECA_REST=0.0.0.0:3000 \
    WASMECA_HTTP=0.0.0.0:10101 \
    WASMECA_DATA_DIR=/data \
    WASMECA_CACHE_DIR=/var/cache/wasmeca \
    WASMECA_LOG_FORMAT=json
VOLUME ["/plugins", "/data"]
EXPOSE 3000 10101
USER wasmeca
# The seeds compiled into the image's compile cache, so a container answers without compiling
# them first (the cache is keyed by file hash and engine: a machine whose CPU features differ
# from the builder's compiles afresh instead of trusting it).
RUN wasmeca compile /etc/wasmeca/wasmeca.toml
# The host drains on SIGTERM: /health/ready 503 and deregistered at once, still serving for
# [limits] drain_delay_ms, then it finishes what it started and exits 0.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/3000 && printf 'GET /health/ready HTTP/1.0\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["wasmeca-entrypoint"]
CMD ["serve", "/etc/wasmeca/wasmeca.toml"]
