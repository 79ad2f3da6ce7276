//! The access log: one line per proxied request, written off the request
//! path.
//!
//! A request takes a [`Record`] when it comes in ([`AccessLog::record`]:
//! a spare one the writer handed back, so the request path neither
//! allocates nor frees) and, when it is done, hands it to a bounded
//! lock-free queue and goes on: it neither formats nor writes. One writer
//! thread per gateway takes what has queued, formats
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
/// The writer lets other threads run after this many lines.
const YIELD_EVERY: usize = 32;
/// Records the writer keeps for reuse (more are freed).
const SPARE_RECORDS: usize = 1024;
/// A reused record's target keeps at most this much room.
const SPARE_TARGET_BYTES: usize = 4096;
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

    /// Now `host` and `path`, in the room it has.
    fn set(&mut self, host: &str, path: &str) {
        self.text.clear();
        self.text.push_str(host);
        self.text.push_str(path);
        self.host_len = host.len();
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
    /// Set by [`AccessLog::submit`]: when the request ended, on the same
    /// clock (the writer works out the wall time).
    ended_ns: u64,
}

impl Record {
    /// An empty record, filled in as the request goes.
    fn blank() -> Self {
        Record {
            request_id: http::HeaderValue::from_static(""),
            client: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            method: http::Method::GET,
            target: Target::new("", ""),
            route: None,
            upstream: None,
            backend: None,
            status: 0,
            retries: 0,
            started_ns: 0,
            bytes_in: 0,
            bytes_out: 0,
            complete: false,
            error: None,
            policy: None,
            ended_ns: 0,
        }
    }

    /// Blank again, for reuse; the target keeps its room (up to
    /// [`SPARE_TARGET_BYTES`]).
    fn clear(&mut self) {
        let mut target = std::mem::replace(&mut self.target, Target::new("", ""));
        if target.text.capacity() > SPARE_TARGET_BYTES {
            target.text = String::new();
        }
        target.set("", "");
        *self = Record {
            target,
            ..Record::blank()
        };
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
    /// Written records, for [`AccessLog::record`] to hand out again.
    spare: ArrayQueue<Box<Record>>,
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
            spare: ArrayQueue::new(SPARE_RECORDS),
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

    /// A blank record for a request to `host` and `path` (a spare one
    /// when the writer has one: no allocation).
    pub fn record(&self, host: &str, path: &str) -> Box<Record> {
        let mut record = self
            .handle
            .shared
            .spare
            .pop()
            .unwrap_or_else(|| Box::new(Record::blank()));
        record.target.set(host, path);
        record
    }

    /// Queue `record`'s line; never waits. Dropped (and counted) when the
    /// queue is full.
    pub fn submit(&self, mut record: Box<Record>) {
        record.ended_ns = crate::clock::now_ns();
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

/// Wall time from [`crate::clock::now_ns`]'s monotonic readings, by one
/// reading of both clocks per batch (so a request reads no wall clock).
struct WallClock {
    unix_us: u64,
    mono_ns: u64,
}

impl WallClock {
    fn now() -> Self {
        WallClock {
            unix_us: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as u64),
            mono_ns: crate::clock::now_ns(),
        }
    }

    /// Microseconds since the Unix epoch at the monotonic reading `ns`.
    fn at(&self, ns: u64) -> u64 {
        if ns >= self.mono_ns {
            self.unix_us + (ns - self.mono_ns) / 1000
        } else {
            self.unix_us.saturating_sub((self.mono_ns - ns) / 1000)
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
            let wall = WallClock::now();
            while let Some(mut record) = shared.queue.pop() {
                self.line(&record, &wall);
                record.clear();
                let _ = shared.spare.push(record);
                taken += 1;
                if taken % YIELD_EVERY == 0 {
                    // On a core shared with a worker, a request waits for
                    // at most this many lines.
                    thread::yield_now();
                }
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

    fn line(&mut self, r: &Record, wall: &WallClock) {
        self.lines += 1;
        let wall_us = wall.at(r.ended_ns);
        match self.format {
            Format::Text => line::<Text>(&mut self.buf, &mut self.clock, r, wall_us),
            Format::Json => line::<Json>(&mut self.buf, &mut self.clock, r, wall_us),
        }
    }
}

/// A line format: the text around each field. Constants, so that each
/// append compiles to a few moves rather than a call to `memcpy`; one
/// [`line`] writes both formats.
trait Shape {
    const ESCAPE: Escape;
    const LABELS: Labels;
}

/// What comes before each field (and after the last).
struct Labels {
    start: &'static [u8],
    request_id: &'static [u8],
    client: &'static [u8],
    method: &'static [u8],
    host: &'static [u8],
    path: &'static [u8],
    route: &'static [u8],
    upstream: &'static [u8],
    backend: &'static [u8],
    status: &'static [u8],
    duration_ms: &'static [u8],
    bytes_in: &'static [u8],
    bytes_out: &'static [u8],
    retries: &'static [u8],
    complete: &'static [u8],
    error: &'static [u8],
    policy: &'static [u8],
    end: &'static [u8],
}

/// `tracing`'s full text format: `<time>  INFO switchyard::access: k=v …`,
/// strings quoted and escaped as `Debug` does, addresses and methods bare.
struct Text;

impl Shape for Text {
    const ESCAPE: Escape = Escape::Debug;
    const LABELS: Labels = Labels {
        start: b"",
        request_id: b"  INFO switchyard::access: request_id=",
        client: b" client=",
        method: b" method=",
        host: b" host=",
        path: b" path=",
        route: b" route=",
        upstream: b" upstream=",
        backend: b" backend=",
        status: b" status=",
        duration_ms: b" duration_ms=",
        bytes_in: b" bytes_in=",
        bytes_out: b" bytes_out=",
        retries: b" retries=",
        complete: b" complete=",
        error: b" error=",
        policy: b" policy=",
        end: b"\n",
    };
}

/// `tracing`'s JSON format: `{"timestamp":…,"level":"INFO","fields":{…},
/// "target":"switchyard::access"}`. (A method is a token: nothing in it
/// needs escaping.)
struct Json;

impl Shape for Json {
    const ESCAPE: Escape = Escape::Json;
    const LABELS: Labels = Labels {
        start: b"{\"timestamp\":\"",
        request_id: b"\",\"level\":\"INFO\",\"fields\":{\"request_id\":",
        client: b",\"client\":\"",
        method: b"\",\"method\":\"",
        host: b"\",\"host\":",
        path: b",\"path\":",
        route: b",\"route\":",
        upstream: b",\"upstream\":",
        backend: b",\"backend\":",
        status: b",\"status\":",
        duration_ms: b",\"duration_ms\":",
        bytes_in: b",\"bytes_in\":",
        bytes_out: b",\"bytes_out\":",
        retries: b",\"retries\":",
        complete: b",\"complete\":",
        error: b",\"error\":",
        policy: b",\"policy\":",
        end: b"},\"target\":\"switchyard::access\"}\n",
    };
}

/// `r`'s line, ended at `wall_us` (microseconds since the Unix epoch).
fn line<S: Shape>(out: &mut Vec<u8>, clock: &mut DateCache, r: &Record, wall_us: u64) {
    let quoted = |out: &mut Vec<u8>, label: &[u8], value: &str| {
        out.extend_from_slice(label);
        quoted(out, value, S::ESCAPE);
    };
    let number = |out: &mut Vec<u8>, label: &[u8], value: u64| {
        out.extend_from_slice(label);
        out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
    };
    out.extend_from_slice(S::LABELS.start);
    clock.write(out, wall_us);
    quoted(
        out,
        S::LABELS.request_id,
        r.request_id.to_str().unwrap_or(""),
    );
    out.extend_from_slice(S::LABELS.client);
    ip(out, r.client);
    out.extend_from_slice(S::LABELS.method);
    out.extend_from_slice(r.method.as_str().as_bytes());
    quoted(out, S::LABELS.host, r.target.host());
    quoted(out, S::LABELS.path, r.target.path());
    quoted(out, S::LABELS.route, r.route.as_deref().unwrap_or("-"));
    quoted(
        out,
        S::LABELS.upstream,
        r.upstream.as_deref().unwrap_or("-"),
    );
    quoted(out, S::LABELS.backend, r.backend.as_deref().unwrap_or("-"));
    number(out, S::LABELS.status, u64::from(r.status));
    // Milliseconds to the microsecond.
    let us = r.ended_ns.saturating_sub(r.started_ns) / 1000;
    number(out, S::LABELS.duration_ms, us / 1000);
    out.push(b'.');
    digits(out, us % 1000, 3);
    number(out, S::LABELS.bytes_in, r.bytes_in);
    number(out, S::LABELS.bytes_out, r.bytes_out);
    number(out, S::LABELS.retries, u64::from(r.retries));
    out.extend_from_slice(S::LABELS.complete);
    out.extend_from_slice(if r.complete { b"true" } else { b"false" });
    if let Some(error) = &r.error {
        quoted(out, S::LABELS.error, error);
    }
    if let Some(policy) = r.policy {
        quoted(out, S::LABELS.policy, policy);
    }
    out.extend_from_slice(S::LABELS.end);
}

/// An address as `Display` writes it (IPv4 without the formatter).
fn ip(out: &mut Vec<u8>, addr: IpAddr) {
    match addr {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                if octet >= 100 {
                    out.push(b'0' + octet / 100);
                }
                if octet >= 10 {
                    out.push(b'0' + octet / 10 % 10);
                }
                out.push(b'0' + octet % 10);
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
    if !needs_escape(bytes) {
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

/// Whether `bytes` has a quote, a backslash or a control character.
/// Eight bytes at a time, as one integer (the last eight overlapping the
/// ones before): a byte-at-a-time scan costs several times as much, and
/// most strings here are a few words long.
fn needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    /// Whether a byte of `x` is below `n` (`n` ≤ 0x80; exact).
    fn below(x: u64, n: u8) -> bool {
        x.wrapping_sub(ONES * u64::from(n)) & !x & HIGHS != 0
    }
    fn special(x: u64) -> bool {
        below(x, 0x20)
            || below(x ^ (ONES * u64::from(b'"')), 1)
            || below(x ^ (ONES * u64::from(b'\\')), 1)
            || below(x ^ (ONES * 0x7f), 1)
    }
    let word = |at: usize| u64::from_ne_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    if bytes.len() < 8 {
        return bytes
            .iter()
            .any(|&b| b == b'"' || b == b'\\' || b < 0x20 || b == 0x7f);
    }
    let last = bytes.len() - 8;
    (0..last).step_by(8).any(|at| special(word(at))) || special(word(last))
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

    /// 2026-12-05T23:49:45.000042Z
    const WALL_US: u64 = 1_796_514_585_000_042;

    fn record(path: &str) -> Box<Record> {
        let mut r = Box::new(Record::blank());
        r.request_id = http::HeaderValue::from_static("req-1");
        r.client = "192.0.2.7".parse().unwrap();
        r.method = http::Method::POST;
        r.target.set("api.example", path);
        r.route = Some(Arc::from("r"));
        r.upstream = Some(Arc::from("u"));
        r.backend = Some(Arc::from("http://10.0.0.1:80"));
        r.status = 502;
        r.retries = 1;
        r.bytes_in = 5;
        r.bytes_out = 1234;
        r.complete = true;
        r.error = Some("connect to http://10.0.0.1:80: refused".into());
        r.ended_ns = 1_234_567;
        r
    }

    #[test]
    fn json_lines_are_tracing_events_with_every_field() {
        let mut out = Vec::new();
        line::<Json>(
            &mut out,
            &mut DateCache::default(),
            &record("/a\"b\\c\n\u{1}é"),
            WALL_US,
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
        line::<Text>(&mut out, &mut DateCache::default(), &r, WALL_US);
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
    fn the_escape_check_finds_every_special_byte_wherever_it_is() {
        for len in 0..50 {
            let plain = vec![b'a'; len];
            assert!(!needs_escape(&plain), "{len} plain bytes");
            for at in 0..len {
                for special in [b'"', b'\\', 0, b'\n', 0x1f, 0x7f] {
                    let mut bytes = plain.clone();
                    bytes[at] = special;
                    assert!(needs_escape(&bytes), "{special:#x} at {at} of {len}");
                }
                // Neighbours of the special bytes, and high bytes.
                for (i, near) in [0x20, 0x21, 0x23, 0x5b, 0x5d, 0x7e, 0x80, 0xff]
                    .into_iter()
                    .enumerate()
                {
                    let mut bytes = plain.clone();
                    bytes[at] = near;
                    bytes[(at + i) % len] = 0xff - near;
                    bytes[len - 1 - at] = near;
                    let expected = bytes
                        .iter()
                        .any(|&b| b == b'"' || b == b'\\' || b < 0x20 || b == 0x7f);
                    assert_eq!(needs_escape(&bytes), expected, "{bytes:x?}");
                }
            }
        }
    }

    #[test]
    fn wall_time_is_worked_out_from_the_monotonic_reading() {
        let wall = WallClock {
            unix_us: WALL_US,
            mono_ns: 5_000_000,
        };
        assert_eq!(wall.at(5_000_000), WALL_US);
        assert_eq!(wall.at(7_500_999), WALL_US + 2_500);
        assert_eq!(wall.at(1_000_000), WALL_US - 4_000);
        let now = WallClock::now();
        let system = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros() as u64;
        let derived = now.at(crate::clock::now_ns());
        assert!(
            derived.abs_diff(system) < 1_000_000,
            "{derived} vs {system}"
        );
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
    /// word (none once `go`'s sender is dropped), and sends each batch on.
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
    fn a_written_record_comes_back_blank_for_the_next_request() {
        let (entered, _) = mpsc::channel();
        let (go, go_rx) = mpsc::channel::<()>();
        drop(go); // the gate open for good
        let (tx, written) = mpsc::channel();
        let log = AccessLog::with_output(
            Out::Test(Box::new(Gate {
                entered,
                go: go_rx,
                written: tx,
            })),
            Format::Text,
            Arc::new(Dropped::default()),
            4,
        );
        let first = record("/a-long-path-that-needs-room");
        let address = std::ptr::from_ref::<Record>(&first) as usize;
        log.submit(first);
        let line = written.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(String::from_utf8(line).unwrap().contains("/a-long-path"));

        let again = log.record("other.example", "/b");
        assert_eq!(
            std::ptr::from_ref::<Record>(&again) as usize,
            address,
            "reused"
        );
        assert_eq!(again.target.host(), "other.example");
        assert_eq!(again.target.path(), "/b");
        assert!(again.target.text.capacity() >= "api.example/a-long-path-that-needs-room".len());
        let blank = Record::blank();
        assert_eq!(
            format!(
                "{:?}",
                Record {
                    target: Target::new("other.example", "/b"),
                    ..blank
                }
            ),
            format!(
                "{:?}",
                Record {
                    target: Target::new("other.example", "/b"),
                    ..*again
                }
            )
        );
        // None spare: a new one.
        let fresh = log.record("h", "/");
        assert_ne!(std::ptr::from_ref::<Record>(&fresh) as usize, address);
        log.close();
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
