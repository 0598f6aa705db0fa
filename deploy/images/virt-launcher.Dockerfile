# syntax=docker/dockerfile:1.7
# virt-launcher: one per VM: its own embedded libvirt and the QEMU process of the guest.
# Build from the repository root (BuildKit):
#   docker build -f deploy/images/virt-launcher.Dockerfile -t <registry>/ferrovirt/virt-
# launcher:<tag> .
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
    cargo build --release --locked -p virt-launcher --bin virt-launcher \
 && install -D -s target/release/virt-launcher /out/virt-launcher
# The disk containers' program (docs/contracts.md, "The launcher pod"): static, since the
# containerDisk images it runs in are FROM scratch; the pod's init container copies it.
RUN gcc -static -Os -s -o /out/container-disk deploy/images/container-disk.c

# Runtime: Debian's slim base (layer 1, shared by all four images), then Debian packages
# (layer 2, changes with Debian updates), then our binary (the layer that changes with
# our code).
FROM debian:bookworm-slim
# passt: libvirt starts it for an interface with the passt binding (docs/networking.md);
# swtpm and swtpm-tools (swtpm_setup): libvirt starts them for a TPM (devices.tpm).
# qemu-system-x86 brings qemu-system-common with /usr/lib/qemu/virtiofsd, which the
# launcher starts for a filesystem (devices.filesystems).
ARG PACKAGES="libvirt0 libvirt-daemon-driver-qemu qemu-system-x86 ovmf passt swtpm swtpm-tools"
# libvirt's QEMU driver looks up its built-in user and group (Debian's libvirt-qemu) when
# it starts as root (the launcher's own tests; in the pod it runs as uid 107);
# Debian's libvirt-daemon-system would make them, with much else. USER:GROUP pairs (hack/build-images.sh reads this line too).
ARG SYSTEM_USERS="libvirt-qemu:libvirt-qemu"
RUN apt-get update && apt-get install -y --no-install-recommends $PACKAGES \
 && rm -rf /var/lib/apt/lists/* \
 && for ug in $SYSTEM_USERS; do \
      (getent group "${ug#*:}" || groupadd --system "${ug#*:}") \
      && useradd --system --gid "${ug#*:}" --no-create-home --home-dir /nonexistent \
           --shell /usr/sbin/nologin "${ug%%:*}"; \
    done
COPY --from=build /out/virt-launcher /out/container-disk /usr/local/bin/
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=unknown
LABEL org.opencontainers.image.title="virt-launcher" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="Ferrovirt"
# The non-root qemu user of KubeVirt's launcher pods, uid and gid 107 (the pod's
# securityContext says so too; docs/security.md): the embedded libvirt then runs
# unprivileged and QEMU as the same user, in the files virt-handler hands to uid 107. No
# passwd entry is needed: the launcher points libvirt's XDG directories into the VMI's
# directory.
USER 107:107
ENTRYPOINT ["/usr/local/bin/virt-launcher"]
