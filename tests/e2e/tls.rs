//! TLS termination on the proxy listener, with ALPN h2 and http/1.1.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use serde_json::json;
use tokio_rustls::TlsConnector;

use crate::common::{Backend, TestGateway};

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

fn connector(root: rustls::pki_types::CertificateDer<'static>, alpn: &[u8]) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
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

/// An HTTPS backend (h2 and http/1.1 by ALPN) whose certificate names
/// `backend.test`; it answers with the HTTP version it saw. Returns its
/// URL and the PEM of its certificate (to use as a CA file).
async fn https_backend() -> (String, String) {
    use hyper_util::server::conn::auto;
    let cert = rcgen::generate_simple_self_signed(vec!["backend.test".to_string()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der()).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.cert.der().clone()], key)
    .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(
                    |req: hyper::Request<hyper::body::Incoming>| async move {
                        let body = format!("{{\"version\":\"{:?}\"}}", req.version());
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            http_body_util::Full::new(Bytes::from(body)),
                        ))
                    },
                );
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (url, cert.cert.pem())
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
