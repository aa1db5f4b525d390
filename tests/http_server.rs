//! The workers' HTTP server under abuse: half-sent requests are answered 408 and closed, idle
//! connections make room for new ones, connections beyond requests in flight are refused with
//! a reason, and every error response says what was wrong.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

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
fn half_sent_requests_are_answered_408_and_closed() {
    let worker = Worker::start("optimized", &[]);
    let before = live_http(&worker);
    // A request line and a header, never the blank line that ends the head.
    let mut stuck = worker.connect_sending(50, b"GET /metrics HTTP/1.1\r\nhost: lab\r\n");
    // And a keep-alive connection that completed a request, then went quiet.
    let mut idle = TcpStream::connect(worker.addr).unwrap();
    assert_eq!(request_on(&mut idle, "/healthz").0, 200);
    wait_for("fifty connections served", Duration::from_secs(60), || {
        (live_http(&worker) >= before + 50.0).then_some(())
    });
    // The server gives up on each of them and says why: a 408 with a body.
    for stream in &mut stuck {
        stream
            .set_read_timeout(Some(Duration::from_secs(120)))
            .unwrap();
        let mut answer = Vec::new();
        let read = stream.read_to_end(&mut answer);
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
            "{read:?}: {answer:?}"
        );
        assert!(answer.contains("did not arrive within 10 s"), "{answer:?}");
    }
    // The idle keep-alive connection is closed without a word: a 408 there would read as the
    // answer to the client's next request.
    idle.set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let mut answer = Vec::new();
    let read = idle.read_to_end(&mut answer);
    assert!(
        matches!(read, Ok(0)) && answer.is_empty(),
        "{read:?}: {:?}",
        String::from_utf8_lossy(&answer)
    );
    wait_for(
        "the connections' tasks to end",
        Duration::from_secs(60),
        || (live_http(&worker) <= before + 2.0).then_some(()),
    );
    assert_eq!(worker.get("/healthz").status, 200);
}

/// Sends a keep-alive GET for `path` on `stream` and reads its response (status and body, by
/// its content-length), leaving the connection open.
fn request_on(stream: &mut TcpStream, path: &str) -> (u16, String) {
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nhost: lab\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    read_response(stream)
}

/// Reads one response from `stream` (status and body, by its content-length).
fn read_response(stream: &mut TcpStream) -> (u16, String) {
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut buf).expect("a response");
        assert!(n > 0, "closed before the response head");
        answer.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&answer[..head_end]).into_owned();
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length: ")
                .map(|v| v.trim().parse().unwrap())
        })
        .expect("a content-length");
    while answer.len() < head_end + length {
        let n = stream.read(&mut buf).expect("the body");
        assert!(n > 0, "closed before the body's end");
        answer.extend_from_slice(&buf[..n]);
    }
    let body = String::from_utf8_lossy(&answer[head_end..]).into_owned();
    (status, body)
}

/// Whether `stream` is open with nothing to read, at this instant.
fn open_now(stream: &TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let open = matches!(stream.peek(&mut [0u8; 1]), Err(e) if e.kind() == ErrorKind::WouldBlock);
    stream.set_nonblocking(false).unwrap();
    open
}

/// Whether the server closed `stream`: `Some(true)` closed, `Some(false)` open and silent,
/// `None` answered something.
fn closed(stream: &TcpStream, wait: Duration) -> Option<bool> {
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 256];
    match (&*stream).read(&mut buf) {
        Ok(0) => Some(true),
        Ok(_) => None,
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Some(false),
        Err(_) => Some(true), // reset
    }
}

#[test]
fn idle_connections_make_room_and_only_requests_in_flight_fill_the_server() {
    use profiling_lab::server::{HEADER_READ_TIMEOUT, MAX_CONNECTIONS};
    let worker = Worker::start("optimized", &[]);
    // Every slot held by a keep-alive connection that completed a request and went idle: the
    // way a client pool, or an abusive client, wedged /metrics with 503s for up to 10 s. The
    // first one goes idle before the others send anything, so it is the one idle the longest;
    // the others are sent at once, so that setting up takes well under the idle timeout.
    let mut first = TcpStream::connect(worker.addr).unwrap();
    assert_eq!(request_on(&mut first, "/healthz"), (200, "ok\n".to_owned()));
    let first_idle = Instant::now();
    let mut rest = worker.connect_sending(
        MAX_CONNECTIONS - 1,
        b"GET /healthz HTTP/1.1\r\nhost: lab\r\n\r\n",
    );
    for stream in &mut rest {
        assert_eq!(read_response(stream), (200, "ok\n".to_owned()));
    }

    // A scrape still gets in, in the place of the connection idle the longest.
    let (status, body) = exchange(
        worker.addr,
        b"GET /metrics HTTP/1.1\r\nhost: lab\r\nconnection: close\r\n\r\n",
        Duration::from_secs(5),
    );
    assert_eq!(status, Some(200), "{body:.300}");
    assert!(body.contains("worker_live_tasks"), "{body:.300}");
    assert_eq!(
        closed(&first, Duration::from_secs(5)),
        Some(true),
        "the connection idle the longest was closed to make room"
    );
    let still_open = rest.iter().filter(|s| open_now(s)).count();
    // All of this before the first connection's own idle timeout could have closed anything:
    // the room was made by closing it, not by waiting, and for one newcomer only one closed.
    let checked = first_idle.elapsed();
    assert!(
        checked < HEADER_READ_TIMEOUT,
        "checked {checked:?} after the first connection went idle, not before its \
         {HEADER_READ_TIMEOUT:?} idle timeout: too slow to tell eviction from the timeout"
    );
    assert_eq!(still_open, MAX_CONNECTIONS - 1, "one closed per newcomer");
    let mut idle = rest;
    idle.push(first);

    // Requests in flight are never closed to make room: fill every slot with a 300 s mutex
    // profile, each taking the place of an idle connection, and the next one is refused, with
    // the reason.
    let in_flight: Vec<TcpStream> = (0..MAX_CONNECTIONS)
        .map(|_| {
            let mut stream = TcpStream::connect(worker.addr).unwrap();
            stream
                .write_all(b"GET /debug/pprof/mutex?seconds=300 HTTP/1.1\r\nhost: lab\r\n\r\n")
                .unwrap();
            stream
        })
        .collect();
    let (status, body) = wait_for("a refused connection", Duration::from_secs(60), || {
        let (status, body) = raw(
            &worker,
            b"GET /healthz HTTP/1.1\r\nhost: lab\r\nconnection: close\r\n\r\n",
        );
        (status == 503).then_some((status, body))
    });
    assert_eq!(status, 503);
    assert!(
        body.contains(&format!("limit of {MAX_CONNECTIONS} connections"))
            && body.contains("request in flight"),
        "{body}"
    );
    for stream in &idle {
        assert_eq!(closed(stream, Duration::from_secs(5)), Some(true));
    }
    // Every profile is still being made: none was closed or refused.
    assert!(in_flight.iter().all(open_now));
}

#[test]
fn half_sent_heads_make_room_when_none_is_idle() {
    use profiling_lab::server::{HEADER_READ_TIMEOUT, MAX_CONNECTIONS};
    let worker = Worker::start("optimized", &[]);
    // Every slot held by a request head that began and never ended (slowloris).
    let opened = Instant::now();
    let stuck = worker.connect_sending(MAX_CONNECTIONS, b"GET /metrics HTTP/1.1\r\nhost: lab\r\n");
    // A scrape still gets in (a 503 only while the server has not yet read those heads).
    let body = wait_for("a scrape answered", Duration::from_secs(60), || {
        let (status, body) = exchange(
            worker.addr,
            b"GET /metrics HTTP/1.1\r\nhost: lab\r\nconnection: close\r\n\r\n",
            Duration::from_secs(5),
        );
        (status == Some(200)).then_some(body)
    });
    assert!(body.contains("worker_live_tasks"), "{body:.300}");
    // Before the first head's own timeout could have closed it: whatever closed it was the
    // scrape's arrival.
    let in_time = opened.elapsed() < HEADER_READ_TIMEOUT;
    // A half-sent head made room (the one that had waited the longest among those the server
    // had read: a connection not polled yet is never picked), and was told why; its 408 was
    // written before its slot was freed for the scrape.
    let answers: Vec<String> = stuck
        .iter()
        .filter(|stream| {
            stream.set_nonblocking(true).unwrap();
            let answered = stream.peek(&mut [0u8; 1]).is_ok();
            stream.set_nonblocking(false).unwrap();
            answered
        })
        .map(|mut stream| {
            stream
                .set_read_timeout(Some(Duration::from_secs(60)))
                .unwrap();
            let mut answer = Vec::new();
            let _ = stream.read_to_end(&mut answer);
            String::from_utf8_lossy(&answer).into_owned()
        })
        .collect();
    assert!(!answers.is_empty(), "no half-sent connection was closed");
    for answer in &answers {
        assert!(
            answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
            "{answer:?}"
        );
        // Too slow a machine cannot tell eviction from the header timeout; both say 408.
        if in_time {
            assert!(
                answer.contains(&format!("limit of {MAX_CONNECTIONS} connections"))
                    && answer.contains("still incomplete"),
                "{answer:?}"
            );
        }
    }
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
        // What was sampled so far, or an error that says why (503 if it had not started, or was
        // still being made when the worker's shutdown grace ran out; 422 if the flamegraph had
        // no sample yet): never a connection closed unanswered.
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
