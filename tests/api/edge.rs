//! The edge of the service: what a client can hold without sending a request.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::db_tests;
use crate::harness::TestApp;

db_tests!(
    a_client_that_trickles_its_headers_is_dropped,
    connections_over_the_cap_wait_until_one_closes
);

/// A complete request on a raw connection; returns the response's first bytes.
async fn request(stream: &mut TcpStream) -> String {
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: confidant\r\n\r\n")
        .await
        .unwrap();
    let mut buffer = [0u8; 1024];
    let read = stream.read(&mut buffer).await.unwrap();
    String::from_utf8_lossy(&buffer[..read]).into_owned()
}

/// Slowloris: headers that never finish must not hold a connection (and a task) forever.
async fn a_client_that_trickles_its_headers_is_dropped(mut app: TestApp) {
    app.reconfigure(confidant::Settings {
        header_timeout: Duration::from_millis(300),
        ..confidant::Settings::default()
    })
    .await;
    let mut slow = TcpStream::connect(app.address).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: confidant\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buffer = [0u8; 1024];
    let outcome = tokio::time::timeout(Duration::from_secs(5), slow.read(&mut buffer))
        .await
        .expect("the server kept a connection whose headers never ended");
    // Closed (end of stream or reset), or told off with a 408 before closing.
    if let Ok(read) = outcome {
        let text = String::from_utf8_lossy(&buffer[..read]);
        assert!(
            read == 0 || text.starts_with("HTTP/1.1 408"),
            "unexpected answer: {text}"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "dropped after {:?}",
        started.elapsed()
    );
    // Everyone else is still served.
    let mut fine = TcpStream::connect(app.address).await.unwrap();
    assert!(request(&mut fine).await.starts_with("HTTP/1.1 200"));
}

async fn connections_over_the_cap_wait_until_one_closes(mut app: TestApp) {
    app.reconfigure(confidant::Settings {
        max_connections: 1,
        ..confidant::Settings::default()
    })
    .await;
    // The only slot: a kept-alive connection.
    let mut first = TcpStream::connect(app.address).await.unwrap();
    assert!(request(&mut first).await.starts_with("HTTP/1.1 200"));
    // A second connection is accepted by the kernel but not served while the first lives.
    let mut second = TcpStream::connect(app.address).await.unwrap();
    let waiting = tokio::time::timeout(Duration::from_millis(500), request(&mut second)).await;
    assert!(waiting.is_err(), "a connection over the cap was served");
    drop(first);
    let mut buffer = [0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(5), second.read(&mut buffer))
        .await
        .expect("the waiting connection was never served")
        .unwrap();
    assert!(String::from_utf8_lossy(&buffer[..read]).starts_with("HTTP/1.1 200"));
}
