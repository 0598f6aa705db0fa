#!/usr/bin/env bash
# Starts a real Kubernetes node for a running control plane, and returns once it is Ready:
#   hack/node/up.sh --dir DIR --kubeconfig ADMIN_KUBECONFIG --pki PKI_DIR [--name NAME] [--index N]
# It creates the network namespace ferrovirt-NAME with a veth pair (host end fvnN,
# 10.250.N.1/30; node end eth0, 10.250.N.2/30; no default route), a holder process in it
# with a private mount namespace (hack/node/holder.sh), and in those namespaces containerd,
# kubelet and kube-proxy; on the host end, the image registry (10.250.N.1:5000) and a DNAT
# rule that takes the node's 10.250.N.1:6443 to the API server on loopback; host routes to
# the node's pods (10.244.N.0/24) and the cluster's Services, and unreachable routes that
# keep those ranges from ever taking the default route.
# Files, logs (DIR/logs/) and pid files (DIR/pids/) live in DIR; DIR/node.env describes the
# node. Idempotent: what runs is kept. hack/node/down.sh removes all of it.
# docs/real-node.md explains each piece.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
exec </dev/null

dir="" kubeconfig="" pki="" name="ferrovirt-node" index=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dir) dir="$2"; shift 2 ;;
    --kubeconfig) kubeconfig="$2"; shift 2 ;;
    --pki) pki="$2"; shift 2 ;;
    --name) name="$2"; shift 2 ;;
    --index) index="$2"; shift 2 ;;
    *) die "unknown argument $1 (usage: up.sh --dir DIR --kubeconfig FILE --pki DIR [--name NAME] [--index N])" ;;
  esac
done
[[ -n "$dir" && -n "$kubeconfig" && -n "$pki" ]] || die "usage: up.sh --dir DIR --kubeconfig FILE --pki DIR [--name NAME] [--index N]"
[[ "$index" =~ ^[0-9]+$ && "$index" -le 255 ]] || die "--index must be 0..255"
[[ $(id -u) -eq 0 ]] || die "the node needs root (namespaces, mounts, cgroups, iptables)"
mkdir -p "$dir"
dir="$(realpath "$dir")" pki="$(realpath "$pki")" kubeconfig="$(realpath "$kubeconfig")"
LOCAL_DIR="$dir" # start_bg's logs and pid files
source "$FERROVIRT_ROOT/hack/node/names.sh"
echo "$name $index" >"$dir/node.id" # for hack/node/down.sh, even if this run stops halfway
t_up=$(now)

# ---- binaries --------------------------------------------------------------------------
need() { [[ -x "$1" ]] || die "$1 is missing: run hack/build-node.sh"; }
for b in kubelet kube-proxy; do need "$(kube_node_dir)/$b"; done
for b in containerd containerd-shim-runc-v2 ctr; do need "$(containerd_dir)/$b"; done
for b in bridge host-local loopback portmap; do need "$(cni_plugins_dir)/$b"; done
need "$(cri_tools_dir)/crictl"; need "$(registry_dir)/registry"
[[ -f "$(node_images_dir)/pause.tar" ]] || die "the pause image is missing: run hack/build-node.sh"
runc="$(command -v runc)" || die "runc not found: apt-get install runc (hack/setup.sh)"
command -v iptables >/dev/null || die "iptables not found: apt-get install iptables (hack/setup.sh)"
command -v openssl >/dev/null || die "openssl not found (hack/setup.sh)"
kubectl=("$(control_plane_dir)/kubectl" --kubeconfig "$kubeconfig")
port="$(sed -n 's#^ *server: https://127\.0\.0\.1:\([0-9]*\).*#\1#p' "$kubeconfig" | head -1)"
[[ -n "$port" ]] || die "$kubeconfig names no API server on https://127.0.0.1:<port>"

mkdir -p "$dir"/{logs,pids,pki,proc-sys,registry,etc/cni/net.d,etc/containerd,etc/kubelet} \
  "$dir"/var/{lib,log,tmp}
[[ -L "$dir/var/run" ]] || ln -s /run "$dir/var/run"

# put FILE: stdin becomes FILE, which is left alone when unchanged (kube-proxy exits when
# its configuration file is written, even with the same content).
put() {
  local tmp="$dir/.put.new" # outside etc/: containerd reloads on any write in net.d/
  cat >"$tmp"
  if cmp -s "$tmp" "$1"; then rm -f "$tmp"; else mv "$tmp" "$1"; fi
}

# ---- network: namespace, veth, the route to the API server -------------------------------
in_ns() { nsenter --net="/run/netns/$NODE_NETNS" -- "$@"; }
if [[ ! -e "/run/netns/$NODE_NETNS" ]]; then
  log "network namespace $NODE_NETNS"
  ip netns add "$NODE_NETNS"
fi
if ! ip link show "$NODE_HOST_IF" >/dev/null 2>&1; then
  log "veth $NODE_HOST_IF ($NODE_HOST_IP) <-> $NODE_NETNS/eth0 ($NODE_IP)"
  ip link add "$NODE_HOST_IF" type veth peer name "${NODE_HOST_IF}p"
  ip link set "${NODE_HOST_IF}p" netns "$NODE_NETNS"
  in_ns ip link set "${NODE_HOST_IF}p" name eth0
fi
ip addr replace "$NODE_HOST_IP/30" dev "$NODE_HOST_IF"
ip link set "$NODE_HOST_IF" up
# Routes on the host: the node's pods and the cluster's Services (the API server dials
# Services' ClusterIPs for webhooks and APIServices, as a control-plane node would) lead
# into the node. Safety routes make every other address in those ranges unreachable here
# instead of leaving through the default route, also while a node is down.
service_cidr="$("${kubectl[@]}" get servicecidr kubernetes -o jsonpath='{.spec.cidrs[0]}')" \
  || die "could not read the cluster's Service range (ServiceCIDR kubernetes)"
for net in 10.250.0.0/16 10.244.0.0/16 "$service_cidr"; do
  ip route show type unreachable "$net" | grep -q . \
    || ip route add unreachable "$net" metric "$NODE_SAFETY_METRIC"
done
ip route replace "$NODE_POD_CIDR" via "$NODE_IP" dev "$NODE_HOST_IF"
# Several nodes at once (tests of several binaries): the lowest index serves the range.
ip route show "$service_cidr" dev "$NODE_HOST_IF" | grep -q . \
  || ip route add "$service_cidr" via "$NODE_IP" dev "$NODE_HOST_IF" metric "$((100 + index))"
# The API server listens on 127.0.0.1 only; the node reaches it through a DNAT to loopback,
# which the kernel allows for packets coming in on this interface only.
sysctl -qw "net.ipv4.conf.$NODE_HOST_IF.route_localnet=1"
in_ns ip addr replace "$NODE_IP/30" dev eth0
in_ns ip link set eth0 up
in_ns ip link set lo up
# Pods are routed by the node; traffic within the pod bridge passes iptables (kube-proxy).
in_ns sysctl -qw net.ipv4.ip_forward=1
in_ns sysctl -qw net.ipv6.conf.all.forwarding=1
in_ns sysctl -qw net.bridge.bridge-nf-call-iptables=1
iptables -t nat -N "$NODE_CHAIN" 2>/dev/null || true
iptables -t nat -F "$NODE_CHAIN"
iptables -t nat -A "$NODE_CHAIN" -d "$NODE_HOST_IP" -p tcp --dport 6443 \
  -j DNAT --to-destination "127.0.0.1:$port" -m comment --comment "ferrovirt node $NODE_NAME: API server"
iptables -t nat -C PREROUTING -i "$NODE_HOST_IF" -j "$NODE_CHAIN" 2>/dev/null \
  || iptables -t nat -A PREROUTING -i "$NODE_HOST_IF" -j "$NODE_CHAIN" -m comment --comment "ferrovirt node $NODE_NAME"

# ---- cgroups: the node's pods live under /ferrovirt/<name> in every hierarchy -------------
for h in /sys/fs/cgroup/*/; do
  [[ -f "$h/cgroup.procs" ]] || continue
  case "$h" in */unified/) continue ;; esac
  mkdir -p "$h/ferrovirt/$NODE_NAME"
  if [[ -f "$h/cpuset.cpus" ]]; then
    for f in cpuset.cpus cpuset.mems; do
      cat "$h/$f" >"$h/ferrovirt/$f"
      cat "$h/$f" >"$h/ferrovirt/$NODE_NAME/$f"
    done
  fi
done

# ---- certificates and kubeconfigs --------------------------------------------------------
# issue NAME CN ORG: a client certificate signed by the cluster CA (kept while it verifies).
issue() {
  local f="$dir/pki/$1"
  if [[ -f "$f.crt" ]] && openssl verify -CAfile "$pki/ca.crt" "$f.crt" >/dev/null 2>&1; then return 0; fi
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$f.key" \
    -subj "/O=$3/CN=$2" -out "$f.csr" 2>/dev/null
  openssl x509 -req -in "$f.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 365 -out "$f.crt" -extfile <(printf 'extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\n') 2>/dev/null \
    || die "could not sign $1's certificate with $pki/ca.key"
  rm -f "$f.csr"
}
issue kubelet "system:node:$NODE_NAME" system:nodes
issue kube-proxy system:kube-proxy system:node-proxier
node_kubeconfig() {
  put "$dir/etc/$1.kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
- name: ferrovirt
  cluster:
    server: https://$NODE_HOST_IP:6443
    tls-server-name: kubernetes
    certificate-authority: $pki/ca.crt
users:
- name: $1
  user:
    client-certificate: $dir/pki/$1.crt
    client-key: $dir/pki/$1.key
contexts:
- name: ferrovirt
  context: {cluster: ferrovirt, user: $1}
current-context: ferrovirt
KC
}
node_kubeconfig kubelet
node_kubeconfig kube-proxy
# The `kubernetes` Service: the API server runs without an endpoint reconciler (its address
# is loopback); pods reach it at the host end of the veth, through the DNAT above.
"${kubectl[@]}" apply -f - >/dev/null <<ES || die "could not write the kubernetes Service's EndpointSlice"
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kubernetes
  namespace: default
  labels:
    kubernetes.io/service-name: kubernetes
    endpointslice.kubernetes.io/managed-by: ferrovirt-node
addressType: IPv4
endpoints:
- addresses: ["$NODE_HOST_IP"]
  conditions: {ready: true}
ports:
- name: https
  port: 6443
  protocol: TCP
ES

# ---- the holder: the node's mount namespace ---------------------------------------------
running() { [[ -f "$dir/pids/$1.pid" ]] && kill -0 "$(<"$dir/pids/$1.pid")" 2>/dev/null; }
if running holder; then
  holder="$(<"$dir/pids/holder.pid")"
elif [[ -n "$(ip netns pids "$NODE_NETNS" 2>/dev/null)" ]]; then
  die "an earlier node $NODE_NAME still runs in $NODE_NETNS without its pid files here: remove it with hack/node/down.sh --name $NODE_NAME --index $index"
else
  log "holder process (private mount namespace: /run, /var, kubelet's sysctls)"
  rm -f "$dir/holder.ready"
  start_bg holder nsenter --net="/run/netns/$NODE_NETNS" -- \
    unshare --mount --propagation private -- "$FERROVIRT_ROOT/hack/node/holder.sh" "$dir"
  holder="$(<"$dir/pids/holder.pid")"
  for _ in $(seq 1 50); do [[ -f "$dir/holder.ready" ]] && break; sleep 0.1; done
  [[ -f "$dir/holder.ready" ]] || die "the holder did not start; see $dir/logs/holder.log"
fi
node_exec() { nsenter -t "$holder" -n -m --wd="$dir" -- "$@"; }
# start_node NAME CMD...: CMD in the node's namespaces, detached, logged, with a pid file.
start_node() {
  local n="$1"; shift
  if running "$n"; then log "$n already running"; return 0; fi
  log "starting $n"
  start_bg "$n" nsenter -t "$holder" -n -m --wd="$dir" -- "$@"
}
PATH_NODE="$(containerd_dir):$(cri_tools_dir):$PATH"

# ---- pod network (CNI bridge inside the node; written before containerd reads it) -----------
put "$dir/etc/cni/net.d/10-ferrovirt.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "ferrovirt",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": true,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$NODE_POD_CIDR"}], [{"subnet": "$NODE_POD_CIDR6"}]],
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}
  ]
}
JSON

# ---- containerd -------------------------------------------------------------------------
put "$dir/etc/containerd/config.toml" <<TOML
# containerd of node $NODE_NAME (hack/node/up.sh; docs/real-node.md)
version = 3
root = "/var/lib/containerd"
state = "/run/containerd"
[grpc]
  address = "/run/containerd/containerd.sock"
[plugins.'io.containerd.cri.v1.runtime']
  # Nobody here may lower oom_score_adj (no CAP_SYS_RESOURCE): without this runc fails
  # every sandbox with "can't get final child's PID from pipe: EOF".
  restrict_oom_score_adj = true
  enable_cdi = false
[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
  BinaryName = "$runc"
  # cgroup v1 through cgroupfs, as kubelet's cgroupDriver; there is no systemd.
  SystemdCgroup = false
[plugins.'io.containerd.cri.v1.runtime'.cni]
  bin_dirs = ["$(cni_plugins_dir)"]
  conf_dir = "$dir/etc/cni/net.d"
[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
[plugins.'io.containerd.cri.v1.images'.pinned_images]
  # Built from hack/node/pause.c and imported at start: never pulled, never collected.
  sandbox = "$PAUSE_IMAGE"
[plugins.'io.containerd.cri.v1.images'.registry]
  # One hosts.toml per registry name: the local registry and the mirrored public names.
  config_path = "$dir/etc/containerd/certs.d"
TOML
# registry:5000 is KubeVirt's in-cluster test registry, which its examples name.
for reg in "$NODE_REGISTRY" quay.io docker.io registry.k8s.io ghcr.io registry:5000; do
  mkdir -p "$dir/etc/containerd/certs.d/$reg"
  put "$dir/etc/containerd/certs.d/$reg/hosts.toml" <<TOML
# $reg is served by the node's registry (plain HTTP); nothing is fetched from outside.
server = "http://$NODE_REGISTRY"
[host."http://$NODE_REGISTRY"]
  capabilities = ["pull", "resolve", "push"]
  skip_verify = true
TOML
done
start_node containerd env PATH="$PATH_NODE" "$(containerd_dir)/containerd" --config "$dir/etc/containerd/config.toml"
ctr=("$(containerd_dir)/ctr" --address /run/containerd/containerd.sock)
for _ in $(seq 1 100); do node_exec "${ctr[@]}" version >/dev/null 2>&1 && break; sleep 0.1; done
node_exec "${ctr[@]}" version >/dev/null 2>&1 || die "containerd did not answer; see $dir/logs/containerd.log"
if ! node_exec "${ctr[@]}" -n k8s.io images ls -q 2>/dev/null | grep -qx "$PAUSE_IMAGE"; then
  log "importing the pause image $PAUSE_IMAGE"
  node_exec "${ctr[@]}" -n k8s.io images import --platform linux/amd64 "$(node_images_dir)/pause.tar" >/dev/null 2>&1 \
    || die "importing the pause image failed"
fi
put "$dir/etc/crictl.yaml" <<YAML
runtime-endpoint: unix:///run/containerd/containerd.sock
image-endpoint: unix:///run/containerd/containerd.sock
timeout: 10
YAML

# ---- registry (host end of the veth) -------------------------------------------------------
put "$dir/etc/registry.yml" <<YAML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $dir/registry
  delete:
    enabled: true
http:
  addr: $NODE_REGISTRY
YAML
if ! running registry; then
  log "starting the registry on $NODE_REGISTRY"
  # The address is also in its environment (it wins over the file), where down.sh finds it.
  start_bg registry env OTEL_TRACES_EXPORTER=none REGISTRY_HTTP_ADDR="$NODE_REGISTRY" \
    "$(registry_dir)/registry" serve "$dir/etc/registry.yml"
fi

# ---- hugepages ----------------------------------------------------------------------------
# A pool of 2Mi pages for VMIs with memory.hugepages (docs/real-node.md): kubelet reports
# it as the node's hugepages-2Mi capacity, read when it starts. The pool is the kernel's,
# shared by every node on the machine: it is only ever raised, and stays after down.sh.
# 1Gi pages are not offered (the kernel rarely finds 1 GiB of contiguous memory at run time).
hugepages="${FERROVIRT_NODE_HUGEPAGES_2MI:-128}"
pool=/proc/sys/vm/nr_hugepages
if (( $(<"$pool") < hugepages )); then
  echo "$hugepages" >"$pool"
  (( $(<"$pool") >= hugepages )) \
    || log "the kernel gave $(<"$pool") of $hugepages hugepages of 2Mi: hugepages-2Mi VMIs may not fit"
fi

# ---- kubelet ------------------------------------------------------------------------------
echo "# no DNS: the node has no route off the machine" | put "$dir/etc/resolv.conf"
put "$dir/etc/kubelet/config.yaml" <<YAML
# kubelet of node $NODE_NAME (hack/node/up.sh; docs/real-node.md explains each line)
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /ferrovirt/$NODE_NAME
oomScoreAdj: 0
volumePluginDir: /var/lib/kubelet/volume-plugins
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous:
    enabled: true
  webhook:
    enabled: false
  x509:
    clientCAFile: $pki/ca.crt
authorization:
  mode: AlwaysAllow
resolvConf: $dir/etc/resolv.conf
clusterDomain: cluster.local
failSwapOn: false
protectKernelDefaults: false
serializeImagePulls: false
imageGCHighThresholdPercent: 99
imageGCLowThresholdPercent: 98
# Dedicated CPUs (KubeVirt's dedicatedCpuPlacement): a Guaranteed pod with whole CPUs gets
# CPUs no other pod runs on. The static policy needs a CPU reserved for the rest: 100m
# reserves CPU 0 for the shared pool, and the node can give the others away.
cpuManagerPolicy: static
kubeReserved:
  cpu: 100m
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%
  imagefs.available: 1%
YAML
# kubelet refuses to start on a CPU manager state of another policy (a node dir made before
# the static policy): that state is only the CPUs given away, which a new start recomputes.
state="$dir/var/lib/kubelet/cpu_manager_state"
if [[ -f "$state" ]] && ! grep -q '"policyName":"static"' "$state"; then
  rm -f "$state"
fi
start_node kubelet "$(kube_node_dir)/kubelet" --config "$dir/etc/kubelet/config.yaml" \
  --kubeconfig "$dir/etc/kubelet.kubeconfig" --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" --v=1

# ---- kube-proxy -----------------------------------------------------------------------------
put "$dir/etc/kube-proxy.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection:
  kubeconfig: $dir/etc/kube-proxy.kubeconfig
hostnameOverride: $NODE_NAME
bindAddress: $NODE_IP
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
clusterCIDR: $NODE_POD_CIDR,$NODE_POD_CIDR6
oomScoreAdj: 0
nodePortAddresses: ["$NODE_IP/32"]
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
YAML
start_node kube-proxy "$(kube_node_dir)/kube-proxy" --config "$dir/etc/kube-proxy.yaml"

# ---- ready --------------------------------------------------------------------------------
put "$dir/node.env" <<ENV
NODE_NAME=$NODE_NAME
NODE_IP=$NODE_IP
NODE_HOST_IP=$NODE_HOST_IP
NODE_REGISTRY=$NODE_REGISTRY
NODE_NETNS=$NODE_NETNS
NODE_HOLDER_PID=$holder
NODE_POD_CIDR=$NODE_POD_CIDR
NODE_POD_CIDR6=$NODE_POD_CIDR6
ENV
log "waiting for node $NODE_NAME to be Ready"
t=$(now)
until "${kubectl[@]}" get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null | grep -qx True; do
  (( $(now) - t < 120 )) || die "node $NODE_NAME not Ready after 120s; see $dir/logs/kubelet.log"
  for n in holder containerd kubelet kube-proxy registry; do
    running "$n" || die "$n exited; see $dir/logs/$n.log"
  done
  sleep 0.5
done
# kube-proxy answers on its health port once it has programmed the rules.
for _ in $(seq 1 100); do
  nsenter -t "$holder" -n -- bash -c 'exec 3<>/dev/tcp/127.0.0.1/10256' 2>/dev/null && break
  sleep 0.1
done
running kube-proxy || die "kube-proxy exited; see $dir/logs/kube-proxy.log"
log "node $NODE_NAME Ready ($(( $(now) - t_up ))s); registry $NODE_REGISTRY; enter it with: nsenter -t $holder -n -m"
