# Names and addresses of node NAME with index INDEX (hack/node/up.sh and down.sh source it
# after setting $name and $index). docs/real-node.md lists them.
# shellcheck shell=bash
NODE_NAME="$name"
NODE_NETNS="ferrovirt-$name"
NODE_HOST_IF="fvn$index"
NODE_HOST_IP="10.250.$index.1"
NODE_IP="10.250.$index.2"
NODE_REGISTRY="$NODE_HOST_IP:5000"
NODE_POD_CIDR="10.244.0.0/24"
NODE_CHAIN="FERROVIRT-NODE-$index"
