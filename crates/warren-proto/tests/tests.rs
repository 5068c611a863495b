//! Protocol tests over real sockets on 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use warren_proto::{spawn_writer, Message, MessageReader, ReadError};

async fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (client, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
    (client.unwrap(), server.unwrap().0)
}

#[tokio::test]
async fn keepalive_only_after_idle_interval() {
    let interval = Duration::from_millis(100);
    let (a, b) = pair().await;
    let (sender, _writer) = spawn_writer(a, interval);
    let mut reader = MessageReader::new(b, interval);
    let start = Instant::now();
    // Busy: messages every 40 ms, so no keep-alive is due.
    for i in 0..5 {
        sender.send(Message::Ack { id: i.to_string() });
        let got = reader.next().await.unwrap().unwrap();
        assert_eq!(got, Message::Ack { id: i.to_string() });
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    // Idle: a keep-alive arrives after about one interval, not before.
    let idle = Instant::now();
    let got = reader.next().await.unwrap().unwrap();
    assert_eq!(got, Message::KeepAlive);
    let waited = idle.elapsed();
    assert!(
        waited >= Duration::from_millis(50) && waited < Duration::from_millis(400),
        "{waited:?}"
    );
    assert!(start.elapsed() < Duration::from_secs(2));
    drop(sender);
}

#[tokio::test]
async fn silent_peer_is_dropped_after_three_intervals() {
    let interval = Duration::from_millis(50);
    let (a, b) = pair().await;
    let mut reader = MessageReader::new(b, interval);
    let start = Instant::now();
    let err = reader.next().await.unwrap_err();
    let waited = start.elapsed();
    assert!(matches!(err, ReadError::Silent(_)), "{err}");
    assert!(
        waited >= Duration::from_millis(150) && waited < Duration::from_millis(600),
        "{waited:?}"
    );
    drop(a);
}

#[tokio::test]
async fn go_style_back_to_back_and_garbage() {
    let (mut a, b) = pair().await;
    let mut reader = MessageReader::new(b, Duration::from_secs(5));
    a.write_all(br#"{"message":"register-pool","capacity":2}{"message":"-unknown"}{"message":"launch","id":"x","task":{"environment":"busybox","taskfs":"t.sfs","limits":{"time":60,"memory":32,"disk":50,"output":1024}},"input":"hi"}"#).await.unwrap();
    assert_eq!(
        reader.next().await.unwrap(),
        Some(Message::RegisterPool { capacity: 2 })
    );
    match reader.next().await.unwrap() {
        Some(Message::Launch(l)) => {
            assert_eq!(l.id, "x");
            assert_eq!(l.task.limits.memory, 32);
            assert_eq!(l.input, "hi");
        }
        other => panic!("{other:?}"),
    }
    a.write_all(b"not json\n").await.unwrap();
    assert!(matches!(reader.next().await, Err(ReadError::Decode(_))));
    // Closing cleanly reads as the end.
    let (mut c, d) = pair().await;
    let mut reader = MessageReader::new(d, Duration::from_secs(5));
    c.shutdown().await.unwrap();
    assert_eq!(reader.next().await.unwrap(), None);
}
