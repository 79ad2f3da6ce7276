//! `switchyard healthcheck URL`: one `GET` over HTTP/1.1, success if the
//! answer is a 2xx. A container image's `HEALTHCHECK` needs a client that
//! is in the image; the gateway's own binary is, and `curl` need not be.
//! Plain `http://` only (the metrics listener's `/healthz`).

use std::time::Duration;

use http::{Request, Uri};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;

/// Why a check failed, in one line.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(
        "{0:?} is not an http:// URL with a host and port (e.g. http://127.0.0.1:9090/healthz)"
    )]
    Url(String),
    #[error("cannot connect to {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("{0} did not answer within {1:?}")]
    TimedOut(String, Duration),
    #[error("{0}: {1}")]
    Http(String, hyper::Error),
    #[error("{0} answered {1}")]
    Status(String, http::StatusCode),
}

/// `GET url` within `timeout`: the status if it is a 2xx.
pub async fn check(url: &str, timeout: Duration) -> Result<http::StatusCode, CheckError> {
    let uri: Uri = url.parse().map_err(|_| CheckError::Url(url.to_string()))?;
    let authority = match (uri.scheme_str(), uri.authority()) {
        (Some("http"), Some(a)) if !a.host().is_empty() => a.clone(),
        _ => return Err(CheckError::Url(url.to_string())),
    };
    let target = authority.to_string();
    let exchange = async {
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let stream = tokio::net::TcpStream::connect((host, authority.port_u16().unwrap_or(80)))
            .await
            .map_err(|e| CheckError::Connect(target.clone(), e))?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| CheckError::Http(target.clone(), e))?;
        tokio::spawn(conn);
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let req = Request::get(path)
            .header(http::header::HOST, authority.as_str())
            .header(http::header::USER_AGENT, "switchyard-healthcheck")
            .body(Empty::<bytes::Bytes>::new())
            .expect("a GET with a valid path builds");
        let resp = send
            .send_request(req)
            .await
            .map_err(|e| CheckError::Http(target.clone(), e))?;
        Ok(resp.status())
    };
    let status = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| CheckError::TimedOut(url.to_string(), timeout))??;
    if status.is_success() {
        Ok(status)
    } else {
        Err(CheckError::Status(url.to_string(), status))
    }
}
