# syntax=docker/dockerfile:1.7
# virt-api: the subresources.kubevirt.io API server and admission webhooks.
# Build from the repository root (BuildKit):
#   docker build -f deploy/images/virt-api.Dockerfile -t <registry>/ferrovirt/virt-
# api:<tag> .
# hack/build-images.sh builds the same layers offline (docs/images.md) and reads PACKAGES,
# USER and ENTRYPOINT from this file.

FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends \
      libvirt-dev pkg-config clang libclang-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Dependencies and incremental state stay in BuildKit's cache between builds.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p virt-api --bin virt-api \
 && install -D -s target/release/virt-api /out/virt-api

# Runtime: Debian's slim base (layer 1, shared by all four images), then our binary (the
# layer that changes with our code).
FROM debian:bookworm-slim
ARG PACKAGES=""
COPY --from=build /out/virt-api /usr/local/bin/virt-api
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=unknown
LABEL org.opencontainers.image.title="virt-api" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="Ferrovirt"
# Non-root: it talks to the API server and listens on 8443 and 8080 (unprivileged ports).
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/virt-api"]
