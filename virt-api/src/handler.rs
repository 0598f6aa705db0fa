//! One request: discovery for anyone; a subresource only for a user the front proxy
//! vouches for ([`crate::authn`]) and the API server allows ([`crate::authz`]).

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use serde_json::Value;

use crate::authn::RequestHeaderConfig;
use crate::discovery;
use crate::lifecycle::{self, Plan, Write};
use crate::metrics::Metrics;
use crate::route::{self, Route, Target};
use crate::status::{Kind, Status};
use crate::{admission, authz, kubevirt};

/// What every request shares.
pub struct App {
    pub client: kube::Client,
    pub auth: RequestHeaderConfig,
    pub metrics: Arc<Metrics>,
    /// The client side of virt-api → virt-handler (mutual TLS).
    pub handler_tls: crate::handler_certs::HandlerTls,
    /// How often an open console or VNC stream pings its client (None: never).
    pub ping_interval: Option<std::time::Duration>,
}

/// The TLS client of a connection, as verified at the handshake.
#[derive(Clone, Debug, Default)]
pub struct Peer {
    /// A certificate signed by the request-header CA was presented.
    pub verified: bool,
    pub common_name: Option<String>,
}

type Reply = Response<Full<Bytes>>;

pub async fn handle(
    app: &App,
    peer: &Peer,
    method: &Method,
    path: &str,
    headers: &http::HeaderMap,
    body: &[u8],
) -> Reply {
    // The admission webhooks: kube-apiserver calls them without a client certificate, as
    // it calls KubeVirt's; their answers are decisions on the object sent, nothing more.
    if let Some(hook) = admission::Hook::from_path(path) {
        let response = if *method == Method::POST {
            json(
                StatusCode::OK,
                &admission::Admission::review_reading(hook, body, Some(&app.client)).await,
            )
        } else {
            status_reply(&Status::method_not_allowed(method.as_str(), path))
        };
        app.metrics.count(hook.label(), response.status().as_u16());
        return response;
    }
    let route = route::parse(path);
    let (label, reply) = match &route {
        Route::Subresource(t) => (
            format!("{}/{}", t.resource, t.subresource),
            subresource(app, peer, method, path, headers, t, body).await,
        ),
        Route::Unknown => ("unknown".to_string(), {
            match authenticate(app, peer, headers) {
                Err(s) => Err(s),
                Ok(_) => Err(Status::no_route(path)),
            }
        }),
        other if *method == Method::GET || *method == Method::HEAD => {
            ("discovery".to_string(), discovery_doc(app, other).await)
        }
        _ => (
            "discovery".to_string(),
            Err(Status::method_not_allowed(method.as_str(), path)),
        ),
    };
    let response = match reply {
        Ok(r) => r,
        Err(s) => status_reply(&s),
    };
    app.metrics.count(&label, response.status().as_u16());
    tracing::debug!(%method, path, code = response.status().as_u16(), "request");
    response
}

async fn discovery_doc(app: &App, route: &Route) -> Result<Reply, Status> {
    let doc = match route {
        Route::Root => discovery::root_paths(),
        Route::Apis => discovery::api_group_list(),
        Route::Group => discovery::api_group(),
        Route::ResourceList { version } => discovery::resource_list(version),
        Route::Version => discovery::version_info(),
        Route::Healthz => match app.client.apiserver_version().await {
            Ok(v) => {
                serde_json::json!({"apiserver": {"connectivity": "ok", "version": v.git_version}})
            }
            Err(e) => {
                let body = serde_json::json!({"apiserver": {"connectivity": "failed", "error": runtime::chain(&e)}});
                return Ok(json(StatusCode::INTERNAL_SERVER_ERROR, &body));
            }
        },
        Route::Subresource(_) | Route::Unknown => unreachable!("handled by the caller"),
    };
    Ok(json(StatusCode::OK, &doc))
}

/// The front proxy's certificate and the user it names.
fn authenticate(
    app: &App,
    peer: &Peer,
    headers: &http::HeaderMap,
) -> Result<crate::authn::User, Status> {
    if !peer.verified {
        return Err(Status::unauthorized("request is not authenticated"));
    }
    if !app.auth.proxy_allowed(peer.common_name.as_deref()) {
        let cn = peer.common_name.as_deref().unwrap_or("");
        return Err(Status::unauthorized(&format!(
            "client certificate common name {cn:?} is not in requestheader-allowed-names"
        )));
    }
    app.auth
        .user(headers)
        .map_err(|why| Status::unauthorized(&why))
}

/// The front proxy's user, allowed by a SubjectAccessReview to use `t`.
pub async fn authorize(
    app: &App,
    peer: &Peer,
    method: &Method,
    path: &str,
    headers: &http::HeaderMap,
    t: &Target,
) -> Result<crate::authn::User, Status> {
    let user = authenticate(app, peer, headers)?;
    if !matches!(
        t.resource.as_str(),
        "virtualmachines" | "virtualmachineinstances"
    ) {
        return Err(Status::no_route(path));
    }
    let verb =
        authz::verb(method).ok_or_else(|| Status::method_not_allowed(method.as_str(), path))?;
    let review = authz::review(&user, t, verb);
    match authz::check(&app.client, &review).await {
        Ok(Ok(())) => Ok(user),
        Ok(Err(reason)) => {
            let mut message = format!(
                "{}.{} {:?} is forbidden: User {:?} cannot {verb} resource \"{}/{}\" in API group \"{}\" in the namespace {:?}",
                t.resource,
                discovery::GROUP,
                t.name,
                user.name,
                t.resource,
                t.subresource,
                discovery::GROUP,
                t.namespace
            );
            if !reason.is_empty() {
                message.push_str(": ");
                message.push_str(&reason);
            }
            Err(Status::forbidden(&message))
        }
        Err(e) => {
            tracing::error!(error = %runtime::chain(&e), "SubjectAccessReview");
            Err(Status::internal("authorizing the request"))
        }
    }
}

async fn subresource(
    app: &App,
    peer: &Peer,
    method: &Method,
    path: &str,
    headers: &http::HeaderMap,
    t: &Target,
    body: &[u8],
) -> Result<Reply, Status> {
    let user = authorize(app, peer, method, path, headers, t).await?;
    let key = format!("{}/{}", t.resource, t.subresource);
    let put = match (t.resource.as_str(), t.subresource.as_str()) {
        ("virtualmachines", "start" | "stop" | "restart") => Some(true),
        ("virtualmachineinstances", "pause" | "unpause") => Some(false),
        _ => None,
    };
    if let Some(vm) = put {
        if *method != Method::PUT {
            return Err(Status::method_not_allowed(method.as_str(), path));
        }
        tracing::info!(user = %user.name, namespace = %t.namespace, name = %t.name, resource = %t.resource, subresource = %t.subresource, "request");
        return if vm {
            vm_lifecycle(app, t, body).await
        } else {
            vmi_pause(app, t, body).await
        };
    }
    if t.resource == "virtualmachineinstances"
        && crate::guestagent::SUBRESOURCES.contains(&t.subresource.as_str())
    {
        if *method != Method::GET {
            return Err(Status::method_not_allowed(method.as_str(), path));
        }
        return guest_agent(app, t).await;
    }
    if t.resource == "virtualmachineinstances"
        && matches!(t.subresource.as_str(), "console" | "vnc")
    {
        // Served as websockets by crate::console; anything else is not one.
        return Err(Status::bad_request(
            "websocket: the client is not using the websocket protocol",
        ));
    }
    if discovery::NOT_YET.contains(&key.as_str()) {
        return Err(Status::not_implemented(&key));
    }
    Err(Status::no_route(path))
}

/// The VMI of `t`, or KubeVirt's 404/500.
pub async fn fetch_vmi(app: &App, t: &Target) -> Result<Value, Status> {
    kubevirt::get(
        &app.client,
        &t.namespace,
        "virtualmachineinstances",
        &t.name,
    )
    .await
    .map_err(|e| {
        Status::internal(&format!(
            "unable to retrieve vmi [{}]: {}",
            t.name,
            kubevirt::message(&e)
        ))
    })?
    .ok_or_else(|| Status::not_found(Kind::VirtualMachineInstance, &t.name))
}

/// `GET .../virtualmachineinstances/<name>/<guestosinfo|userlist|filesystemlist>`:
/// KubeVirt's checks, then the VMI's handler asks its launcher's agent.
async fn guest_agent(app: &App, t: &Target) -> Result<Reply, Status> {
    let vmi = fetch_vmi(app, t).await?;
    crate::guestagent::check(&vmi)?;
    let target = crate::handler_client::target(&app.client, &vmi, &t.subresource).await?;
    crate::guestagent::reply(crate::handler_client::get(&app.handler_tls, &target).await?)
}

/// `pause` / `unpause`: KubeVirt's checks, then the VMI's handler asks its launcher.
async fn vmi_pause(app: &App, t: &Target, body: &[u8]) -> Result<Reply, Status> {
    let dry_run = crate::vmi::dry_run(body)?;
    let vmi = fetch_vmi(app, t).await?;
    if t.subresource == "pause" {
        crate::vmi::pause(&vmi)?;
    } else {
        crate::vmi::unpause(&vmi)?;
    }
    let target = crate::handler_client::target(&app.client, &vmi, &t.subresource).await?;
    if !dry_run {
        crate::handler_client::put(&app.handler_tls, &target).await?;
    }
    Ok(Response::builder()
        .status(StatusCode::OK)
        .body(Full::new(Bytes::new()))
        .expect("a valid response"))
}

async fn vm_lifecycle(app: &App, t: &Target, body: &[u8]) -> Result<Reply, Status> {
    let c = &app.client;
    let vm = match kubevirt::get(c, &t.namespace, "virtualmachines", &t.name).await {
        Ok(Some(vm)) => vm,
        Ok(None) => return Err(Status::not_found(Kind::VirtualMachine, &t.name)),
        Err(e) => {
            return Err(Status::internal(&format!(
                "unable to retrieve vm [{}]: {}",
                t.name,
                kubevirt::message(&e)
            )));
        }
    };
    let vmi = kubevirt::get(c, &t.namespace, "virtualmachineinstances", &t.name)
        .await
        .map_err(|e| Status::internal(&kubevirt::message(&e)))?;
    let (plan, dry_run) = match t.subresource.as_str() {
        "start" => {
            let o: lifecycle::StartOptions = lifecycle::options(body)?;
            (lifecycle::start(&vm, vmi.as_ref(), &o)?, o.dry_run)
        }
        "stop" => {
            let o: lifecycle::StopOptions = lifecycle::options(body)?;
            (lifecycle::stop(&vm, vmi.as_ref(), &o)?, o.dry_run)
        }
        _ => {
            let o: lifecycle::RestartOptions = lifecycle::options(body)?;
            (lifecycle::restart(&vm, vmi.as_ref(), &o)?, o.dry_run)
        }
    };
    execute(c, t, plan, &dry_run).await?;
    Ok(Response::builder()
        .status(StatusCode::ACCEPTED)
        .body(Full::new(Bytes::new()))
        .expect("a valid response"))
}

async fn execute(
    c: &kube::Client,
    t: &Target,
    plan: Plan,
    dry_run: &[String],
) -> Result<(), Status> {
    let send = |w: Write| async move {
        let (resource, sub, ops) = match w {
            Write::Vm(ops) => ("virtualmachines", None, ops),
            Write::VmStatus(ops) => ("virtualmachines", Some("status"), ops),
            Write::Vmi(ops) => ("virtualmachineinstances", None, ops),
        };
        tracing::debug!(resource, patch = %serde_json::Value::from(ops.clone()), "patching");
        kubevirt::json_patch(c, &t.namespace, resource, &t.name, sub, &ops, dry_run).await
    };
    for write in plan.writes {
        if let Err(e) = send(write).await {
            return Err(if kubevirt::is_test_failure(&e) {
                Status::conflict(Kind::VirtualMachine, &t.name, &kubevirt::message(&e))
            } else {
                Status::internal(&kubevirt::message(&e))
            });
        }
    }
    Ok(())
}

/// A Status as a response.
pub fn status_reply(s: &Status) -> Reply {
    json(
        StatusCode::from_u16(s.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &s.body,
    )
}

fn json(code: StatusCode, body: &Value) -> Reply {
    Response::builder()
        .status(code)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(
            serde_json::to_vec(body).expect("JSON values serialize"),
        )))
        .expect("a valid response")
}
