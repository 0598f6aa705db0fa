#!/usr/bin/env bash
# The node's holder: started by hack/node/up.sh as
#   nsenter --net=/run/netns/<ns> unshare --mount --propagation private -- holder.sh NODE_DIR
# so it runs in the node's network namespace with a mount namespace of its own. It prepares
# that mount namespace and then waits; every node component joins its namespaces with
# `nsenter -t <holder pid> -n -m`. When it and they exit, the mounts vanish with them.
set -euo pipefail
dir="$1"

# /run: containerd's and kubelet's sockets, pod netns files, runc state; none on the host's.
mount -t tmpfs -o mode=0755 ferrovirt-node-run /run
# /var: /var/lib/kubelet (device plugins, pods), /var/lib/containerd, /var/lib/cni,
# /var/log/pods, /var/log/containers: the node's own, in NODE_DIR/var.
mount --bind "$dir/var" /var

# kubelet sets these machine-wide sysctls at start; inside this mount namespace it writes
# the files bound over them instead, so the host keeps its own values.
for entry in vm/overcommit_memory=1 vm/panic_on_oom=0 kernel/panic=10 kernel/panic_on_oops=1 \
    kernel/keys/root_maxkeys=1000000 kernel/keys/root_maxbytes=25000000; do
  key="${entry%%=*}"
  file="$dir/proc-sys/${key//\//.}"
  echo "${entry#*=}" >"$file"
  mount --bind "$file" "/proc/sys/$key"
done

touch "$dir/holder.ready"
exec sleep infinity
