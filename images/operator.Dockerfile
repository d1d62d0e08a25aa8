# syntax=docker/dockerfile:1
# turnpike-operator: controllers, injection webhook, crdgen.
#
#   docker build -f images/operator.Dockerfile -t ghcr.io/turnpike/turnpike-operator:0.1.0 .
#
# (from the repository root; images/operator.Dockerfile.dockerignore keeps the context
# small). Daemonless equivalent: scripts/images.
#
# Runtime: a static musl binary on gcr.io/distroless/static-debian12:nonroot. Nothing
# but the binary, CA certificates, /etc/passwd with the `nonroot` user (uid 65532, the
# uid the chart and the injector pin) and tzdata: no shell, no package manager, no libc
# to patch, about 2 MB of base. musl rather than glibc because a static binary needs no
# loader or shared libraries in the image and runs on any base, including scratch.
# The operator's load is API watches and small writes, so musl's slower allocator does
# not matter here (see the sidecar's Dockerfile for where it could).

ARG RUST_IMAGE=docker.io/library/rust:1-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/static-debian12:nonroot

FROM ${RUST_IMAGE} AS build
# musl-gcc for aws-lc-sys (the TLS crypto provider is C and assembly).
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The toolchain the repository pins (rust-toolchain.toml), with the musl target of the
# build machine's architecture (amd64 or arm64 under buildx).
COPY rust-toolchain.toml ./
RUN rustup target add "$(uname -m)-unknown-linux-musl"
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,sharing=locked \
    target="$(uname -m)-unknown-linux-musl" \
 && cargo build --release --locked --target "$target" -p turnpike-operator \
 && install -D -m 0755 "target/$target/release/turnpike-operator" /out/turnpike-operator

FROM ${RUNTIME_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="turnpike-operator" \
      org.opencontainers.image.description="Turnpike operator: compiles API-key policies into bundles, issues keys, injects the sidecar" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/turnpike-operator /usr/local/bin/turnpike-operator
USER 65532:65532
# Metrics and health; the webhook (HTTPS).
EXPOSE 8080 8443
ENTRYPOINT ["/usr/local/bin/turnpike-operator"]
