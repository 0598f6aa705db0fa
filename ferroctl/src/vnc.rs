//! `ferroctl vnc NAME`: the VMI's VNC display on a local TCP port, as `virtctl vnc
//! --proxy-only` does it: the websocket is opened first (a refusal is reported before
//! anything listens), then the port is printed as `{"port":N}` and the first VNC client
//! that connects is bridged to the display until either side ends.

use futures::{SinkExt, StreamExt};
use kube::Client;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

use crate::cli::VncFlags;
use crate::{Error, Result, stream};

pub async fn run(client: &Client, namespace: &str, name: &str, flags: &VncFlags) -> Result<()> {
    let mut ws = stream::open(client, namespace, name, "vnc").await?;
    let io = |action: String| move |source| Error::Io { action, source };
    let listener = TcpListener::bind((flags.address, flags.port))
        .await
        .map_err(io(format!("listening on {}:{}", flags.address, flags.port)))?;
    let port = listener
        .local_addr()
        .map_err(io("listening".into()))?
        .port();
    println!("{}", serde_json::json!({ "port": port }));
    if !flags.proxy_only {
        eprintln!(
            "VNC of {name} on {}:{port}: connect a VNC viewer to it (ferroctl starts none)",
            flags.address
        );
    }
    let (mut tcp, _) = listener
        .accept()
        .await
        .map_err(io("accepting the VNC client".into()))?;
    let _ = tcp.set_nodelay(true);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        tokio::select! {
            n = tcp.read(&mut buf) => match n {
                Ok(0) | Err(_) => {
                    let _ = ws.close(None).await;
                    return Ok(());
                }
                Ok(n) => {
                    if ws.send(Message::binary(buf[..n].to_vec())).await.is_err() {
                        return Err(Error::Stream("the VNC connection broke".into()));
                    }
                }
            },
            msg = ws.next() => match msg {
                Some(Ok(Message::Binary(b))) => {
                    if tcp.write_all(&b).await.is_err() {
                        let _ = ws.close(None).await;
                        return Ok(());
                    }
                }
                Some(Ok(Message::Close(_))) | None => return Ok(()),
                Some(Err(e)) => return Err(Error::Stream(format!("the VNC connection broke: {e}"))),
                Some(Ok(_)) => {}
            }
        }
    }
}
