//! The workers' HTTP server under abuse: half-sent requests are closed, too many connections are
//! refused with a reason, and every error response says what was wrong.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use support::{Worker, wait_for};

/// Sends `request` as raw bytes and reads the whole answer (the server closes after an error).
fn raw(worker: &Worker, request: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(worker.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {answer:?}"));
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn live_http(worker: &Worker) -> f64 {
    worker
        .metrics()
        .lines()
        .find(|l| l.starts_with("worker_live_tasks{") && l.contains("kind=\"http\""))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .expect("worker_live_tasks{kind=\"http\"}")
}

#[test]
fn error_responses_name_the_problem() {
    let worker = Worker::start("optimized", &[]);
    let (status, body) = raw(
        &worker,
        b"POST /metrics HTTP/1.1\r\nhost: lab\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
    );
    assert_eq!(status, 405);
    assert!(
        body.contains("method POST is not allowed for /metrics"),
        "{body}"
    );

    let (status, body) = raw(&worker, b"THIS IS NOT HTTP\r\n\r\n");
    assert_eq!(status, 400);
    assert!(body.contains("could not be parsed"), "{body}");

    let (status, body) = raw(&worker, b"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n");
    assert_eq!(status, 400);
    assert!(body.contains("could not be parsed"), "{body}");

    let long = format!("GET /{} HTTP/1.1\r\nhost: lab\r\n\r\n", "a".repeat(70_000));
    let (status, body) = raw(&worker, long.as_bytes());
    assert_eq!(status, 414);
    assert!(body.contains("URI too long"), "{body}");

    let (status, body) = raw(
        &worker,
        b"GET /nowhere HTTP/1.1\r\nhost: lab\r\nconnection: close\r\n\r\n",
    );
    assert_eq!(status, 404);
    assert!(body.contains("no endpoint at /nowhere"), "{body}");
    // Still serving.
    assert_eq!(worker.get("/healthz").status, 200);
}

#[test]
fn half_sent_requests_are_closed() {
    let worker = Worker::start("optimized", &[]);
    let before = live_http(&worker);
    let mut stuck: Vec<TcpStream> = (0..50)
        .map(|_| {
            let mut stream = TcpStream::connect(worker.addr).unwrap();
            // A request line and a header, never the blank line that ends the head.
            stream
                .write_all(b"GET /metrics HTTP/1.1\r\nhost: lab\r\n")
                .unwrap();
            stream
        })
        .collect();
    wait_for("fifty connections served", Duration::from_secs(60), || {
        (live_http(&worker) >= before + 50.0).then_some(())
    });
    // The server gives up on each of them: the client sees its connection closed.
    for stream in &mut stuck {
        stream
            .set_read_timeout(Some(Duration::from_secs(120)))
            .unwrap();
        let mut buf = [0u8; 64];
        match stream.read(&mut buf) {
            Ok(0) => {}
            Ok(n) => panic!("unexpected answer {:?}", String::from_utf8_lossy(&buf[..n])),
            Err(e) => assert!(
                !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ),
                "a half-sent request was never closed"
            ),
        }
    }
    wait_for(
        "the connections' tasks to end",
        Duration::from_secs(60),
        || (live_http(&worker) <= before + 2.0).then_some(()),
    );
    assert_eq!(worker.get("/healthz").status, 200);
}

#[test]
fn connections_beyond_the_limit_are_refused_with_a_reason() {
    let worker = Worker::start("optimized", &[]);
    // Fill every slot with idle connections (each is closed by the server after 10 s).
    let idle: Vec<TcpStream> = (0..profiling_lab::server::MAX_CONNECTIONS)
        .map(|_| TcpStream::connect(worker.addr).unwrap())
        .collect();
    let (status, body) = wait_for("a refused connection", Duration::from_secs(60), || {
        let (status, body) = raw(
            &worker,
            b"GET /healthz HTTP/1.1\r\nhost: lab\r\nconnection: close\r\n\r\n",
        );
        (status == 503).then_some((status, body))
    });
    assert_eq!(status, 503);
    assert!(body.contains("limit of 256 connections"), "{body}");
    drop(idle);
    wait_for("slots freed", Duration::from_secs(60), || {
        (profiling_lab::client::get(&worker.url("/healthz"), Duration::from_secs(10))
            .is_ok_and(|r| r.status == 200))
        .then_some(())
    });
}
