//! From a pod's container to the ShimSpec that runs it.

use crate::env::{self, Refs, Service};
use crate::image::Source;
use crate::state::{PodDir, ShimSpec};
use crate::{Ctx, Error, Result, containerdisk, image, volumes};
use k8s_openapi::api::core::v1::{Container, Pod};
use std::collections::HashMap;
use std::path::PathBuf;

pub fn spec(
    ctx: &Ctx,
    pod: &Pod,
    c: &Container,
    dir: &PodDir,
    vols: &HashMap<String, PathBuf>,
    refs: &Refs,
    pid_namespace: Option<PathBuf>,
) -> Result<ShimSpec> {
    let img = c.image.as_deref().unwrap_or_default();
    let source = image::resolve(img, &ctx.image_prefix, &ctx.image_store)?;
    let pod_sc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let sc = c.security_context.as_ref();
    let to_u32 = |v: Option<i64>| v.and_then(|v| u32::try_from(v).ok());
    let mut uid = to_u32(
        sc.and_then(|s| s.run_as_user)
            .or(pod_sc.and_then(|s| s.run_as_user)),
    );
    let mut gid = to_u32(
        sc.and_then(|s| s.run_as_group)
            .or(pod_sc.and_then(|s| s.run_as_group)),
    );
    check_non_root(
        c,
        sc.and_then(|s| s.run_as_non_root)
            .or(pod_sc.and_then(|s| s.run_as_non_root)),
        uid,
    )?;
    let (path, argv) = if containerdisk::is_container_disk(c.command.as_deref()) {
        // The disk containers' program (and the init container's copy of it): devnode's
        // own stand-in, chrooted into the image's directory.
        let exe = ctx.self_exe.to_string_lossy().into_owned();
        let mut argv = vec![exe, containerdisk::COMMAND.to_string()];
        argv.extend(c.command.iter().flatten().skip(1).cloned());
        argv.extend(c.args.iter().flatten().cloned());
        // The stand-in starts as root (it chroots) and becomes the container's user itself.
        for (flag, id) in [("--uid", uid.take()), ("--gid", gid.take())] {
            if let Some(id) = id {
                argv.extend([flag.to_string(), id.to_string()]);
            }
        }
        match &source {
            Source::Store(dir) => {
                argv.extend(["--root".to_string(), dir.to_string_lossy().into_owned()])
            }
            // A disk container serves an image's tree, which only the store has.
            Source::Binary(_) if argv.iter().any(|a| a == "--socket") => {
                return Err(Error::Image(format!(
                    "image {img:?} is not in the image store {} (hack/build-guest-images.sh)",
                    ctx.image_store.display()
                )));
            }
            Source::Binary(_) => {}
        }
        (ctx.self_exe.clone(), argv)
    } else {
        match &source {
            Source::Store(_) => {
                return Err(Error::Unsupported(format!(
                    "container {:?}: image {img:?} is a directory of the image store, where devnode runs only {} (the disk containers' program)",
                    c.name,
                    containerdisk::COMMAND
                )));
            }
            Source::Binary(binary) => image::command(c, binary, &ctx.bin_dir),
        }
    };
    if c.command.as_ref().is_none_or(|c| c.is_empty()) && !path.exists() {
        return Err(Error::Image(format!(
            "image {img:?} runs {}, which does not exist (build it, or point --bin-dir at Ferrovirt's binaries)",
            path.display()
        )));
    }
    let service = Service {
        host: &ctx.api_host,
        port: ctx.api_port,
    };
    let vars = env::resolve(pod, c, refs, &ctx.node_name, &service)?;
    let map: HashMap<String, String> = vars.iter().cloned().collect();
    let argv = argv.iter().map(|a| env::expand(a, &map)).collect();
    let mounts = volumes::mounts(c, vols, &map)?;
    Ok(ShimSpec {
        path,
        argv,
        env: vars,
        cwd: c
            .working_dir
            .as_ref()
            .filter(|w| !w.is_empty())
            .map(PathBuf::from),
        hostname: env::hostname(pod),
        mounts,
        uid,
        gid,
        log: dir.log(&c.name),
        started_file: dir.started(&c.name),
        exit_file: dir.exited(&c.name),
        logs_on_error: c.termination_message_policy.as_deref() == Some("FallbackToLogsOnError"),
        pid_namespace,
    })
}

/// `runAsNonRoot` as kubelet checks it: a container that would run as root (no
/// runAsUser, as devnode does not read an image's USER, or 0) does not start.
fn check_non_root(c: &Container, non_root: Option<bool>, uid: Option<u32>) -> Result<()> {
    if non_root == Some(true) && uid.is_none_or(|u| u == 0) {
        return Err(Error::Unsupported(format!(
            "container {:?} has runAsNonRoot and would run as root (set runAsUser to a non-zero uid)",
            c.name
        )));
    }
    Ok(())
}

/// Rejects pods asking for what devnode does not do, with the field named.
pub fn admit(pod: &Pod) -> Result<()> {
    let spec = pod
        .spec
        .as_ref()
        .ok_or_else(|| Error::Unsupported("pod without spec".into()))?;
    volumes::check(pod)?;
    for c in spec.init_containers.iter().flatten() {
        if c.restart_policy.is_some() {
            return Err(Error::Unsupported(format!(
                "init container {:?}: restartPolicy (sidecar containers) is not supported by devnode",
                c.name
            )));
        }
    }
    for c in spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
    {
        crate::probe::check(c)?;
        for e in c.env.iter().flatten() {
            if e.value_from
                .as_ref()
                .is_some_and(|f| f.resource_field_ref.is_some() || f.file_key_ref.is_some())
            {
                return Err(Error::Unsupported(format!(
                    "container {:?} env {:?}: only fieldRef, configMapKeyRef and secretKeyRef are supported by devnode",
                    c.name, e.name
                )));
            }
        }
    }
    if spec
        .ephemeral_containers
        .as_ref()
        .is_some_and(|e| !e.is_empty())
    {
        return Err(Error::Unsupported(
            "ephemeral containers are not supported by devnode".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_as_non_root_refuses_a_container_that_would_run_as_root() {
        let c = Container {
            name: "compute".into(),
            ..Default::default()
        };
        assert!(check_non_root(&c, Some(true), Some(107)).is_ok());
        assert!(check_non_root(&c, None, None).is_ok());
        assert!(check_non_root(&c, Some(false), Some(0)).is_ok());
        for uid in [None, Some(0)] {
            let e = check_non_root(&c, Some(true), uid).unwrap_err().to_string();
            assert!(e.contains("runAsNonRoot") && e.contains("compute"), "{e}");
        }
    }
}
