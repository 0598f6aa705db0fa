//! The kubelet device plugin for `devices.kubevirt.io/{kvm,tun,vhost-net}` (work in progress).
