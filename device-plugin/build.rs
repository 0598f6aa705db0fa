//! The kubelet's device plugin services (`k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1`,
//! `api.proto`) described by hand, so no `protoc` is needed: tonic-build writes the client
//! and server stubs, `src/api.rs` has the messages with their v1beta1 field numbers.

use tonic_build::manual::{Builder, Method, Service};

const CODEC: &str = "tonic_prost::ProstCodec";

fn method(
    name: &str,
    route: &str,
    input: &str,
    output: &str,
) -> tonic_build::manual::MethodBuilder {
    Method::builder()
        .name(name)
        .route_name(route)
        .input_type(format!("crate::api::{input}"))
        .output_type(format!("crate::api::{output}"))
        .codec_path(CODEC)
}

fn main() {
    let registration = Service::builder()
        .name("Registration")
        .package("v1beta1")
        .comment("Served by the kubelet on `kubelet.sock`: a device plugin registers its resource.")
        .method(method("register", "Register", "RegisterRequest", "Empty").build())
        .build();
    let device_plugin = Service::builder()
        .name("DevicePlugin")
        .package("v1beta1")
        .comment("Served by a device plugin on its own socket in the device-plugins directory.")
        .method(
            method(
                "get_device_plugin_options",
                "GetDevicePluginOptions",
                "Empty",
                "DevicePluginOptions",
            )
            .build(),
        )
        .method(
            method(
                "list_and_watch",
                "ListAndWatch",
                "Empty",
                "ListAndWatchResponse",
            )
            .server_streaming()
            .build(),
        )
        .method(
            method(
                "get_preferred_allocation",
                "GetPreferredAllocation",
                "PreferredAllocationRequest",
                "PreferredAllocationResponse",
            )
            .build(),
        )
        .method(
            method(
                "allocate",
                "Allocate",
                "AllocateRequest",
                "AllocateResponse",
            )
            .build(),
        )
        .method(
            method(
                "pre_start_container",
                "PreStartContainer",
                "PreStartContainerRequest",
                "PreStartContainerResponse",
            )
            .build(),
        )
        .build();
    Builder::new()
        .build_transport(false)
        .compile(&[registration, device_plugin]);
    println!("cargo:rerun-if-changed=build.rs");
}
