//! `GET /admin/explain`: which route would take a request, and why (the
//! live snapshot's own router; see `data_plane::status::explain`).

use axum::Json;
use axum::extract::{Query, State};
use data_plane::status::explain::{self, Explanation};
use http::Method;

use super::AdminState;
use super::error::ApiError;

/// The request the parameters describe: `method` (default GET), and `url`
/// (absolute: its host, path and query) or `path` (with `host`); `header`
/// (`Name: value`, repeatable) and `client_ip` for a hash key.
fn request(params: Vec<(String, String)>) -> Result<explain::Request, ApiError> {
    let mut req = explain::Request::default();
    let (mut url, mut path, mut host) = (None, None, None);
    for (key, value) in params {
        match key.as_str() {
            "method" => {
                req.method = Method::from_bytes(value.as_bytes()).map_err(|_| {
                    ApiError::bad_parameter("method", format!("{value:?} is not an HTTP method"))
                })?;
            }
            "url" => url = Some(value),
            "path" => path = Some(value),
            "host" => host = Some(value),
            "header" => {
                let (name, v) = value.split_once(':').ok_or_else(|| {
                    ApiError::bad_parameter("header", "give a header as \"Name: value\"")
                })?;
                req.headers
                    .push((name.trim().to_string(), v.trim().to_string()));
            }
            "client_ip" => {
                req.client_ip = Some(value.parse().map_err(|_| {
                    ApiError::bad_parameter("client_ip", format!("{value:?} is not an IP address"))
                })?);
            }
            other => {
                return Err(ApiError::bad_parameter(
                    other,
                    format!("unknown parameter {other:?}"),
                ));
            }
        }
    }
    match (url, path) {
        (Some(url), None) => {
            let uri: http::Uri = url
                .parse()
                .map_err(|_| ApiError::bad_parameter("url", format!("{url:?} is not a URL")))?;
            let authority = uri.authority().ok_or_else(|| {
                ApiError::bad_parameter(
                    "url",
                    "give an absolute URL, e.g. http://shop.example/api?id=7",
                )
            })?;
            req.host = Some(host.unwrap_or_else(|| authority.host().to_string()));
            req.path = uri.path().to_string();
            req.query = uri.query().map(str::to_string);
        }
        (None, Some(path)) => {
            let (p, q) = match path.split_once('?') {
                Some((p, q)) => (p.to_string(), Some(q.to_string())),
                None => (path, None),
            };
            req.path = p;
            req.query = q;
            req.host = host;
        }
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_parameter(
                "path",
                "give url or path, not both",
            ));
        }
        (None, None) => {
            return Err(ApiError::bad_parameter(
                "url",
                "give url (or path, and host)",
            ));
        }
    }
    // A host given with a port routes by its name (route hosts are DNS
    // names or IPv4 addresses).
    if let Some(h) = req.host.take() {
        let name = match h.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name.to_string(),
            _ => h,
        };
        req.host = Some(name);
    }
    Ok(req)
}

pub async fn explain(
    State(s): State<AdminState>,
    query: Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Explanation>, ApiError> {
    let Query(params) = query.map_err(|e| ApiError::bad_parameter("", e.body_text()))?;
    let req = request(params)?;
    Ok(Json(explain::explain(
        &s.publisher.plane().snapshot(),
        &req,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_url_gives_host_path_and_query() {
        let r = request(params(&[
            ("method", "POST"),
            ("url", "http://Shop.example:8080/api/cart?id=7"),
        ]))
        .unwrap();
        assert_eq!(r.method, Method::POST);
        assert_eq!(r.host.as_deref(), Some("Shop.example"));
        assert_eq!(
            (r.path.as_str(), r.query.as_deref()),
            ("/api/cart", Some("id=7"))
        );
        let r = request(params(&[
            ("path", "/a?x=1"),
            ("host", "h.test"),
            ("header", "X-User: 42"),
        ]))
        .unwrap();
        assert_eq!(r.headers, [("X-User".to_string(), "42".to_string())]);
        for (bad_params, name) in [
            (params(&[]), "url"),
            (params(&[("url", "/relative")]), "url"),
            (params(&[("url", "http://h/"), ("path", "/")]), "path"),
            (
                params(&[("url", "http://h/"), ("method", "GE T")]),
                "method",
            ),
            (
                params(&[("url", "http://h/"), ("client_ip", "nope")]),
                "client_ip",
            ),
            (params(&[("url", "http://h/"), ("bogus", "1")]), "bogus"),
        ] {
            match request(bad_params) {
                Err(ApiError::BadParameter(e)) => assert_eq!(e.pointer, name),
                other => panic!("{other:?}"),
            }
        }
    }
}
