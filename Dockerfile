# syntax=docker/dockerfile:1
#
# The one SensorFleet image. The role is the first argument: `sensorfleet up` (default),
# `bridge`, `processor`, `api`, `operator`, `simulate`, …
#
#   docker build -t sensorfleet:0.1.0 .
#   docker run --rm -p 8080:8080 -p 1883:1883 sensorfleet:0.1.0      # the embedded platform
#
# Build stage: the release binary. librdkafka is compiled from rdkafka-sys's bundled source
# (Debian's librdkafka is too old for rdkafka 0.39), which needs a C and C++ toolchain,
# make and cmake.
FROM rust:1-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake g++ make \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The cache mounts keep downloaded crates and compiled dependencies between builds, so a
# source change rebuilds only the workspace's own crates. The binary is copied out of the
# cached target dir in the same step: the mount is gone after it.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin sensorfleet \
    && install -D -m 0755 target/release/sensorfleet /out/sensorfleet

# Runtime stage: Debian's glibc (the builder's), the CA bundle TLS links verify against
# (InfluxDB over https, PostgreSQL verify-full, a JWKS URL; a Pipeline's spec.caSecret
# replaces it), and the binary. TLS itself is rustls, inside the binary.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
# A fixed numeric user, so that Kubernetes' runAsNonRoot can check it (the chart runs as
# 10001), with a home that `up` can write its data dir into.
RUN groupadd --system --gid 10001 sensorfleet \
    && useradd --system --uid 10001 --gid 10001 --create-home \
       --home-dir /var/lib/sensorfleet --shell /usr/sbin/nologin sensorfleet
COPY --from=build /out/sensorfleet /usr/local/bin/sensorfleet
USER 10001:10001
WORKDIR /var/lib/sensorfleet
# The binary listens on loopback by default (right on a laptop); in a container that
# would be unreachable. Roles with flags of their own still take them.
ENV SENSORFLEET_HTTP_ADDR=0.0.0.0:8080 \
    SENSORFLEET_MQTT_ADDR=0.0.0.0:1883
EXPOSE 8080 1883
ENTRYPOINT ["sensorfleet"]
CMD ["up"]
