//! The little HTTP/1.1 the test servers of this crate speak: one request per connection,
//! answered with `Connection: close`, served by a thread per connection until stopped.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A request's line and headers (names lower-cased).
pub(crate) struct Request {
    pub method: String,
    pub target: String,
    pub headers: HashMap<String, String>,
}

/// Binds 127.0.0.1 and answers each connection with `handle` on its own thread until `stop`
/// is set; returns the address.
pub(crate) fn serve(
    stop: Arc<AtomicBool>,
    handle: impl Fn(&Request, &mut TcpStream) + Send + Sync + 'static,
) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a test server");
    listener
        .set_nonblocking(true)
        .expect("non-blocking listener");
    let addr = listener.local_addr().expect("server address").to_string();
    let handle = Arc::new(handle);
    std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            match listener.accept() {
                Ok((mut stream, _)) => {
                    let handle = handle.clone();
                    std::thread::spawn(move || {
                        if let Some(request) = read_request(&stream) {
                            handle(&request, &mut stream);
                        }
                    });
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });
    addr
}

fn read_request(stream: &TcpStream) -> Option<Request> {
    stream.set_nonblocking(false).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split(' ');
    let (method, target) = (parts.next()?.to_owned(), parts.next()?.to_owned());
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    Some(Request {
        method,
        target,
        headers,
    })
}

/// Writes a whole answer to `request`: status line, `extra` header lines (each ending in
/// CRLF), the body (only its length for a HEAD request).
pub(crate) fn respond(
    request: &Request,
    stream: &mut TcpStream,
    status: &str,
    extra: &str,
    body: &[u8],
) {
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if request.method != "HEAD" {
        let _ = stream.write_all(body);
    }
}
