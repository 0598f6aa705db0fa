//! Watches the pods bound to this node and gives each its own worker.

use crate::{Ctx, Result, chain, pod, state};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tokio::sync::watch;

pub async fn run(ctx: Arc<Ctx>) -> Result<()> {
    let api: Api<Pod> = Api::all(ctx.client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={}", ctx.node_name));
    let mut events = watcher(api, config).default_backoff().boxed();
    let mut workers: HashMap<String, watch::Sender<Option<Arc<Pod>>>> = HashMap::new();
    let mut listed: HashSet<String> = HashSet::new();
    let mut swept = false;
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %chain(&e), "pod watch failed; retrying");
                continue;
            }
        };
        workers.retain(|_, tx| !tx.is_closed());
        match event {
            watcher::Event::Init => listed.clear(),
            watcher::Event::InitApply(p) | watcher::Event::Apply(p) => {
                let uid = p.metadata.uid.clone().unwrap_or_default();
                listed.insert(uid.clone());
                let p = Arc::new(p);
                match workers.get(&uid) {
                    Some(tx) => {
                        tx.send_replace(Some(p));
                    }
                    None => {
                        // A pod that is being deleted and has no worker was finished by an
                        // earlier worker or devnode: its worker just deletes it.
                        let (tx, rx) = watch::channel(Some(p));
                        tokio::spawn(pod::run(ctx.clone(), rx));
                        workers.insert(uid, tx);
                    }
                }
            }
            watcher::Event::Delete(p) => {
                if let Some(tx) = workers.get(p.metadata.uid.as_deref().unwrap_or_default()) {
                    tx.send_replace(None);
                }
            }
            watcher::Event::InitDone => {
                for (uid, tx) in &workers {
                    if !listed.contains(uid) {
                        tx.send_replace(None);
                    }
                }
                if !swept {
                    // Once, at start: pods deleted while devnode was down, or of an earlier
                    // cluster, have no worker to remove their state dirs.
                    swept = true;
                    for dir in state::remove_stale_pod_dirs(&ctx.state_dir, &listed) {
                        tracing::info!(dir = %dir.display(), "removed the state dir of a pod that no longer exists");
                    }
                }
            }
        }
    }
    Ok(())
}
