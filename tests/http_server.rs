//! The workers' HTTP server under abuse: half-sent requests are closed, too many connections are
//! refused with a reason, and every error response says what was wrong.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use support::{Worker, wait_for};

/// Sends `request` as raw bytes on a connection of its own and reads the whole answer (the
/// server closes after an error, or as asked); returns the status, if there was a status line,
/// and the body.
fn exchange(addr: SocketAddr, request: &[u8], timeout: Duration) -> (Option<u16>, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(timeout)).unwrap();
    stream.write_all(request).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer.split(' ').nth(1).and_then(|s| s.parse().ok());
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// [`exchange`] with `worker`, which must answer with a status line.
fn raw(worker: &Worker, request: &[u8]) -> (u16, String) {
    let (status, body) = exchange(worker.addr, request, Duration::from_secs(60));
    (
        status.unwrap_or_else(|| panic!("no status line; body {body:?}")),
        body,
    )
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

/// Sends a GET for `path` on its own connection and returns the status (0 without an answer)
/// and body.
fn get_raw(addr: SocketAddr, path: &str) -> (u16, String) {
    let request = format!("GET {path} HTTP/1.1\r\nhost: lab\r\nconnection: close\r\n\r\n");
    let (status, body) = exchange(addr, request.as_bytes(), Duration::from_secs(120));
    (status.unwrap_or(0), body)
}

#[test]
fn long_profiles_answer_when_the_worker_stops() {
    let worker = Worker::start("bad", &[]);
    let addr = worker.addr;
    let paths = [
        "/debug/pprof/flamegraph?seconds=60",
        "/debug/pprof/goroutine?seconds=60",
        "/debug/pprof/mutex?seconds=60",
        "/debug/pprof/heap?seconds=60",
    ];
    let before = live_http(&worker);
    let requests: Vec<_> = paths
        .iter()
        .map(|&path| std::thread::spawn(move || (path, get_raw(addr, path))))
        .collect();
    // Every request is being served (its connection task is live) before the worker stops.
    wait_for("the profile requests", Duration::from_secs(60), || {
        (live_http(&worker) >= before + paths.len() as f64).then_some(())
    });
    let stopped = worker.terminate_within(Duration::from_secs(120));
    assert!(!stopped.killed, "the worker did not exit");
    for request in requests {
        let (path, (status, body)) = request.join().unwrap();
        // What was sampled so far, or an error that says why (503 if it had not started, 422
        // if the flamegraph had no sample yet): never a connection closed unanswered.
        assert!(
            status == 200 && !body.is_empty()
                || status == 503 && body.contains("the worker is stopping")
                || status == 422 && body.contains("no CPU samples"),
            "{path}: {status} {body:.200}"
        );
    }
}

#[test]
fn memory_profiles_are_made_one_at_a_time() {
    let worker = Worker::start("optimized", &[]);
    let addr = worker.addr;
    let first = std::thread::spawn(move || get_raw(addr, "/debug/pprof/allocs?seconds=30"));
    // Once the delta holds the turn, another heap request waits about 2 s, then gets 409.
    let (status, body) = wait_for("a 409", Duration::from_secs(60), || {
        let (status, body) = get_raw(addr, "/debug/pprof/heap");
        (status == 409).then_some((status, body))
    });
    assert_eq!(status, 409);
    assert!(
        body.contains("another heap or allocs profile is being made"),
        "{body}"
    );
    let (status, _) = first.join().unwrap();
    assert_eq!(status, 200);
    assert_eq!(worker.get("/debug/pprof/heap").status, 200);
}

#[test]
fn head_on_profiles_answers_headers_without_profiling() {
    let worker = Worker::start("optimized", &[]);
    for path in [
        "/debug/pprof/profile?seconds=60",
        "/debug/pprof/flamegraph?seconds=60",
        "/debug/pprof/heap?seconds=60",
        "/debug/pprof/heap",
    ] {
        let request = format!("HEAD {path} HTTP/1.1\r\nhost: lab\r\nconnection: close\r\n\r\n");
        let (status, body) = raw(&worker, request.as_bytes());
        assert_eq!(status, 200, "{path}");
        assert!(body.is_empty(), "{path}: {body}");
    }
    // Neither profiler ran: a CPU profile or a heap dump leaves its observer's memory behind.
    let metrics = worker.metrics();
    for observer in ["cpu_profile", "heap_profile"] {
        let series = format!("worker_observer_memory_bytes{{observer=\"{observer}\"");
        let line = metrics
            .lines()
            .find(|l| l.starts_with(&series))
            .unwrap_or_else(|| panic!("no {series} in {metrics}"));
        assert!(line.ends_with(" 0"), "a HEAD made a profile: {line}");
    }
}

#[test]
fn the_index_lists_the_mutex_profile() {
    let worker = Worker::start("bad", &[]);
    let index = worker.get("/debug/pprof/").text();
    assert!(index.contains(r#"<a href="mutex">mutex</a>"#), "{index}");
}

#[test]
fn too_many_headers_are_named_as_such() {
    let worker = Worker::start("optimized", &[]);
    let headers: String = (0..101).map(|i| format!("x-h{i}: 1\r\n")).collect();
    let request = format!("GET /healthz HTTP/1.1\r\nhost: lab\r\n{headers}\r\n");
    let (status, body) = raw(&worker, request.as_bytes());
    assert_eq!(status, 431);
    assert!(body.contains("more than 100 header lines"), "{body}");
    assert!(body.contains("64 KiB"), "{body}");
}
