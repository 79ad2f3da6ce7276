//! The access log: one line per proxied request, written off the request
//! path.
//!
//! A request that is done hands its [`Record`] (the box it already had)
//! to a bounded lock-free queue and goes on: it neither formats nor
//! writes. One writer thread per gateway takes what has queued, formats
//! each line by hand into one reused buffer (integers through `itoa`, the
//! crate made for allocation-free integer text), and writes the batch with one
//! `write` call, then sleeps [`BATCH_EVERY`] while traffic flows (and
//! parks when there is none: the first line after a pause wakes it). When
//! the sink cannot keep up and the queue is full, a line is dropped and
//! counted (`switchyard_access_log_dropped_total{reason="queue_full"}`)
//! rather than traffic waiting for the disk; a batch the sink refuses is
//! counted as `write_failed`.
//!
//! The lines are those `tracing`'s formatter wrote before (same fields, the
//! same text and JSON shapes, target `switchyard::access`), so readers of
//! the log see no change. Why not `tracing` (with tracing-appender's
//! non-blocking writer): its per-event field visitor, formatter and
//! per-line allocation cost about a third of a proxied request here; this
//! formatting is a few appends to a buffer, done on another thread.
//!
//! The sink is stderr (shared with the rest of the log, each batch written
//! under stderr's lock so that lines never interleave) or a file opened
//! for appending, which [`AccessLog::reopen`] opens again by name (SIGHUP,
//! for logrotate).

use std::fs::File;
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle, Thread};
use std::time::Duration;

use crossbeam_queue::ArrayQueue;

/// Lines that may wait for the writer: at 50k requests/s, over 150 ms of
/// traffic while the sink is slow.
pub const QUEUE_LINES: usize = 8192;
/// How long the writer lets lines gather between batches under traffic.
pub const BATCH_EVERY: Duration = Duration::from_millis(10);
/// A batch is written once its buffer holds this much.
const FLUSH_BYTES: usize = 64 * 1024;
/// At most one warning per this long about a sink that fails.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// How the lines look: `tracing`'s text or JSON event format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// Where the lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sink {
    Stderr,
    /// Appended to; opened again by name on [`AccessLog::reopen`].
    File(PathBuf),
}

/// Where the access log goes and how it looks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub sink: Sink,
    pub format: Format,
}

/// Lines that were not written, by reason (exported by the exporter).
#[derive(Debug, Default)]
pub struct Dropped {
    /// The queue was full: the sink did not keep up.
    pub queue_full: AtomicU64,
    /// The sink refused the write (disk full, closed pipe).
    pub write_failed: AtomicU64,
}

/// The access log file could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the access log {}: {source} (choose a writable file with --access-log)", path.display())]
pub struct OpenError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// The host and path a request was for, in one allocation.
#[derive(Debug)]
pub struct Target {
    text: String,
    host_len: usize,
}

impl Target {
    pub fn new(host: &str, path: &str) -> Self {
        let mut text = String::with_capacity(host.len() + path.len());
        text.push_str(host);
        text.push_str(path);
        Target {
            text,
            host_len: host.len(),
        }
    }

    pub fn host(&self) -> &str {
        &self.text[..self.host_len]
    }

    pub fn path(&self) -> &str {
        &self.text[self.host_len..]
    }
}

/// One request's line, filled in as the request goes and finished by
/// [`AccessLog::submit`].
#[derive(Debug)]
pub struct Record {
    pub request_id: http::HeaderValue,
    pub client: IpAddr,
    pub method: http::Method,
    pub target: Target,
    pub route: Option<Arc<str>>,
    pub upstream: Option<Arc<str>>,
    pub backend: Option<Arc<str>>,
    pub status: u16,
    pub retries: u32,
    /// When the request came in, on [`crate::clock::now_ns`]'s clock.
    pub started_ns: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// The answer was sent whole.
    pub complete: bool,
    /// Why the gateway answered itself (the backend and OS error named).
    pub error: Option<String>,
    /// The route's policy that denied the request.
    pub policy: Option<&'static str>,
    /// Set by [`AccessLog::submit`]: how long the request took, and when
    /// it ended (microseconds since the Unix epoch).
    duration_ns: u64,
    ended_unix_us: u64,
}

impl Record {
    /// A record of a request that came in at `started_ns`; the rest is
    /// filled in as it goes.
    pub fn new(
        request_id: http::HeaderValue,
        client: IpAddr,
        method: http::Method,
        target: Target,
        started_ns: u64,
    ) -> Self {
        Record {
            request_id,
            client,
            method,
            target,
            route: None,
            upstream: None,
            backend: None,
            status: 0,
            retries: 0,
            started_ns,
            bytes_in: 0,
            bytes_out: 0,
            complete: false,
            error: None,
            policy: None,
            duration_ns: 0,
            ended_unix_us: 0,
        }
    }
}

/// A handle on a gateway's access log (cheap to clone: each pending line
/// holds one). The writer thread stops once every handle is gone, or at
/// [`AccessLog::close`], after writing what was queued.
#[derive(Debug, Clone)]
pub struct AccessLog {
    handle: Arc<Handle>,
}

#[derive(Debug)]
struct Handle {
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Debug)]
struct Shared {
    queue: ArrayQueue<Box<Record>>,
    /// The writer is parked (or about to be) with nothing to do.
    sleeping: AtomicBool,
    stop: AtomicBool,
    reopen: AtomicBool,
    thread: OnceLock<Thread>,
    dropped: Arc<Dropped>,
}

impl Shared {
    fn wake(&self) {
        if let Some(t) = self.thread.get() {
            t.unpark();
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wake();
    }
}

impl AccessLog {
    /// Open `sink` (a file is created if missing, and appended to) and start
    /// the writer thread. Lines that cannot be written are counted in
    /// `dropped`.
    pub fn start(settings: &Settings, dropped: Arc<Dropped>) -> Result<Self, OpenError> {
        let out = match &settings.sink {
            Sink::Stderr => Out::Stderr,
            Sink::File(path) => Out::File {
                file: open(path)?,
                path: path.clone(),
            },
        };
        Ok(Self::with_output(
            out,
            settings.format,
            dropped,
            QUEUE_LINES,
        ))
    }

    fn with_output(out: Out, format: Format, dropped: Arc<Dropped>, lines: usize) -> Self {
        let shared = Arc::new(Shared {
            queue: ArrayQueue::new(lines),
            sleeping: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            reopen: AtomicBool::new(false),
            thread: OnceLock::new(),
            dropped,
        });
        let writer = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name("access-log".into())
                .spawn(move || Writer::new(out, format).run(&shared))
                .expect("the access log's writer thread starts")
        };
        let _ = shared.thread.set(writer.thread().clone());
        AccessLog {
            handle: Arc::new(Handle {
                shared,
                writer: Mutex::new(Some(writer)),
            }),
        }
    }

    /// Queue `record`'s line; never waits. Dropped (and counted) when the
    /// queue is full.
    pub fn submit(&self, mut record: Box<Record>) {
        record.duration_ns = crate::clock::now_ns().saturating_sub(record.started_ns);
        record.ended_unix_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let shared = &self.handle.shared;
        if shared.queue.push(record).is_err() {
            shared.dropped.queue_full.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if shared.sleeping.load(Ordering::SeqCst) && shared.sleeping.swap(false, Ordering::SeqCst) {
            shared.wake();
        }
    }

    /// Open the file again by its name (after logrotate moved it); the
    /// writer does it before its next batch. Nothing to do for stderr.
    pub fn reopen(&self) {
        self.handle.shared.reopen.store(true, Ordering::SeqCst);
        self.handle.shared.wake();
    }

    /// Write what is queued and stop the writer thread (blocks until it
    /// has: call from a blocking context). Lines submitted afterwards are
    /// not written.
    pub fn close(&self) {
        self.handle.shared.stop.store(true, Ordering::SeqCst);
        self.handle.shared.wake();
        let writer = self
            .handle
            .writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(writer) = writer {
            let _ = writer.join();
        }
    }
}

fn open(path: &Path) -> Result<File, OpenError> {
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o640);
    options.open(path).map_err(|source| OpenError {
        path: path.to_path_buf(),
        source,
    })
}

/// Where the writer writes.
enum Out {
    Stderr,
    File {
        path: PathBuf,
        file: File,
    },
    /// Tests: any writer.
    #[cfg(test)]
    Test(Box<dyn Write + Send>),
}

impl Out {
    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            // Under stderr's lock: the rest of the log writes through it.
            Out::Stderr => io::stderr().lock().write_all(bytes),
            Out::File { file, .. } => file.write_all(bytes),
            #[cfg(test)]
            Out::Test(w) => w.write_all(bytes),
        }
    }

    fn reopen(&mut self) {
        if let Out::File { path, file } = self {
            match open(path) {
                Ok(new) => {
                    *file = new;
                    tracing::info!(path = %path.display(), "access log reopened");
                }
                Err(e) => tracing::warn!("{e}; still writing to the file open before"),
            }
        }
    }
}

/// The writer thread's state.
struct Writer {
    out: Out,
    format: Format,
    buf: Vec<u8>,
    /// Lines in `buf`.
    lines: u64,
    clock: DateCache,
    warned: Option<std::time::Instant>,
}

impl Writer {
    fn new(out: Out, format: Format) -> Self {
        Writer {
            out,
            format,
            buf: Vec::with_capacity(FLUSH_BYTES + 4096),
            lines: 0,
            clock: DateCache::default(),
            warned: None,
        }
    }

    fn run(mut self, shared: &Shared) {
        loop {
            let stopping = shared.stop.load(Ordering::SeqCst);
            if shared.reopen.swap(false, Ordering::SeqCst) {
                self.out.reopen();
            }
            let mut taken = 0;
            while let Some(record) = shared.queue.pop() {
                self.line(&record);
                drop(record);
                taken += 1;
                if self.buf.len() >= FLUSH_BYTES {
                    self.flush(shared);
                }
            }
            self.flush(shared);
            if taken > 0 {
                // Traffic: let the next batch gather.
                thread::sleep(BATCH_EVERY);
                continue;
            }
            if stopping {
                return;
            }
            shared.sleeping.store(true, Ordering::SeqCst);
            if shared.queue.is_empty()
                && !shared.stop.load(Ordering::SeqCst)
                && !shared.reopen.load(Ordering::SeqCst)
            {
                thread::park_timeout(Duration::from_secs(1));
            }
            shared.sleeping.store(false, Ordering::SeqCst);
        }
    }

    fn flush(&mut self, shared: &Shared) {
        if self.buf.is_empty() {
            return;
        }
        if let Err(e) = self.out.write(&self.buf) {
            shared
                .dropped
                .write_failed
                .fetch_add(self.lines, Ordering::Relaxed);
            if self.warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                self.warned = Some(std::time::Instant::now());
                tracing::warn!(error = %e, lines = self.lines, "access log write failed: lines dropped");
            }
        }
        self.buf.clear();
        self.lines = 0;
    }

    fn line(&mut self, r: &Record) {
        self.lines += 1;
        match self.format {
            Format::Text => text_line(&mut self.buf, &mut self.clock, r),
            Format::Json => json_line(&mut self.buf, &mut self.clock, r),
        }
    }
}

const TARGET: &str = "switchyard::access";

/// `tracing`'s full text format: `<time>  INFO switchyard::access: k=v …`,
/// strings quoted and escaped as `Debug` does, addresses and methods bare.
fn text_line(out: &mut Vec<u8>, clock: &mut DateCache, r: &Record) {
    clock.write(out, r.ended_unix_us);
    out.extend_from_slice(b"  INFO ");
    out.extend_from_slice(TARGET.as_bytes());
    out.extend_from_slice(b": request_id=");
    quoted(out, r.request_id.to_str().unwrap_or(""), Escape::Debug);
    out.extend_from_slice(b" client=");
    ip(out, r.client);
    out.extend_from_slice(b" method=");
    out.extend_from_slice(r.method.as_str().as_bytes());
    let field = |out: &mut Vec<u8>, (key, value): (&str, &str)| {
        string_field(out, b" ", key, b"=", value, Escape::Debug);
    };
    strings(r).into_iter().for_each(|f| field(out, f));
    numbers(out, r, b" ", b"=");
    optional(r).for_each(|f| field(out, f));
    out.push(b'\n');
}

/// `tracing`'s JSON format: `{"timestamp":…,"level":"INFO","fields":{…},
/// "target":"switchyard::access"}`.
fn json_line(out: &mut Vec<u8>, clock: &mut DateCache, r: &Record) {
    out.extend_from_slice(b"{\"timestamp\":\"");
    clock.write(out, r.ended_unix_us);
    out.extend_from_slice(b"\",\"level\":\"INFO\",\"fields\":{\"request_id\":");
    quoted(out, r.request_id.to_str().unwrap_or(""), Escape::Json);
    out.extend_from_slice(b",\"client\":\"");
    ip(out, r.client);
    out.extend_from_slice(b"\",\"method\":");
    quoted(out, r.method.as_str(), Escape::Json);
    let field = |out: &mut Vec<u8>, (key, value): (&str, &str)| {
        string_field(out, b",\"", key, b"\":", value, Escape::Json);
    };
    strings(r).into_iter().for_each(|f| field(out, f));
    numbers(out, r, b",\"", b"\":");
    optional(r).for_each(|f| field(out, f));
    out.extend_from_slice(b"},\"target\":\"");
    out.extend_from_slice(TARGET.as_bytes());
    out.extend_from_slice(b"\"}\n");
}

/// `before key between "value"`.
fn string_field(
    out: &mut Vec<u8>,
    before: &[u8],
    key: &str,
    between: &[u8],
    value: &str,
    escape: Escape,
) {
    out.extend_from_slice(before);
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(between);
    quoted(out, value, escape);
}

/// The string fields after the method, in the log's order.
fn strings(r: &Record) -> [(&'static str, &str); 5] {
    [
        ("host", r.target.host()),
        ("path", r.target.path()),
        ("route", r.route.as_deref().unwrap_or("-")),
        ("upstream", r.upstream.as_deref().unwrap_or("-")),
        ("backend", r.backend.as_deref().unwrap_or("-")),
    ]
}

/// The fields a line has only when they are set.
fn optional(r: &Record) -> impl Iterator<Item = (&'static str, &str)> {
    [("error", r.error.as_deref()), ("policy", r.policy)]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
}

/// status, duration_ms, bytes_in, bytes_out, retries and complete, each
/// `before key between value`.
fn numbers(out: &mut Vec<u8>, r: &Record, before: &[u8], between: &[u8]) {
    let mut n = itoa::Buffer::new();
    let field = |out: &mut Vec<u8>, key: &str| {
        out.extend_from_slice(before);
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(between);
    };
    field(out, "status");
    out.extend_from_slice(n.format(r.status).as_bytes());
    // Milliseconds to the microsecond.
    field(out, "duration_ms");
    let us = r.duration_ns / 1000;
    out.extend_from_slice(n.format(us / 1000).as_bytes());
    out.push(b'.');
    digits(out, us % 1000, 3);
    for (key, value) in [
        ("bytes_in", r.bytes_in),
        ("bytes_out", r.bytes_out),
        ("retries", u64::from(r.retries)),
    ] {
        field(out, key);
        out.extend_from_slice(n.format(value).as_bytes());
    }
    field(out, "complete");
    out.extend_from_slice(if r.complete { b"true" } else { b"false" });
}

/// An address as `Display` writes it (IPv4 without the formatter).
fn ip(out: &mut Vec<u8>, addr: IpAddr) {
    match addr {
        IpAddr::V4(v4) => {
            let mut n = itoa::Buffer::new();
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                out.extend_from_slice(n.format(octet).as_bytes());
            }
        }
        IpAddr::V6(_) => {
            let _ = write!(out, "{addr}");
        }
    }
}

/// `value` zero-padded to `width` digits.
fn digits(out: &mut Vec<u8>, value: u64, width: u32) {
    let mut div = 10u64.pow(width - 1);
    while div > 0 {
        out.push(b'0' + ((value / div) % 10) as u8);
        div /= 10;
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Escape {
    /// As Rust's `Debug` for `str` (what `tracing`'s text format prints).
    Debug,
    Json,
}

/// `value` in double quotes, escaped: no line a request makes can break
/// the log's lines or its JSON.
fn quoted(out: &mut Vec<u8>, value: &str, escape: Escape) {
    out.push(b'"');
    let bytes = value.as_bytes();
    // Nearly always: nothing to escape.
    if !bytes
        .iter()
        .any(|&b| b == b'"' || b == b'\\' || b < 0x20 || b == 0x7f)
    {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut plain = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let special: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f | 0x7f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[plain..i]);
        plain = i + 1;
        if special.is_empty() {
            let hex = |d: u8| b"0123456789abcdef"[usize::from(d)];
            match escape {
                Escape::Json => {
                    out.extend_from_slice(b"\\u00");
                    out.push(hex(b >> 4));
                    out.push(hex(b & 0xf));
                }
                Escape::Debug => {
                    out.extend_from_slice(b"\\u{");
                    if b >= 0x10 {
                        out.push(hex(b >> 4));
                    }
                    out.push(hex(b & 0xf));
                    out.push(b'}');
                }
            }
        } else {
            out.extend_from_slice(special);
        }
    }
    out.extend_from_slice(&bytes[plain..]);
    out.push(b'"');
}

/// RFC 3339 UTC timestamps to the microsecond, the date and time of day
/// worked out once per second.
#[derive(Default)]
struct DateCache {
    second: Option<u64>,
    text: [u8; 19],
}

impl DateCache {
    fn write(&mut self, out: &mut Vec<u8>, unix_us: u64) {
        let second = unix_us / 1_000_000;
        if self.second != Some(second) {
            self.second = Some(second);
            self.text = date_time(second);
        }
        out.extend_from_slice(&self.text);
        out.push(b'.');
        digits(out, unix_us % 1_000_000, 6);
        out.push(b'Z');
    }
}

/// `YYYY-MM-DDTHH:MM:SS` of a Unix time (UTC).
fn date_time(unix: u64) -> [u8; 19] {
    let (y, m, d) = civil_from_days((unix / 86_400) as i64);
    let s = unix % 86_400;
    let mut v = Vec::with_capacity(19);
    digits(&mut v, y.clamp(0, 9999) as u64, 4);
    v.push(b'-');
    digits(&mut v, m, 2);
    v.push(b'-');
    digits(&mut v, d, 2);
    v.push(b'T');
    digits(&mut v, s / 3600, 2);
    v.push(b':');
    digits(&mut v, s / 60 % 60, 2);
    v.push(b':');
    digits(&mut v, s % 60, 2);
    v.try_into().expect("19 bytes")
}

/// Year, month and day of the `days`th day after 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u64, u64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u64;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u64;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn record(path: &str) -> Box<Record> {
        let mut r = Box::new(Record::new(
            http::HeaderValue::from_static("req-1"),
            "192.0.2.7".parse().unwrap(),
            http::Method::POST,
            Target::new("api.example", path),
            0,
        ));
        r.route = Some(Arc::from("r"));
        r.upstream = Some(Arc::from("u"));
        r.backend = Some(Arc::from("http://10.0.0.1:80"));
        r.status = 502;
        r.retries = 1;
        r.bytes_in = 5;
        r.bytes_out = 1234;
        r.complete = true;
        r.error = Some("connect to http://10.0.0.1:80: refused".into());
        r.duration_ns = 1_234_567;
        r.ended_unix_us = 1_796_514_585_000_042; // 2026-12-05T23:49:45.000042Z
        r
    }

    #[test]
    fn json_lines_are_tracing_events_with_every_field() {
        let mut out = Vec::new();
        json_line(
            &mut out,
            &mut DateCache::default(),
            &record("/a\"b\\c\n\u{1}é"),
        );
        assert_eq!(out.last(), Some(&b'\n'));
        assert_eq!(out.iter().filter(|b| **b == b'\n').count(), 1);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["timestamp"], "2026-12-05T23:49:45.000042Z");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["target"], "switchyard::access");
        let f = &v["fields"];
        assert_eq!(f["request_id"], "req-1");
        assert_eq!(f["client"], "192.0.2.7");
        assert_eq!(f["method"], "POST");
        assert_eq!(f["host"], "api.example");
        assert_eq!(f["path"], "/a\"b\\c\n\u{1}é");
        assert_eq!(f["route"], "r");
        assert_eq!(f["upstream"], "u");
        assert_eq!(f["backend"], "http://10.0.0.1:80");
        assert_eq!(f["status"], 502);
        assert_eq!(f["duration_ms"], 1.234);
        assert_eq!(f["bytes_in"], 5);
        assert_eq!(f["bytes_out"], 1234);
        assert_eq!(f["retries"], 1);
        assert_eq!(f["complete"], true);
        assert_eq!(f["error"], "connect to http://10.0.0.1:80: refused");
        assert!(f.get("policy").is_none(), "{v}");
    }

    #[test]
    fn text_lines_are_tracing_full_format() {
        let mut r = record("/x y\"\n");
        r.error = None;
        r.policy = Some("rate_limit");
        r.route = None;
        let mut out = Vec::new();
        text_line(&mut out, &mut DateCache::default(), &r);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2026-12-05T23:49:45.000042Z  INFO switchyard::access: request_id=\"req-1\" \
             client=192.0.2.7 method=POST host=\"api.example\" path=\"/x y\\\"\\n\" route=\"-\" \
             upstream=\"u\" backend=\"http://10.0.0.1:80\" status=502 duration_ms=1.234 \
             bytes_in=5 bytes_out=1234 retries=1 complete=true policy=\"rate_limit\"\n"
        );
        // Control characters as Debug writes them.
        let mut out = Vec::new();
        quoted(&mut out, "a\u{1}\u{1b}\u{7f}", Escape::Debug);
        assert_eq!(out, format!("{:?}", "a\u{1}\u{1b}\u{7f}").as_bytes());
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for text in [
            "0.0.0.0",
            "192.0.2.7",
            "255.255.255.255",
            "::1",
            "2001:db8::7",
        ] {
            let addr: IpAddr = text.parse().unwrap();
            let mut out = Vec::new();
            ip(&mut out, addr);
            assert_eq!(out, addr.to_string().as_bytes());
        }
    }

    #[test]
    fn dates_agree_with_httpdate() {
        let mut t: u64 = 0;
        while t < 8_000_000_000 {
            let text = date_time(t);
            let http = httpdate::fmt_http_date(std::time::UNIX_EPOCH + Duration::from_secs(t));
            // "Sat, 05 Dec 2026 23:49:45 GMT"
            let parsed = httpdate::parse_http_date(&http).unwrap();
            assert_eq!(
                parsed,
                std::time::UNIX_EPOCH + Duration::from_secs(t),
                "{http}"
            );
            let s = std::str::from_utf8(&text).unwrap();
            let months = [
                "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
            ];
            let m: usize = s[5..7].parse().unwrap();
            let expected = format!(
                "{} {} {} {}",
                &s[8..10],
                months[m - 1],
                &s[0..4],
                &s[11..19]
            );
            assert_eq!(&http[5..25], expected, "{t}");
            t += 86_399 * 7 + 12_345;
        }
        assert_eq!(&date_time(951_782_400), b"2000-02-29T00:00:00");
    }

    /// A writer that says when a write begins, then waits for the test's
    /// word.
    struct Gate {
        entered: mpsc::Sender<()>,
        go: mpsc::Receiver<()>,
        written: mpsc::Sender<Vec<u8>>,
    }

    impl Write for Gate {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let _ = self.entered.send(());
            let _ = self.go.recv();
            let _ = self.written.send(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_slow_sink_drops_and_counts_lines_instead_of_waiting() {
        let (go, go_rx) = mpsc::channel();
        let (entered_tx, entered) = mpsc::channel();
        let (written_tx, written) = mpsc::channel();
        let dropped = Arc::new(Dropped::default());
        let log = AccessLog::with_output(
            Out::Test(Box::new(Gate {
                entered: entered_tx,
                go: go_rx,
                written: written_tx,
            })),
            Format::Json,
            Arc::clone(&dropped),
            4,
        );
        // The writer takes the first line and waits at the gate with it.
        log.submit(record("/first"));
        entered
            .recv_timeout(Duration::from_secs(5))
            .expect("the writer writes the first line");
        for _ in 0..100 {
            log.submit(record("/more")); // returns at once, the sink stuck
        }
        assert_eq!(dropped.queue_full.load(Ordering::Relaxed), 96);
        drop(go); // open the gate for good
        log.close();
        let lines: usize = written
            .try_iter()
            .map(|b| b.iter().filter(|c| **c == b'\n').count())
            .sum();
        assert_eq!(lines, 5, "the first line and the 4 queued ones");
        assert_eq!(dropped.write_failed.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_file_sink_reopens_by_name() {
        let dir = std::env::temp_dir().join(format!("switchyard-access-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("access.log");
        let _ = std::fs::remove_file(&path);
        let dropped = Arc::new(Dropped::default());
        let settings = Settings {
            sink: Sink::File(path.clone()),
            format: Format::Text,
        };
        let log = AccessLog::start(&settings, dropped).unwrap();
        let wait_for = |file: &Path, lines: usize| {
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            loop {
                let n = std::fs::read_to_string(file)
                    .map(|t| t.lines().count())
                    .unwrap_or(0);
                if n >= lines {
                    return n;
                }
                assert!(std::time::Instant::now() < deadline, "{file:?}: {n} lines");
                thread::sleep(Duration::from_millis(5));
            }
        };
        log.submit(record("/one"));
        wait_for(&path, 1);
        let rotated = dir.join("access.log.1");
        std::fs::rename(&path, &rotated).unwrap();
        log.reopen();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !path.exists() {
            assert!(std::time::Instant::now() < deadline, "not reopened");
            thread::sleep(Duration::from_millis(5));
        }
        log.submit(record("/two"));
        log.close();
        assert_eq!(wait_for(&rotated, 1), 1);
        let now = std::fs::read_to_string(&path).unwrap();
        assert!(
            now.contains("path=\"/two\"") && !now.contains("/one"),
            "{now}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_unwritable_file_is_refused_naming_it_and_the_flag() {
        let settings = Settings {
            sink: Sink::File(PathBuf::from("/nonexistent-dir/access.log")),
            format: Format::Text,
        };
        let e = AccessLog::start(&settings, Arc::default()).unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with("cannot open the access log /nonexistent-dir/access.log: ")
                && text.ends_with("(choose a writable file with --access-log)"),
            "{text}"
        );
    }
}
