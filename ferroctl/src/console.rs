//! `ferroctl console NAME`: the VMI's serial console on this terminal. Like virtctl it
//! waits (up to `--timeout` minutes) while virt-api answers "VMI is not running", puts a
//! terminal in raw mode and leaves on Ctrl+]. With a pipe on stdin it sends the input and,
//! once the input ends, prints what the guest answers until the console has been quiet
//! for [`LINGER`].

use std::io::{Read, Write};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use kube::Client;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::{Error, Result, stream, terminal};

/// Ctrl+]
const ESCAPE: u8 = 0x1d;
/// How long output is still printed after a piped stdin ended and the guest went quiet.
pub const LINGER: Duration = Duration::from_secs(1);

enum Input {
    Data(Vec<u8>),
    Escape,
    End,
}

pub async fn run(client: &Client, namespace: &str, name: &str, timeout_minutes: u64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(timeout_minutes * 60);
    let mut ws = loop {
        match stream::open(client, namespace, name, "console").await {
            Ok(ws) => break ws,
            Err(Error::Refused { code: 400, message })
                if message == "VMI is not running" && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e),
        }
    };
    let raw = terminal::Raw::enter();
    eprint!("Successfully connected to {name} console. Press Ctrl+] to exit console.\r\n");
    let (tx, mut rx) = mpsc::channel::<Input>(16);
    std::thread::spawn(move || read_stdin(tx));
    let mut stdout = std::io::stdout();
    let mut quiet_until: Option<Instant> = None;
    let far = Instant::now() + Duration::from_secs(365 * 24 * 3600);
    let ended = loop {
        tokio::select! {
            input = rx.recv(), if quiet_until.is_none() => match input {
                Some(Input::Data(b)) => {
                    if ws.send(Message::binary(b)).await.is_err() {
                        break Err(Error::Stream("the console connection broke".into()));
                    }
                }
                Some(Input::Escape) => {
                    let _ = ws.close(None).await;
                    break Ok(None);
                }
                Some(Input::End) | None => quiet_until = Some(Instant::now() + LINGER),
            },
            msg = ws.next() => match msg {
                Some(Ok(Message::Binary(b))) => {
                    let _ = stdout.write_all(&b).and_then(|_| stdout.flush());
                    if quiet_until.is_some() {
                        quiet_until = Some(Instant::now() + LINGER);
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    break Ok(frame.map(|f| f.reason.to_string()).filter(|r| !r.is_empty()));
                }
                None => break Ok(None),
                Some(Err(e)) => break Err(Error::Stream(format!("the console connection broke: {e}"))),
                Some(Ok(_)) => {}
            },
            _ = tokio::time::sleep_until(quiet_until.unwrap_or(far)), if quiet_until.is_some() => {
                let _ = ws.close(None).await;
                break Ok(None);
            }
        }
    };
    drop(raw);
    match ended {
        Ok(Some(reason)) => {
            eprintln!("\r\nThe console was closed: {reason}");
            Ok(())
        }
        Ok(None) => Ok(()),
        Err(e) => {
            eprint!("\r\n");
            Err(e)
        }
    }
}

/// Reads stdin on a thread of its own (a blocking read cannot be cancelled): data, then
/// Escape at Ctrl+] or End at the end of the input.
fn read_stdin(tx: mpsc::Sender<Input>) {
    let mut stdin = std::io::stdin();
    let mut buf = [0u8; 1024];
    loop {
        let n = match stdin.read(&mut buf) {
            Ok(0) | Err(_) => {
                let _ = tx.blocking_send(Input::End);
                return;
            }
            Ok(n) => n,
        };
        if let Some(i) = buf[..n].iter().position(|b| *b == ESCAPE) {
            if i > 0 {
                let _ = tx.blocking_send(Input::Data(buf[..i].to_vec()));
            }
            let _ = tx.blocking_send(Input::Escape);
            return;
        }
        if tx.blocking_send(Input::Data(buf[..n].to_vec())).is_err() {
            return;
        }
    }
}
