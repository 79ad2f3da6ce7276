//! TLS termination on the proxy listener, with ALPN h2 and http/1.1;
//! HTTPS backends verified (and health-probed) with the upstream's TLS
//! settings.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use serde_json::json;
use tokio_rustls::TlsConnector;

use crate::common::{Backend, TestGateway, eventually};

/// A self-signed certificate for `localhost`, written as PEM files.
fn certificate(
    dir: &std::path::Path,
) -> (
    std::path::PathBuf,
    std::path::PathBuf,
    rustls::pki_types::CertificateDer<'static>,
) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    (cert_path, key_path, cert.cert.der().clone())
}

/// A client that trusts `root` and offers what `provider` has.
fn client_config(
    root: rustls::pki_types::CertificateDer<'static>,
    provider: rustls::crypto::CryptoProvider,
) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root).unwrap();
    rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

fn connector(root: rustls::pki_types::CertificateDer<'static>, alpn: &[u8]) -> TlsConnector {
    let mut config = client_config(root, rustls::crypto::ring::default_provider());
    config.alpn_protocols = vec![alpn.to_vec()];
    TlsConnector::from(Arc::new(config))
}

#[tokio::test]
async fn tls_is_terminated_with_alpn_h2_and_http1() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, der) = certificate(dir.path());
    let tls = data_plane::server::tls_config(&cert, &key).unwrap();
    let gw = TestGateway::start_with(|s| s.server.tls = Some(tls)).await;
    let a = Backend::named("a").start().await;
    gw.create_route(json!({"name": "r", "path": "/", "backends": [{"url": a.url}]}))
        .await;
    let addr = gw.gateway().proxy_addr;

    for alpn in [&b"http/1.1"[..], &b"h2"[..]] {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let stream = connector(der.clone(), alpn)
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        assert_eq!(stream.get_ref().1.alpn_protocol(), Some(alpn));
        let io = TokioIo::new(stream);
        let req = hyper::Request::get(format!("https://localhost:{}/secure", addr.port()))
            .header("host", format!("localhost:{}", addr.port()))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = if alpn == b"h2" {
            let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .unwrap();
            tokio::spawn(conn);
            let mut req = req;
            req.headers_mut().remove("host");
            send.send_request(req).await.unwrap()
        } else {
            let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            send.send_request(req).await.unwrap()
        };
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let echo: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(echo["path"], "/secure");
        assert_eq!(echo["headers"]["x-forwarded-proto"], "https", "{alpn:?}");
    }
}

/// The server picks the cipher suite: AES-128-GCM (SHA-256, hardware
/// hashed) even for a client that lists AES-256-GCM (SHA-384) first, as
/// OpenSSL's do; a client without AES-128 gets its next choice.
#[tokio::test]
async fn the_server_prefers_aes_128_gcm_whatever_the_client_lists_first() {
    use rustls::crypto::ring::cipher_suite as cs;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, der) = certificate(dir.path());
    let tls = data_plane::server::tls_config(&cert, &key).unwrap();
    let gw = TestGateway::start_with(|s| s.server.tls = Some(tls)).await;
    let addr = gw.gateway().proxy_addr;
    for (offered, chosen) in [
        (
            vec![cs::TLS13_AES_256_GCM_SHA384, cs::TLS13_AES_128_GCM_SHA256],
            rustls::CipherSuite::TLS13_AES_128_GCM_SHA256,
        ),
        (
            vec![
                cs::TLS13_AES_256_GCM_SHA384,
                cs::TLS13_CHACHA20_POLY1305_SHA256,
            ],
            rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
        ),
        (
            vec![cs::TLS13_AES_256_GCM_SHA384],
            rustls::CipherSuite::TLS13_AES_256_GCM_SHA384,
        ),
    ] {
        // TLS 1.3 suites only: TLS 1.3.
        let provider = rustls::crypto::CryptoProvider {
            cipher_suites: offered,
            ..rustls::crypto::ring::default_provider()
        };
        let config = client_config(der.clone(), provider);
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let stream = TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        let suite = stream.get_ref().1.negotiated_cipher_suite().unwrap();
        assert_eq!(suite.suite(), chosen);
    }
}

#[tokio::test]
async fn route_policies_hold_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, der) = certificate(dir.path());
    let tls = data_plane::server::tls_config(&cert, &key).unwrap();
    let gw = TestGateway::start_with(|s| s.server.tls = Some(tls)).await;
    let a = Backend::named("a").start().await;
    gw.create_route(json!({
        "name": "gated", "path": "/gated", "backends": [{"url": a.url}],
        "policies": {"auth": {"header": "X-Admin-Token", "tokens": ["letmein"]}}
    }))
    .await;
    gw.create_route(json!({
        "name": "moved", "path": "/moved",
        "policies": {"redirect": {"status": 301, "location": "{scheme}://{host}/new{path}"}}
    }))
    .await;
    let addr = gw.gateway().proxy_addr;
    for alpn in [&b"http/1.1"[..], &b"h2"[..]] {
        for (path, token, want) in [
            ("/gated", None, 401),
            ("/gated", Some("nope"), 401),
            ("/gated", Some("letmein"), 200),
            ("/moved/x", None, 301),
        ] {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let stream = connector(der.clone(), alpn)
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await
                .unwrap();
            let io = TokioIo::new(stream);
            let mut req = hyper::Request::get(format!("https://localhost:{}{path}", addr.port()))
                .body(Empty::<Bytes>::new())
                .unwrap();
            if let Some(t) = token {
                req.headers_mut()
                    .insert("x-admin-token", t.parse().unwrap());
            }
            let resp = if alpn == b"h2" {
                let (mut send, conn) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                        .await
                        .unwrap();
                tokio::spawn(conn);
                send.send_request(req).await.unwrap()
            } else {
                req.headers_mut().insert(
                    "host",
                    format!("localhost:{}", addr.port()).parse().unwrap(),
                );
                let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
                tokio::spawn(conn);
                send.send_request(req).await.unwrap()
            };
            assert_eq!(resp.status(), want, "{alpn:?} {path} {token:?}");
            if want == 301 {
                assert_eq!(resp.headers()["location"], "https://localhost/new/moved/x");
            }
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            if want == 200 {
                let echo: serde_json::Value = serde_json::from_slice(&body).unwrap();
                assert!(echo["headers"].get("x-admin-token").is_none());
            }
        }
    }
    assert_eq!(a.hits(), 2, "only the requests with the token");
}

#[test]
fn bad_certificate_files_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.pem");
    let err = data_plane::server::tls_config(&missing, &missing)
        .unwrap_err()
        .to_string();
    assert!(err.contains("nope.pem"), "{err}");
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let err = data_plane::server::tls_config(&empty, &empty)
        .unwrap_err()
        .to_string();
    assert!(err.contains("empty.pem"), "{err}");
}

/// An HTTPS backend with its own self-signed certificate.
struct TlsBackend {
    url: String,
    /// The certificate's PEM, to use as a CA file.
    ca_pem: String,
    /// The HTTP version of every `/healthz` request it answered.
    probes: Arc<Mutex<Vec<String>>>,
}

/// An HTTPS backend whose certificate names `names` (DNS names or IP
/// addresses), offering `alpn` (`[h2]` alone: HTTP/2 only); it answers
/// with the HTTP version it saw.
async fn tls_backend(names: &[&str], alpn: &[&[u8]]) -> TlsBackend {
    use hyper_util::server::conn::auto;
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let cert = rcgen::generate_simple_self_signed(names).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der()).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.cert.der().clone()], key)
    .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let probes = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&probes);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, seen) = (acceptor.clone(), Arc::clone(&seen));
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let version = format!("{:?}", req.version());
                        if req.uri().path() == "/healthz" {
                            seen.lock().unwrap().push(version.clone());
                        }
                        let body = format!("{{\"version\":\"{version}\"}}");
                        async move {
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                http_body_util::Full::new(Bytes::from(body)),
                            ))
                        }
                    },
                );
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    TlsBackend {
        url,
        ca_pem: cert.cert.pem(),
        probes,
    }
}

/// The h2-and-http/1.1 backend naming `backend.test`: its URL and CA PEM.
async fn https_backend() -> (String, String) {
    let b = tls_backend(&["backend.test"], &[b"h2", b"http/1.1"]).await;
    (b.url, b.ca_pem)
}

#[tokio::test]
async fn https_backends_are_verified_unless_told_otherwise() {
    let gw = TestGateway::start().await;
    let (url, ca_pem) = https_backend().await;
    let ca_file = gw.dir.path().join("backend-ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let ca = ca_file.to_str().unwrap();
    let cases = [
        // Unknown issuer: refused.
        ("plain", json!({}), false, 502),
        // Trusted CA, but the certificate does not name 127.0.0.1.
        ("ca-only", json!({"tls": {"ca_file": ca}}), false, 502),
        (
            "ca-and-name",
            json!({"tls": {"ca_file": ca, "server_name": "backend.test"}}),
            false,
            200,
        ),
        (
            "insecure",
            json!({"tls": {"insecure_skip_verify": true}}),
            false,
            200,
        ),
        (
            "h2",
            json!({"tls": {"ca_file": ca, "server_name": "backend.test"}, "http2": true}),
            true,
            200,
        ),
    ];
    for (name, extra, h2, want) in cases {
        let mut body = json!({"name": name, "retries": 0, "backends": [{"url": url}]});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        gw.create_upstream(body).await;
        gw.create_route(json!({"name": name, "path": format!("/{name}"), "upstream": name}))
            .await;
        let (status, text) = gw.get(&format!("/{name}")).await;
        assert_eq!(status.as_u16(), want, "{name}: {text}");
        if want == 200 {
            let expected = if h2 { "HTTP/2.0" } else { "HTTP/1.1" };
            assert!(text.contains(expected), "{name}: {text}");
        }
    }
    // A CA file that cannot be read is refused when configured, not at request time.
    let (status, problem) = gw
        .admin_json(
            reqwest::Method::POST,
            "/admin/upstreams",
            Some(json!({"name": "bad-ca", "tls": {"ca_file": "/nonexistent/ca.pem"}, "backends": [{"url": url}]})),
        )
        .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"][0]["pointer"], "/tls/ca_file");
}

#[tokio::test]
async fn health_probes_use_the_upstreams_tls_settings_and_protocol() {
    let gw = TestGateway::start().await;
    let by_ip = tls_backend(&["127.0.0.1"], &[b"http/1.1"]).await;
    let by_name = tls_backend(&["backend.test"], &[b"h2", b"http/1.1"]).await;
    let h2_only = tls_backend(&["backend.test"], &[b"h2"]).await;
    let ca_file = |name: &str, b: &TlsBackend| {
        let path = gw.dir.path().join(format!("{name}-ca.pem"));
        std::fs::write(&path, &b.ca_pem).unwrap();
        path.to_str().unwrap().to_string()
    };
    let cases = [
        // A private CA whose certificate names the backend's address.
        (
            "private-ca",
            &by_ip,
            json!({"tls": {"ca_file": ca_file("ip", &by_ip)}}),
            "HTTP/1.1",
        ),
        (
            "server-name",
            &by_name,
            json!({"tls": {"ca_file": ca_file("name", &by_name), "server_name": "backend.test"}}),
            "HTTP/1.1",
        ),
        (
            "h2-only",
            &h2_only,
            json!({"tls": {"ca_file": ca_file("h2", &h2_only), "server_name": "backend.test"},
                   "http2": true}),
            "HTTP/2.0",
        ),
    ];
    for (name, backend, extra, version) in cases {
        let mut body = json!({"name": name, "retries": 0, "backends": [{"url": backend.url}],
            "health_check": {"interval_ms": 1000, "timeout_ms": 1000}});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        gw.create_upstream(body).await;
        gw.create_route(json!({"name": name, "path": format!("/{name}"), "upstream": name}))
            .await;
        // The first probe decides: healthy, or unhealthy for good.
        let h = eventually(Duration::from_secs(10), || async {
            let h = gw.backend_health(name, &backend.url).await;
            (h["health"] != "unknown").then_some(h)
        })
        .await
        .unwrap_or_else(|| panic!("{name}: never probed"));
        assert_eq!(h["state"], "healthy", "{name}: {h}");
        assert_eq!(h["last_probe_result"], "ok 200", "{name}: {h}");
        let probes = backend.probes.lock().unwrap().clone();
        assert!(
            !probes.is_empty() && probes.iter().all(|v| v == version),
            "{name}: probes over {probes:?}, not {version}"
        );
        // And traffic goes the same way.
        let (status, text) = gw.get(&format!("/{name}")).await;
        assert_eq!(status, 200, "{name}: {text}");
        assert!(text.contains(version), "{name}: {text}");
    }
}

#[tokio::test]
async fn a_change_of_tls_settings_restarts_the_probes_with_them() {
    let gw = TestGateway::start().await;
    let backend = tls_backend(&["backend.test"], &[b"http/1.1"]).await;
    let ca = gw.dir.path().join("ca.pem");
    std::fs::write(&ca, &backend.ca_pem).unwrap();
    let ca = ca.to_str().unwrap();
    // The certificate does not name 127.0.0.1: unhealthy.
    gw.create_upstream(json!({"name": "u", "backends": [{"url": backend.url}],
        "tls": {"ca_file": ca},
        "health_check": {"interval_ms": 60000, "timeout_ms": 1000, "healthy_threshold": 1}}))
        .await;
    let state = |want: &'static str| {
        let gw = &gw;
        let url = backend.url.clone();
        async move {
            eventually(Duration::from_secs(10), || async {
                let h = gw.backend_health("u", &url).await;
                (h["state"] == want).then_some(h)
            })
            .await
        }
    };
    assert!(state("unhealthy").await.is_some());
    // Same check, new TLS settings: probed again at once, on the new client
    // (the interval alone would wait a minute).
    let (status, body) = gw
        .admin_json(
            reqwest::Method::PATCH,
            "/admin/upstreams/u",
            Some(json!({"tls": {"ca_file": ca, "server_name": "backend.test"}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let h = state("healthy")
        .await
        .expect("probed with the new settings");
    assert_eq!(h["last_probe_result"], "ok 200");
}
