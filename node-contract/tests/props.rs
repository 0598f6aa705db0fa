//! Property tests of the launcher socket's wire format (issue 12): every message survives
//! the trip through a line, and no byte sequence from a peer panics the decoder or makes it
//! buffer beyond the bound.

use ferrovirt_node_contract::client::LauncherClient;
use ferrovirt_node_contract::frame::{FrameError, LineReader};
use ferrovirt_node_contract::protocol::{
    DomainInfo, DomainState, Event, Failure, FailureKind, OpenFile, Pong, Request, Response,
    StopReason,
};
use proptest::prelude::*;

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime")
        .block_on(f)
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        Just(Request::Ping),
        (any::<String>(), any::<bool>(), any::<bool>()).prop_map(
            |(domain_xml, paused, start_paused)| Request::DefineAndStart {
                domain_xml,
                paused,
                start_paused,
                dhcp: vec![],
                passt: vec![],
                virtiofs: vec![],
            }
        ),
        Just(Request::OpenFiles),
        Just(Request::Shutdown),
        Just(Request::Destroy),
        Just(Request::Pause),
        Just(Request::Unpause),
        Just(Request::DomainInfo),
        Just(Request::WatchEvents),
    ]
}

fn state() -> impl Strategy<Value = DomainState> {
    prop_oneof![
        Just(DomainState::NoState),
        Just(DomainState::Running),
        Just(DomainState::Blocked),
        Just(DomainState::Paused),
        Just(DomainState::ShuttingDown),
        Just(DomainState::Shutoff),
        Just(DomainState::Crashed),
        Just(DomainState::PmSuspended),
        Just(DomainState::Unknown),
    ]
}

fn event() -> impl Strategy<Value = Event> {
    let reason = prop_oneof![
        Just(StopReason::Shutdown),
        Just(StopReason::Destroyed),
        Just(StopReason::Crashed),
        Just(StopReason::Failed),
        Just(StopReason::Other),
    ];
    prop_oneof![
        Just(Event::Started),
        Just(Event::Paused),
        Just(Event::Resumed),
        any::<u64>().prop_map(|count| Event::Rebooted { count }),
        reason.prop_map(|reason| Event::Stopped { reason }),
    ]
}

fn response() -> impl Strategy<Value = Response> {
    let info = (
        any::<String>(),
        any::<String>(),
        state(),
        any::<String>(),
        any::<Option<u32>>(),
    )
        .prop_map(|(name, uuid, state, reason, qemu_pid)| DomainInfo {
            name,
            uuid,
            state,
            reason,
            qemu_pid,
        });
    prop_oneof![
        (any::<String>(), any::<u32>())
            .prop_map(|(version, pid)| Response::Pong(Pong { version, pid })),
        Just(Response::Ok),
        proptest::option::of(info).prop_map(Response::DomainInfo),
        proptest::collection::vec(
            (any::<u64>(), any::<u64>()).prop_map(|(dev, ino)| OpenFile { dev, ino }),
            0..8
        )
        .prop_map(Response::OpenFiles),
        event().prop_map(Response::Event),
        (
            prop_oneof![
                Just(FailureKind::Transient),
                Just(FailureKind::Permanent),
                Just(FailureKind::NoDomain)
            ],
            any::<String>()
        )
            .prop_map(|(kind, message)| Response::Error(Failure { kind, message })),
    ]
}

/// Every line of `input`, decoded as `T`, through the bounded reader.
fn decode_all<T: serde::de::DeserializeOwned>(input: &[u8], max: usize) -> Vec<Result<T, String>> {
    block_on(async {
        let mut reader = LineReader::with_max(tokio::io::BufReader::with_capacity(7, input), max);
        let mut out = Vec::new();
        loop {
            match reader.next_line().await {
                Ok(Some(line)) => out.push(serde_json::from_str(&line).map_err(|e| e.to_string())),
                Ok(None) => return out,
                Err(e) => {
                    out.push(Err(e.to_string()));
                    return out;
                }
            }
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn requests_survive_one_line_each(requests in proptest::collection::vec(request(), 1..6)) {
        let wire: String = requests.iter().map(Request::to_line).collect();
        prop_assert_eq!(wire.matches('\n').count(), requests.len());
        let decoded: Vec<Request> = decode_all::<Request>(wire.as_bytes(), usize::MAX)
            .into_iter()
            .collect::<Result<_, _>>()
            .map_err(TestCaseError::fail)?;
        prop_assert_eq!(decoded, requests);
    }

    #[test]
    fn responses_survive_one_line_each(responses in proptest::collection::vec(response(), 1..6)) {
        let wire: String = responses.iter().map(Response::to_line).collect();
        let decoded: Vec<Response> = decode_all::<Response>(wire.as_bytes(), usize::MAX)
            .into_iter()
            .collect::<Result<_, _>>()
            .map_err(TestCaseError::fail)?;
        prop_assert_eq!(decoded, responses);
    }

    /// Whatever a peer sends, decoding ends in values or errors, one per line at most, and
    /// a line over the bound ends the stream with an error instead of being held.
    #[test]
    fn any_bytes_decode_or_fail_without_panic(input in proptest::collection::vec(any::<u8>(), 0..2048), max in 1usize..512) {
        let lines = input.split(|&b| b == b'\n').count();
        let longest = input.split(|&b| b == b'\n').map(<[u8]>::len).max().unwrap_or(0);
        let requests = decode_all::<Request>(&input, max);
        let responses = decode_all::<Response>(&input, max);
        for decoded in [requests.iter().map(Result::is_ok).collect::<Vec<_>>(), responses.iter().map(Result::is_ok).collect()] {
            prop_assert!(decoded.len() <= lines);
            if longest > max {
                prop_assert_eq!(decoded.last(), Some(&false));
            }
        }
    }

    /// JSON-shaped noise: right braces and keys, wrong values.
    #[test]
    fn near_miss_json_is_an_error_not_a_panic(
        command in "[a-z_]{0,20}",
        value in prop_oneof![Just("null".to_string()), Just("1e999".to_string()), "\\PC{0,40}".prop_map(|s| format!("{s:?}"))],
    ) {
        let line = format!("{{\"command\":\"{command}\",\"domain_xml\":{value},\"paused\":{value}}}\n");
        let _ = decode_all::<Request>(line.as_bytes(), 1 << 16);
        let line = format!("{{\"domain_info\":{{\"name\":{value},\"state\":\"{command}\"}}}}\n");
        let _ = decode_all::<Response>(line.as_bytes(), 1 << 16);
    }
}

/// A peer that never ends its line is cut off at the bound, not buffered forever.
#[test]
fn an_endless_line_is_refused_at_the_bound() {
    let endless = tokio::io::repeat(b'x');
    let outcome = block_on(async {
        LineReader::new(tokio::io::BufReader::new(endless))
            .next_line()
            .await
    });
    assert!(
        matches!(outcome, Err(FrameError::TooLong { max }) if max == ferrovirt_node_contract::frame::MAX_LINE),
        "{outcome:?}"
    );
}

/// Each kind of failure reaches the client's caller as it was sent, and only a permanent
/// one says that asking again cannot help (what virt-handler fails a VMI on).
#[test]
fn the_client_reports_the_launchers_failure_kind() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("launcher.sock");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("a current-thread runtime with I/O");
    runtime.block_on(async {
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        let kinds = [
            FailureKind::Transient,
            FailureKind::Permanent,
            FailureKind::NoDomain,
        ];
        let server = async {
            use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
            let (stream, _) = listener.accept().await.unwrap();
            let (read, mut write) = stream.into_split();
            let mut lines = tokio::io::BufReader::new(read).lines();
            for kind in kinds {
                let line = lines.next_line().await.unwrap().unwrap();
                assert_eq!(line, r#"{"command":"domain_info"}"#);
                let answer = Response::Error(Failure::new(kind, format!("{kind:?} failure")));
                write.write_all(answer.to_line().as_bytes()).await.unwrap();
            }
        };
        let client = async {
            let mut c = LauncherClient::connect(&socket).await.unwrap();
            let mut seen = Vec::new();
            for _ in kinds {
                let e = c.domain_info().await.unwrap_err();
                seen.push((e.is_permanent(), e.is_no_domain(), e.to_string()));
            }
            seen
        };
        let ((), seen) = tokio::join!(server, client);
        assert_eq!(
            seen,
            [
                (
                    false,
                    false,
                    "launcher answered: Transient failure".to_string()
                ),
                (
                    true,
                    false,
                    "launcher answered: Permanent failure".to_string()
                ),
                (
                    false,
                    true,
                    "launcher answered: NoDomain failure".to_string()
                ),
            ]
        );
    });
}
