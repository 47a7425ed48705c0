//! A token issuer for Debian's docker-registry in token-auth mode (distribution's
//! `auth: token:`): the registry answers with a Bearer challenge naming this issuer, clients
//! get a JWT here with a user name and password, and the registry verifies its ES256
//! signature against the issuer's certificate. Tokens can be made to expire within seconds,
//! for tests of token renewal against the real registry.

use base64::Engine as _;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// distribution accepts a token this long after its `exp` (its `Leeway`): the issuer writes
/// `exp` that much earlier, so the registry really refuses a token once its lifetime is over.
const REGISTRY_LEEWAY_SECS: u64 = 60;
const SERVICE: &str = "soci-test-registry";
const ISSUER: &str = "soci-test-issuer";

/// How tokens are issued.
#[derive(Debug, Clone)]
pub struct TokenPolicy {
    /// User name the issuer accepts (HTTP Basic on the token request).
    pub user: String,
    /// Its password.
    pub password: String,
    /// How long the registry accepts a token.
    pub lifetime: Duration,
    /// The `expires_in` the issuer tells clients (`None`: the true lifetime). A larger value
    /// makes clients hold tokens the registry already refuses, as after a revocation.
    pub advertised_expires_in: Option<u64>,
}

/// A running issuer on 127.0.0.1; stops when dropped.
pub struct TokenIssuer {
    addr: String,
    cert_pem: PathBuf,
    issued: Arc<AtomicUsize>,
    refused: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    signer: Arc<Signer>,
    policy: TokenPolicy,
    _dir: tempfile::TempDir,
}

struct Signer {
    key: ring::signature::EcdsaKeyPair,
    rng: ring::rand::SystemRandom,
    cert_der: Vec<u8>,
}

impl TokenIssuer {
    /// Makes a P-256 key and self-signed certificate with `openssl` and starts serving.
    pub fn start(policy: TokenPolicy) -> TokenIssuer {
        crate::require_tool("openssl");
        let dir = tempfile::Builder::new()
            .prefix("soci-token-issuer-")
            .tempdir()
            .expect("create the token issuer's temp dir");
        let p = |name: &str| dir.path().join(name);
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .output()
                .expect("run openssl");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
            "-days",
            "2",
            "-subj",
            "/CN=soci-test-token-issuer",
        ]);
        openssl(&[
            "pkcs8", "-topk8", "-nocrypt", "-in", "key.pem", "-outform", "DER", "-out", "key.der",
        ]);
        openssl(&[
            "x509", "-in", "cert.pem", "-outform", "DER", "-out", "cert.der",
        ]);
        let rng = ring::rand::SystemRandom::new();
        let key = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &std::fs::read(p("key.der")).expect("read key.der"),
            &rng,
        )
        .expect("load the issuer key");
        let signer = Arc::new(Signer {
            key,
            rng,
            cert_der: std::fs::read(p("cert.der")).expect("read cert.der"),
        });
        let issued: Arc<AtomicUsize> = Arc::default();
        let refused: Arc<Mutex<Vec<String>>> = Arc::default();
        let stop: Arc<AtomicBool> = Arc::default();
        let addr = {
            let (issued, refused) = (issued.clone(), refused.clone());
            let (signer, policy) = (signer.clone(), policy.clone());
            crate::http1::serve(stop.clone(), move |request, stream| {
                answer(request, stream, &signer, &policy, &issued, &refused)
            })
        };
        TokenIssuer {
            addr,
            cert_pem: p("cert.pem"),
            issued,
            refused,
            stop,
            signer,
            policy,
            _dir: dir,
        }
    }

    /// The registry config section that makes docker-registry use this issuer (for
    /// [`crate::Registry::start_with_config`]).
    pub fn registry_auth_yaml(&self) -> String {
        format!(
            "auth:\n  token:\n    realm: http://{}/token\n    service: {SERVICE}\n    \
             issuer: {ISSUER}\n    rootcertbundle: {}\n",
            self.addr,
            self.cert_pem.display()
        )
    }

    /// A token for `scopes` (`repository:<name>:pull`), issued without a request: what a
    /// kubelet hands over as a CRI `registry_token`. Not counted in [`TokenIssuer::issued`].
    pub fn token_for(&self, scopes: &[&str]) -> String {
        let scopes: Vec<String> = scopes.iter().map(|s| (*s).to_owned()).collect();
        sign(&self.signer, &self.policy, &scopes, 0)
    }

    /// Tokens issued so far.
    pub fn issued(&self) -> usize {
        self.issued.load(Ordering::SeqCst)
    }

    /// The `User-Agent` of each token request refused so far (no or wrong credentials).
    pub fn refused(&self) -> Vec<String> {
        self.refused.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl Drop for TokenIssuer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Answers one token request.
fn answer(
    request: &crate::http1::Request,
    stream: &mut TcpStream,
    signer: &Signer,
    policy: &TokenPolicy,
    issued: &AtomicUsize,
    refused: &Mutex<Vec<String>>,
) {
    let header = |name: &str| request.headers.get(name).map_or("", String::as_str);
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", policy.user, policy.password))
    );
    let (status, body) = if !request.target.starts_with("/token") {
        ("404 Not Found", "{}".to_owned())
    } else if header("authorization") != expected {
        if let Ok(mut r) = refused.lock() {
            r.push(header("user-agent").to_owned());
        }
        (
            "401 Unauthorized",
            r#"{"details":"wrong user name or password"}"#.to_owned(),
        )
    } else {
        let n = issued.fetch_add(1, Ordering::SeqCst) + 1;
        let token = sign(signer, policy, &scopes_of(&request.target), n);
        let expires_in = policy
            .advertised_expires_in
            .unwrap_or(policy.lifetime.as_secs().max(1));
        (
            "200 OK",
            format!(r#"{{"token":"{token}","expires_in":{expires_in}}}"#),
        )
    };
    crate::http1::respond(
        request,
        stream,
        status,
        "Content-Type: application/json\r\n",
        body.as_bytes(),
    );
}

/// The `scope` parameters of a token request's target, percent-decoded.
fn scopes_of(target: &str) -> Vec<String> {
    let query = target.split_once('?').map_or("", |(_, q)| q);
    url::form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| {
            v.split(' ')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A JWT granting every scope asked for, signed ES256 with the certificate in `x5c`.
fn sign(signer: &Signer, policy: &TokenPolicy, scopes: &[String], n: usize) -> String {
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let header = serde_json::json!({
        "typ": "JWT",
        "alg": "ES256",
        "x5c": [base64::engine::general_purpose::STANDARD.encode(&signer.cert_der)],
    });
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let access: Vec<serde_json::Value> = scopes
        .iter()
        .filter_map(|s| {
            let mut parts = s.splitn(3, ':');
            let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
            Some(serde_json::json!({
                "type": kind,
                "name": name,
                "actions": actions.split(',').collect::<Vec<_>>(),
            }))
        })
        .collect();
    let claims = serde_json::json!({
        "iss": ISSUER,
        "sub": policy.user,
        "aud": SERVICE,
        "exp": (now + policy.lifetime.as_secs()).saturating_sub(REGISTRY_LEEWAY_SECS),
        "nbf": now.saturating_sub(1),
        "iat": now,
        "jti": format!("soci-test-{n}"),
        "access": access,
    });
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let signature = signer
        .key
        .sign(&signer.rng, input.as_bytes())
        .expect("sign the token");
    format!("{input}.{}", b64(signature.as_ref()))
}
