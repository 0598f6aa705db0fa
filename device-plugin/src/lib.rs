//! The kubelet device plugin for `devices.kubevirt.io/{kvm,tun,vhost-net}`, as KubeVirt's
//! virt-handler serves it (work in progress).

pub mod api;
