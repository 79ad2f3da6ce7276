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
