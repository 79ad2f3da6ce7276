//! A load client for one thing: a full TLS 1.3 handshake per request, as
//! cheaply as a client can do one, so that the server measured is what
//! bounds the rate (bench/run.sh's `https_handshake` mode).
//!
//! Why not wrk: wrk with OpenSSL spends about 400 µs of its core per
//! handshake here (certificate parsing and verification, P-256 signature
//! check, OpenSSL 3's per-connection set-up), more than either server
//! spends, so with the load generator and the backend sharing one core it
//! measured the client: the server under test sat partly idle and its
//! handshakes/s said little about it. oha resumes sessions (rustls' client
//! cache), which is not a full handshake. This client offers what an
//! OpenSSL client offers (TLS 1.3, X25519, the default suites in OpenSSL's
//! order, no session to resume) and then checks nothing: not the
//! certificate, not the CertificateVerify signature. That is no way to
//! talk to anyone but a benchmark peer on 127.0.0.1; it keeps the client's
//! share of each handshake to the key exchange and the socket work.
//!
//! Each of `-c` connections in turn: connect, handshake, send one
//! `GET` with `Connection: close`, read the response (Content-Length body),
//! read to the server's close, repeat until `-d` seconds have passed. One
//! thread (current-thread runtime), so `taskset` pins it to one core.
//! Prints one line `WRKJSON {...}` with the keys bench/wrk-report.lua
//! prints, so bench/measure.py reads it like wrk's.
//!
//! Usage: bench-tls-load -c CONNS -d SECONDS https://127.0.0.1:PORT/PATH

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

fn main() {
    let (conns, duration, host, port, path) = match parse(std::env::args().skip(1).collect()) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("bench-tls-load: {e}\nusage: bench-tls-load -c CONNS -d SECONDS https://HOST:PORT/PATH");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let totals = rt.block_on(run(conns, duration, host, port, path));
    let mut lat = totals.latencies_us;
    lat.sort_unstable();
    let pct = |p: f64| -> u64 {
        if lat.is_empty() {
            0
        } else {
            lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)]
        }
    };
    let mean = if lat.is_empty() {
        0.0
    } else {
        lat.iter().sum::<u64>() as f64 / lat.len() as f64
    };
    println!(
        "WRKJSON {{\"requests\":{},\"duration_us\":{},\"bytes\":{},\"connect_errors\":{},\
         \"read_errors\":{},\"write_errors\":{},\"timeouts\":0,\"non2xx\":{},\
         \"lat_mean_us\":{:.1},\"lat_max_us\":{},\"p50_us\":{},\"p90_us\":{},\"p99_us\":{},\"p999_us\":{}}}",
        totals.ok,
        totals.elapsed.as_micros(),
        totals.bytes,
        totals.connect_errors,
        totals.read_errors,
        totals.write_errors,
        totals.non2xx,
        mean,
        lat.last().copied().unwrap_or(0),
        pct(0.5),
        pct(0.9),
        pct(0.99),
        pct(0.999),
    );
}

type Args = (usize, Duration, String, u16, String);

fn parse(args: Vec<String>) -> Result<Args, String> {
    let (mut conns, mut secs, mut url) = (64usize, 10u64, None);
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-c" => {
                conns = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .ok_or("-c needs a number")?
            }
            "-d" => {
                secs = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .ok_or("-d needs seconds")?
            }
            _ if a.starts_with("https://") => url = Some(a),
            _ => return Err(format!("unknown argument {a}")),
        }
    }
    let url = url.ok_or("no https:// URL")?;
    let rest = &url["https://".len()..];
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (host, port) = authority.rsplit_once(':').ok_or("the URL needs a port")?;
    let port = port.parse().map_err(|_| "the URL's port is not a number")?;
    let path = if path.is_empty() { "/" } else { path };
    if conns == 0 || secs == 0 {
        return Err("-c and -d must be at least 1".into());
    }
    Ok((
        conns,
        Duration::from_secs(secs),
        host.to_string(),
        port,
        path.to_string(),
    ))
}

#[derive(Default)]
struct Totals {
    ok: u64,
    bytes: u64,
    connect_errors: u64,
    read_errors: u64,
    write_errors: u64,
    non2xx: u64,
    latencies_us: Vec<u64>,
    elapsed: Duration,
}

async fn run(conns: usize, duration: Duration, host: String, port: u16, path: String) -> Totals {
    let mut config = ClientConfig::builder_with_provider(Arc::new(provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(CheckNothing))
        .with_no_client_auth();
    // No session to resume: every connection is a full handshake.
    config.resumption = rustls::client::Resumption::disabled();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from(if host.parse::<std::net::IpAddr>().is_ok() {
        "localhost".to_string()
    } else {
        host.clone()
    })
    .expect("server name");
    let request: Arc<[u8]> =
        format!("GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n")
            .into_bytes()
            .into();
    let start = Instant::now();
    let deadline = start + duration;
    let tasks: Vec<_> = (0..conns)
        .map(|_| {
            let (connector, name, request, host) = (
                connector.clone(),
                name.clone(),
                request.clone(),
                host.clone(),
            );
            tokio::spawn(async move {
                let mut totals = Totals::default();
                while Instant::now() < deadline {
                    one(&connector, &name, &request, (&host, port), &mut totals).await;
                }
                totals
            })
        })
        .collect();
    let mut all = Totals::default();
    for t in tasks {
        let t = t.await.expect("task");
        all.ok += t.ok;
        all.bytes += t.bytes;
        all.connect_errors += t.connect_errors;
        all.read_errors += t.read_errors;
        all.write_errors += t.write_errors;
        all.non2xx += t.non2xx;
        all.latencies_us.extend(t.latencies_us);
    }
    all.elapsed = start.elapsed();
    all
}

/// One connection, one request; counts the outcome in `totals`.
async fn one(
    connector: &TlsConnector,
    name: &ServerName<'static>,
    request: &[u8],
    addr: (&str, u16),
    totals: &mut Totals,
) {
    let t0 = Instant::now();
    let Ok(tcp) = TcpStream::connect(addr).await else {
        totals.connect_errors += 1;
        // Do not spin on a refused port.
        tokio::time::sleep(Duration::from_millis(10)).await;
        return;
    };
    let _ = tcp.set_nodelay(true);
    let Ok(mut tls) = connector.connect(name.clone(), tcp).await else {
        totals.connect_errors += 1;
        return;
    };
    if tls.write_all(request).await.is_err() {
        totals.write_errors += 1;
        return;
    }
    let mut buf = vec![0u8; 16 * 1024];
    let mut have = 0;
    let mut need = None;
    loop {
        if have == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        match tls.read(&mut buf[have..]).await {
            Ok(0) => break,
            Ok(n) => have += n,
            // A close without close_notify after the whole response is
            // still a whole response.
            Err(_) => break,
        }
        if need.is_none() {
            need = head_and_body_len(&buf[..have]);
        }
        if need.is_some_and(|n| have >= n) {
            break;
        }
    }
    match need {
        Some(n) if have >= n => {
            totals.bytes += have as u64;
            if buf.starts_with(b"HTTP/1.1 2") {
                totals.ok += 1;
                totals.latencies_us.push(t0.elapsed().as_micros() as u64);
            } else {
                totals.non2xx += 1;
            }
            // Wait for the server's close (it sent Connection: close), so
            // the connection ends the way an HTTP/1.1 client ends it.
            let _ = tls.read(&mut buf).await;
        }
        _ => totals.read_errors += 1,
    }
}

/// The length of head + Content-Length body, once the head is complete.
fn head_and_body_len(buf: &[u8]) -> Option<usize> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let len = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())
                .flatten()
        })
        .unwrap_or(0);
    Some(end + len)
}

/// ring's provider with X25519 only (what OpenSSL clients send a key share
/// for), suites in ring's (= OpenSSL's) order.
fn provider() -> rustls::crypto::CryptoProvider {
    let mut p = rustls::crypto::ring::default_provider();
    p.kx_groups = vec![rustls::crypto::ring::kx_group::X25519];
    p
}

/// Accepts any certificate and any signature, unchecked (see the module
/// doc: a benchmark client for a peer on 127.0.0.1, nothing else).
#[derive(Debug)]
struct CheckNothing;

impl ServerCertVerifier for CheckNothing {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![
            SignatureScheme::ECDSA_NISTP256_SHA256,
            SignatureScheme::ECDSA_NISTP384_SHA384,
            SignatureScheme::ED25519,
            SignatureScheme::RSA_PSS_SHA256,
            SignatureScheme::RSA_PKCS1_SHA256,
        ]
    }
}
