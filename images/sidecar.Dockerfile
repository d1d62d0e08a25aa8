# syntax=docker/dockerfile:1
# turnpike-sidecar: the enforcing proxy the webhook injects next to protected workloads.
#
#   docker build -f images/sidecar.Dockerfile -t ghcr.io/turnpike/turnpike-sidecar:0.1.0 .
#
# (from the repository root; images/sidecar.Dockerfile.dockerignore keeps the context
# small). Daemonless equivalent: scripts/images.
#
# Runtime: a static musl binary on gcr.io/distroless/static-debian12:nonroot, for the
# reasons in operator.Dockerfile: uid 65532 (the injector runs the container as that
# user with a read-only root filesystem), no shell, no libc, a few MB in every pod.
# One cost to watch: musl's allocator is slower than glibc's under many threads; the
# proxy's throughput should be measured against the glibc build (a global allocator
# such as mimalloc in the binary removes the difference) before large deployments.

ARG RUST_IMAGE=docker.io/library/rust:1-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/static-debian12:nonroot

FROM ${RUST_IMAGE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY rust-toolchain.toml ./
RUN rustup target add "$(uname -m)-unknown-linux-musl"
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,sharing=locked \
    target="$(uname -m)-unknown-linux-musl" \
 && cargo build --release --locked --target "$target" -p turnpike-sidecar \
 && install -D -m 0755 "target/$target/release/turnpike-sidecar" /out/turnpike-sidecar

FROM ${RUNTIME_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="turnpike-sidecar" \
      org.opencontainers.image.description="Turnpike sidecar: enforces API keys, scopes, rate limits and quotas in front of a workload" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/turnpike-sidecar /usr/local/bin/turnpike-sidecar
USER 65532:65532
# mimalloc (the sidecar's allocator) commits arena memory lazily and gives freed pages
# back at once: each argon2id verification borrows 19 MiB for a few milliseconds, and
# with these two settings a sidecar that verified 3,000 distinct keys went back to
# 26 MiB instead of 78 MiB (docs/benchmarks.md). Same values in scripts/images.
ENV MIMALLOC_ARENA_EAGER_COMMIT=0 MIMALLOC_PURGE_DELAY=0
# Proxy; admin (metrics, health).
EXPOSE 9080 9901
ENTRYPOINT ["/usr/local/bin/turnpike-sidecar"]
