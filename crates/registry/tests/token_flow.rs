//! The bearer-token handshake against a small token-issuing server on loopback: distribution
//! 2.8 only offers htpasswd (Basic) itself, and its token auth needs a separate issuer, so the
//! protocol side is exercised here with a server that checks every request it gets.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[derive(Default)]
struct Counters {
    token_requests: AtomicUsize,
    unauthorized: AtomicUsize,
    served: AtomicUsize,
}

const MANIFEST: &[u8] = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}"#;

async fn serve(listener: TcpListener, counters: Arc<Counters>, expires_in: u64) {
    let port = listener.local_addr().unwrap().port();
    let mut issued = 0usize;
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            return;
        };
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        // One request per connection is enough for the client (we answer Connection: close).
        loop {
            let n = sock.read(&mut chunk).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
        let text = String::from_utf8_lossy(&buf).to_string();
        let mut lines = text.lines();
        let request_line = lines.next().unwrap_or_default().to_owned();
        let headers: HashMap<String, String> = lines
            .take_while(|l| !l.is_empty())
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let target = request_line
            .split(' ')
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        let (status, extra, body): (&str, String, Vec<u8>) = if target.starts_with("/token") {
            counters.token_requests.fetch_add(1, Ordering::SeqCst);
            let basic_ok =
                headers.get("authorization").map(String::as_str) == Some("Basic dXNlcjpwYXNz"); // user:pass
            let scope_ok = target.contains("scope=repository%3Alib%2Fapp%3Apull")
                && target.contains("service=test-registry");
            if basic_ok && scope_ok {
                issued += 1;
                (
                    "200 OK",
                    String::new(),
                    format!(r#"{{"token":"tok-{issued}","expires_in":{expires_in}}}"#).into_bytes(),
                )
            } else {
                ("401 Unauthorized", String::new(), b"{}".to_vec())
            }
        } else if target.starts_with("/v2/lib/app/manifests/") {
            let auth = headers.get("authorization").cloned().unwrap_or_default();
            if auth.starts_with("Bearer tok-") {
                counters.served.fetch_add(1, Ordering::SeqCst);
                (
                    "200 OK",
                    "Content-Type: application/vnd.oci.image.manifest.v1+json\r\n".to_owned(),
                    MANIFEST.to_vec(),
                )
            } else {
                counters.unauthorized.fetch_add(1, Ordering::SeqCst);
                (
                    "401 Unauthorized",
                    format!("WWW-Authenticate: Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"test-registry\",scope=\"repository:lib/app:pull\"\r\n"),
                    br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#.to_vec(),
                )
            }
        } else {
            ("404 Not Found", String::new(), Vec::new())
        };
        let head = format!(
            "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = sock.write_all(head.as_bytes()).await;
        let _ = sock.write_all(&body).await;
        let _ = sock.shutdown().await;
    }
}

fn client(user: Option<(&str, &str)>) -> registry::Client {
    registry::Client::new(registry::ClientConfig {
        user: user.map(|(u, p)| registry::credentials::Credential::Basic {
            username: u.into(),
            password: p.into(),
        }),
        retry: registry::retry::RetryPolicy::none(),
        ..Default::default()
    })
}

#[tokio::test]
async fn token_is_fetched_with_credentials_and_cached_per_scope() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let counters = Arc::new(Counters::default());
    tokio::spawn(serve(listener, counters.clone(), 300));

    let c = client(Some(("user", "pass")));
    let repo = c.repository(&addr, "lib/app").unwrap();
    for _ in 0..3 {
        let m = repo.get_manifest("latest").await.unwrap();
        assert_eq!(&m.bytes[..], MANIFEST);
    }
    assert_eq!(
        counters.token_requests.load(Ordering::SeqCst),
        1,
        "token cached"
    );
    assert_eq!(
        counters.unauthorized.load(Ordering::SeqCst),
        1,
        "one challenge only"
    );
    assert_eq!(counters.served.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn expired_tokens_are_fetched_again() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let counters = Arc::new(Counters::default());
    // A 1 s token is refreshed after 0.9 s.
    tokio::spawn(serve(listener, counters.clone(), 1));
    let c = client(Some(("user", "pass")));
    let repo = c.repository(&addr, "lib/app").unwrap();
    repo.get_manifest("latest").await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    repo.get_manifest("latest").await.unwrap();
    assert_eq!(counters.token_requests.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn token_server_refusal_names_the_registry_and_credential_source() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let counters = Arc::new(Counters::default());
    tokio::spawn(serve(listener, counters.clone(), 300));
    let c = client(Some(("user", "wrong")));
    let err = c
        .repository(&addr, "lib/app")
        .unwrap()
        .get_manifest("latest")
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, registry::Error::Unauthorized { .. }), "{msg}");
    assert!(
        msg.contains(&addr) && msg.contains("lib/app") && msg.contains("--user flag"),
        "{msg}"
    );
}
