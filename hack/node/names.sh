# Names and addresses of node NAME with index INDEX (hack/node/up.sh and down.sh source it
# after setting $name and $index). docs/real-node.md lists them.
# shellcheck shell=bash
NODE_NAME="$name"
NODE_NETNS="ferrovirt-$name"
NODE_HOST_IF="fvn$index"
NODE_HOST_IP="10.250.$index.1"
NODE_IP="10.250.$index.2"
NODE_REGISTRY="$NODE_HOST_IP:5000"
NODE_POD_CIDR="10.244.$index.0/24"
# The pods' IPv6 range (dual-stack): a ULA prefix, routed nowhere outside the node.
NODE_POD_CIDR6="fd00:10:244:$index::/64"
# Marks the host's safety routes (unreachable 10.250.0.0/16, 10.244.0.0/16, the Service
# range), shared by all nodes: removed with the last node.
NODE_SAFETY_METRIC=4242
NODE_CHAIN="FERROVIRT-NODE-$index"
