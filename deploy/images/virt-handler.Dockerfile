# syntax=docker/dockerfile:1.7
# virt-handler: the node agent (one per node): KVM probe, volumes, domain conversion,
# status.
# Build from the repository root (BuildKit):
#   docker build -f deploy/images/virt-handler.Dockerfile -t <registry>/ferrovirt/virt-
# handler:<tag> .
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
    cargo build --release --locked -p virt-handler --bin virt-handler \
 && install -D -s target/release/virt-handler /out/virt-handler

# Runtime: Debian's slim base (layer 1, shared by all four images), then Debian packages
# (layer 2, changes with Debian updates), then our binary (the layer that changes with
# our code).
FROM debian:bookworm-slim
# iproute2 and nftables: the pod network is set up inside each launcher pod's network
# namespace with `nsenter ... ip` and `nft` (virt-handler/src/network/); util-linux's
# nsenter is in the base.
ARG PACKAGES="qemu-utils genisoimage ovmf iproute2 nftables"
RUN apt-get update && apt-get install -y --no-install-recommends $PACKAGES \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/virt-handler /usr/local/bin/virt-handler
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=unknown
LABEL org.opencontainers.image.title="virt-handler" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="Ferrovirt"
# Root: it probes /dev/kvm, creates each VMI's directory, disks (qemu-img) and cloud-
# init ISO (genisoimage) in the node run dir as root, next to the launchers' QEMU that
# runs as root, and checks host disks with the node's ownership; the DaemonSet runs it
# privileged (deploy/helm/ferrovirt/templates/virt-handler.yaml).
USER 0:0
ENTRYPOINT ["/usr/local/bin/virt-handler"]
