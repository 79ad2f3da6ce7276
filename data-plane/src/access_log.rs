//! The access log: one line per proxied request, written off the request
//! path.
//!
//! A request takes a [`Record`] when it comes in ([`AccessLog::record`]:
//! the one its thread wrote last, so the request path neither allocates
//! nor frees, and the record is still in the cache) and fills it in as it
//! goes. When the response is done ([`Record::submit`]) the thread formats
//! the line by hand into its own batch (integers through `itoa`, the crate
//! made for allocation-free integer text): no lock, no system call, no
//! hand-off per line. One writer thread per gateway takes every thread's
//! batch each [`BATCH_EVERY`] while traffic flows (and parks when there is
//! none: the first line after a pause wakes it) and writes each with one
//! `write` call. A thread's batch waits in a lock-free slot between lines,
//! where the writer can take it whether or not the thread ever writes
//! again; no runtime hook is needed.
//!
//! Why the worker formats: handing the writer a record per line cost more
//! than the formatting it moved away (each record, written 10 ms before,
//! came back cold from memory to both threads, and the writer took the
//! core once per batch to read them); a line formatted where its fields
//! are still in the cache costs the request a few hundred nanoseconds and
//! the writer only its `write`.
//!
//! When the sink cannot keep up and a thread's batch reaches
//! [`THREAD_LIMIT_BYTES`], a line is dropped and counted
//! (`switchyard_access_log_dropped_total{reason="queue_full"}`) rather than
//! traffic waiting for the disk; a batch the sink refuses is counted as
//! `write_failed`.
//!
//! The lines are those `tracing`'s formatter wrote before (same fields, the
//! same text and JSON shapes, target `switchyard::access`), so readers of
//! the log see no change. Why not `tracing` (with tracing-appender's
//! non-blocking writer): its per-event field visitor, formatter and
//! per-line allocation cost about a third of a proxied request here; this
//! formatting is a few copies into a buffer.
//!
//! The sink is stderr (shared with the rest of the log, each batch written
//! under stderr's lock so that lines never interleave) or a file opened
//! for appending, which [`AccessLog::reopen`] opens again by name (SIGHUP,
//! for logrotate).

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle, Thread};
use std::time::Duration;

use crossbeam_queue::ArrayQueue;

/// The most lines one thread may gather while the writer is busy: at
/// 50k requests/s of 300-byte lines, over 250 ms of traffic while the sink
/// is slow.
pub const THREAD_LIMIT_BYTES: usize = 4 << 20;
/// How long the writer lets lines gather between batches under traffic.
pub const BATCH_EVERY: Duration = Duration::from_millis(10);
/// Room a new record's texts start with: a request ID, a host, a path
/// and three names fit (more grows the buffer, and a spare one keeps it).
const TEXT_ROOM: usize = 256;
/// A reused record's texts keep at most this much room.
const SPARE_TEXT_BYTES: usize = 4096;
/// Records a thread keeps for reuse (more are freed).
const LOCAL_RECORDS: usize = 256;
/// A thread's first batch: 10 ms of 6,000 requests/s (it doubles as
/// needed, up to the limit).
const FIRST_BATCH_BYTES: usize = 16 * 1024;
/// Written batches kept for reuse, and the most room each keeps.
const SPARE_BATCHES: usize = 64;
const SPARE_BATCH_BYTES: usize = 1 << 20;
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
    /// A thread's batch was at its limit: the sink did not keep up.
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

/// A text a line quotes, kept in a [`Record`]'s one buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    RequestId,
    Host,
    Path,
    Route,
    Upstream,
    Backend,
}

const FIELDS: usize = 6;

/// The texts of a line, copied one after another into one buffer the
/// record keeps: the request path neither allocates for them nor hands
/// the writer thread anything it must free or count down (a request ID's
/// or a route name's last reference dropped on the writer's thread would
/// send its memory back to the worker's allocator the slow way).
#[derive(Debug, Default)]
pub struct Texts {
    buf: Vec<u8>,
    /// Where each field is in `buf`; `None`: not set (written `-`).
    spans: [Option<(u32, u32)>; FIELDS],
}

impl Texts {
    /// Set `field` to `value` (a field set twice keeps the last value).
    /// Bytes as they came: the writer escapes them, and writes what is not
    /// UTF-8 as `String::from_utf8_lossy` does.
    pub fn set(&mut self, field: Field, value: &[u8]) {
        let start = self.buf.len();
        self.buf.extend_from_slice(value);
        // Lines are limited far below 4 GiB (a head is at most 64 KiB).
        let span = (start as u32, self.buf.len() as u32);
        self.spans[field as usize] = Some(span);
    }

    pub fn get(&self, field: Field) -> Option<&[u8]> {
        let (start, end) = self.spans[field as usize]?;
        self.buf.get(start as usize..end as usize)
    }

    fn clear(&mut self) {
        if self.buf.capacity() > SPARE_TEXT_BYTES {
            self.buf = Vec::new();
        }
        self.buf.clear();
        self.spans = [None; FIELDS];
    }
}

/// One request's line, filled in as the request goes and sent to the
/// writer by [`Record::submit`].
#[derive(Debug)]
pub struct Record {
    pub texts: Texts,
    pub client: IpAddr,
    pub method: http::Method,
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
    /// The log the record goes to (taken when it is written: a spare
    /// record holds no handle on its log).
    log: Option<AccessLog>,
    /// Set by [`Record::submit`]: when the request ended, on the same
    /// clock.
    ended_ns: u64,
}

impl Record {
    /// An empty record, filled in as the request goes.
    fn blank() -> Self {
        Record {
            texts: Texts::default(),
            client: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            method: http::Method::GET,
            status: 0,
            retries: 0,
            started_ns: 0,
            bytes_in: 0,
            bytes_out: 0,
            complete: false,
            error: None,
            policy: None,
            log: None,
            ended_ns: 0,
        }
    }

    /// Blank again, for reuse; the texts keep their room (up to
    /// [`SPARE_TEXT_BYTES`]).
    fn clear(&mut self) {
        let mut texts = std::mem::take(&mut self.texts);
        texts.clear();
        *self = Record {
            texts,
            ..Record::blank()
        };
    }

    /// Write the line (the request ended now); never waits. Dropped (and
    /// counted) when the writer has not kept up.
    pub fn submit(mut self: Box<Self>) {
        self.ended_ns = crate::clock::now_ns();
        if let Some(log) = self.log.take() {
            log.write(self);
        }
    }
}

/// A handle on a gateway's access log (cheap to clone: each pending record
/// holds one). The writer thread stops once every handle is gone, or at
/// [`AccessLog::close`], after writing what the threads have gathered.
#[derive(Debug, Clone)]
pub struct AccessLog {
    handle: Arc<Handle>,
}

#[derive(Debug)]
struct Handle {
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

/// The lines one thread has written and the writer has not yet taken.
#[derive(Default)]
struct Batch {
    /// Zeroed once; `used` bytes of it hold lines (lines are written over
    /// what is there, so a reused batch is not zeroed again).
    bytes: Vec<u8>,
    used: usize,
    lines: u64,
}

impl std::fmt::Debug for Batch {
    /// Not the bytes (up to megabytes).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("used", &self.used)
            .field("lines", &self.lines)
            .finish_non_exhaustive()
    }
}

/// Where a thread leaves its batch between lines: it takes the batch out
/// to write a line and puts it back; the writer takes it out to write it
/// (and the thread then starts a fresh one). Lock-free: a queue of one.
type Slot = ArrayQueue<Batch>;

#[derive(Debug)]
struct Shared {
    /// Tells this log's part of a thread's state from another log's.
    id: u64,
    format: Format,
    /// Every thread's slot, registered the first time it writes a line
    /// (the lock is taken then and by the writer, never per line).
    slots: Mutex<Vec<Arc<Slot>>>,
    /// Written batches, their room kept, for threads to start again with.
    spare: ArrayQueue<Batch>,
    /// The most a thread's batch may hold while the writer is busy.
    limit: usize,
    /// Microseconds since the Unix epoch at [`crate::clock::now_ns`]'s
    /// zero, as the writer last read the two clocks (a request reads no
    /// wall clock).
    wall_at_zero_us: AtomicU64,
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

    /// Read the wall clock and the monotonic one together again.
    fn set_wall(&self) {
        let unix_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let mono_us = crate::clock::now_ns() / 1000;
        self.wall_at_zero_us
            .store(unix_us.saturating_sub(mono_us), Ordering::Relaxed);
    }

    /// Microseconds since the Unix epoch at the monotonic reading `ns`.
    fn wall_us(&self, ns: u64) -> u64 {
        self.wall_at_zero_us.load(Ordering::Relaxed) + ns / 1000
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wake();
    }
}

thread_local! {
    /// This thread's part of each access log it has written to.
    static LOCAL: RefCell<Vec<Local>> = const { RefCell::new(Vec::new()) };
}

/// A thread's part of one log: where its lines gather, its spare records
/// (the last one written is the next one handed out, still in the cache)
/// and its date.
struct Local {
    id: u64,
    slot: Arc<Slot>,
    /// Boxed: records are handed out boxed, and a spare keeps its box so
    /// that handing it out again allocates nothing.
    #[allow(clippy::vec_box)]
    records: Vec<Box<Record>>,
    clock: DateCache,
}

/// This thread's part of `shared`, registered on first use.
fn local<'a>(locals: &'a mut Vec<Local>, shared: &Shared) -> &'a mut Local {
    if let Some(i) = locals.iter().position(|l| l.id == shared.id) {
        return &mut locals[i];
    }
    // The parts of logs that are gone (only this thread holds the slot).
    locals.retain(|l| Arc::strong_count(&l.slot) > 1);
    let slot = Arc::new(ArrayQueue::new(1));
    lock(&shared.slots).push(Arc::clone(&slot));
    locals.push(Local {
        id: shared.id,
        slot,
        records: Vec::new(),
        clock: DateCache::default(),
    });
    locals.last_mut().expect("just pushed")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
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
            THREAD_LIMIT_BYTES,
        ))
    }

    fn with_output(out: Out, format: Format, dropped: Arc<Dropped>, limit: usize) -> Self {
        static IDS: AtomicU64 = AtomicU64::new(0);
        let shared = Arc::new(Shared {
            id: IDS.fetch_add(1, Ordering::Relaxed),
            format,
            slots: Mutex::new(Vec::new()),
            spare: ArrayQueue::new(SPARE_BATCHES),
            limit,
            wall_at_zero_us: AtomicU64::new(0),
            sleeping: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            reopen: AtomicBool::new(false),
            thread: OnceLock::new(),
            dropped,
        });
        shared.set_wall();
        let writer = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name("access-log".into())
                .spawn(move || Writer { out, warned: None }.run(&shared))
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

    /// A blank record for a request to `host` and `path` (the one this
    /// thread wrote last when it has one: no allocation), written by
    /// [`Record::submit`].
    pub fn record(&self, host: &[u8], path: &str) -> Box<Record> {
        let shared = &*self.handle.shared;
        let spare = LOCAL
            .try_with(|l| local(&mut l.borrow_mut(), shared).records.pop())
            .ok()
            .flatten();
        let mut record = spare.unwrap_or_else(|| {
            let mut new = Box::new(Record::blank());
            new.texts.buf.reserve(TEXT_ROOM);
            new
        });
        record.texts.set(Field::Host, host);
        record.texts.set(Field::Path, path.as_bytes());
        record.log = Some(self.clone());
        record
    }

    /// Write `record`'s line into this thread's batch; never waits. Dropped
    /// (and counted) when the batch is at its limit (the writer has not
    /// kept up).
    fn write(&self, mut record: Box<Record>) {
        let shared = &*self.handle.shared;
        let written = LOCAL.try_with(|l| {
            let mut locals = l.borrow_mut();
            let local = local(&mut locals, shared);
            let mut batch = local
                .slot
                .pop()
                .or_else(|| shared.spare.pop())
                .unwrap_or_default();
            let room = room(&record);
            let end = batch.used + room;
            if end > batch.bytes.len() && end <= shared.limit.max(room) {
                let grown = (batch.bytes.len() * 2)
                    .max(FIRST_BATCH_BYTES)
                    .min(shared.limit);
                batch.bytes.resize(grown.max(end), 0);
            }
            let written = end <= batch.bytes.len();
            if written {
                let wall_us = shared.wall_us(record.ended_ns);
                let buf = &mut batch.bytes[batch.used..];
                batch.used += match shared.format {
                    Format::Text => line::<Text>(buf, &mut local.clock, &record, wall_us),
                    Format::Json => line::<Json>(buf, &mut local.clock, &record, wall_us),
                };
                batch.lines += 1;
            }
            // Only this thread puts a batch in its slot: it is empty.
            let _ = local.slot.push(batch);
            record.clear();
            if local.records.len() < LOCAL_RECORDS {
                local.records.push(record);
            }
            written
        });
        if written != Ok(true) {
            // At its limit, or the thread is exiting.
            shared.dropped.queue_full.fetch_add(1, Ordering::Relaxed);
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

    /// Write what the threads have gathered and stop the writer thread
    /// (blocks until it has: call from a blocking context). Lines
    /// submitted afterwards are not written.
    pub fn close(&self) {
        self.handle.shared.stop.store(true, Ordering::SeqCst);
        self.handle.shared.wake();
        let writer = lock(&self.handle.writer).take();
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
    warned: Option<std::time::Instant>,
}

impl Writer {
    fn run(mut self, shared: &Shared) {
        loop {
            let stopping = shared.stop.load(Ordering::SeqCst);
            if shared.reopen.swap(false, Ordering::SeqCst) {
                self.out.reopen();
            }
            shared.set_wall();
            if self.round(shared) {
                if !stopping {
                    // Traffic: let the next batches gather.
                    thread::sleep(BATCH_EVERY);
                }
                continue;
            }
            if stopping {
                return;
            }
            shared.sleeping.store(true, Ordering::SeqCst);
            // A line written before `sleeping` was seen is taken now; one
            // written after wakes the writer.
            if !self.round(shared)
                && !shared.stop.load(Ordering::SeqCst)
                && !shared.reopen.load(Ordering::SeqCst)
            {
                thread::park_timeout(Duration::from_secs(1));
            }
            shared.sleeping.store(false, Ordering::SeqCst);
        }
    }

    /// Take every thread's batch and write the ones with lines; whether
    /// there were any.
    fn round(&mut self, shared: &Shared) -> bool {
        let mut taken = Vec::new();
        lock(&shared.slots).retain(|slot| {
            taken.extend(slot.pop());
            // A slot only the log holds is an exited thread's: once empty,
            // it is done with.
            Arc::strong_count(slot) > 1 || !slot.is_empty()
        });
        let mut wrote = false;
        for mut batch in taken {
            if batch.used > 0 {
                self.write(&batch, shared);
                wrote = true;
            }
            batch.used = 0;
            batch.lines = 0;
            if batch.bytes.len() <= SPARE_BATCH_BYTES {
                let _ = shared.spare.push(batch);
            }
        }
        wrote
    }

    fn write(&mut self, batch: &Batch, shared: &Shared) {
        if let Err(e) = self.out.write(&batch.bytes[..batch.used]) {
            shared
                .dropped
                .write_failed
                .fetch_add(batch.lines, Ordering::Relaxed);
            if self.warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                self.warned = Some(std::time::Instant::now());
                tracing::warn!(error = %e, lines = batch.lines, "access log write failed: lines dropped");
            }
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

/// Room for everything of a line but its texts: the labels (under 300
/// bytes in either shape), the time (27), the address (at most 45), five
/// numbers (at most 20 digits each) and the duration's point.
const FIXED_ROOM: usize = 512;
/// The most one byte of a text becomes: `\u{7f}` (Debug) or `\u007f`
/// (JSON); a byte of broken UTF-8 becomes U+FFFD (3 bytes).
const ESCAPED_ROOM: usize = 6;

/// At most how long `r`'s line is.
fn room(r: &Record) -> usize {
    let quoted = FIELDS + 2;
    let texts =
        r.texts.buf.len() + r.error.as_ref().map_or(0, String::len) + r.policy.map_or(0, str::len);
    FIXED_ROOM + r.method.as_str().len() + 2 * quoted + ESCAPED_ROOM * texts
}

/// Writes into a slice with room for what it is given ([`room`]): each
/// append is a copy and a bounds check, not a call to grow a vector.
struct Cursor<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl Cursor<'_> {
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        let end = self.at + bytes.len();
        self.buf[self.at..end].copy_from_slice(bytes);
        self.at = end;
    }

    #[inline]
    fn byte(&mut self, b: u8) {
        self.buf[self.at] = b;
        self.at += 1;
    }

    /// `value`'s last `WIDTH` digits, zero-padded (constant divisions: a
    /// division by a variable power of ten costs several times as much).
    #[inline]
    fn digits<const WIDTH: usize>(&mut self, mut value: u64) {
        let mut text = [b'0'; WIDTH];
        for digit in text.iter_mut().rev() {
            *digit = b'0' + (value % 10) as u8;
            value /= 10;
        }
        self.put(&text);
    }

    #[inline]
    fn number(&mut self, value: u64) {
        self.put(itoa::Buffer::new().format(value).as_bytes());
    }
}

/// `r`'s line, ended at `wall_us` (microseconds since the Unix epoch),
/// written at the start of `buf` (which has [`room`] for it); how long it
/// is.
fn line<S: Shape>(buf: &mut [u8], clock: &mut DateCache, r: &Record, wall_us: u64) -> usize {
    let out = &mut Cursor { buf, at: 0 };
    // Nearly always every text is printable ASCII with nothing to escape:
    // one look at all of them, rather than one per text.
    let plain = is_plain(&r.texts.buf);
    let text = |out: &mut Cursor<'_>, label: &[u8], value: Option<&[u8]>, none: &[u8]| {
        out.put(label);
        let value = value.unwrap_or(none);
        if plain {
            out.byte(b'"');
            out.put(value);
            out.byte(b'"');
        } else {
            quoted(out, &String::from_utf8_lossy(value), S::ESCAPE);
        }
    };
    let number = |out: &mut Cursor<'_>, label: &[u8], value: u64| {
        out.put(label);
        out.number(value);
    };
    out.put(S::LABELS.start);
    clock.write(out, wall_us);
    let t = &r.texts;
    text(out, S::LABELS.request_id, t.get(Field::RequestId), b"");
    out.put(S::LABELS.client);
    ip(out, r.client);
    out.put(S::LABELS.method);
    out.put(r.method.as_str().as_bytes());
    text(out, S::LABELS.host, t.get(Field::Host), b"");
    text(out, S::LABELS.path, t.get(Field::Path), b"");
    text(out, S::LABELS.route, t.get(Field::Route), b"-");
    text(out, S::LABELS.upstream, t.get(Field::Upstream), b"-");
    text(out, S::LABELS.backend, t.get(Field::Backend), b"-");
    number(out, S::LABELS.status, u64::from(r.status));
    // Milliseconds to the microsecond.
    let us = r.ended_ns.saturating_sub(r.started_ns) / 1000;
    number(out, S::LABELS.duration_ms, us / 1000);
    out.byte(b'.');
    out.digits::<3>(us % 1000);
    number(out, S::LABELS.bytes_in, r.bytes_in);
    number(out, S::LABELS.bytes_out, r.bytes_out);
    number(out, S::LABELS.retries, u64::from(r.retries));
    out.put(S::LABELS.complete);
    out.put(if r.complete { b"true" } else { b"false" });
    if let Some(error) = &r.error {
        out.put(S::LABELS.error);
        quoted(out, error, S::ESCAPE);
    }
    if let Some(policy) = r.policy {
        out.put(S::LABELS.policy);
        quoted(out, policy, S::ESCAPE);
    }
    out.put(S::LABELS.end);
    out.at
}

/// An address as `Display` writes it (IPv4 without the formatter).
fn ip(out: &mut Cursor<'_>, addr: IpAddr) {
    match addr {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            let mut text = [0u8; 15];
            let mut n = 0;
            for (i, octet) in [a, b, c, d].into_iter().enumerate() {
                if i > 0 {
                    text[n] = b'.';
                    n += 1;
                }
                if octet >= 100 {
                    text[n] = b'0' + octet / 100;
                    n += 1;
                }
                if octet >= 10 {
                    text[n] = b'0' + octet / 10 % 10;
                    n += 1;
                }
                text[n] = b'0' + octet % 10;
                n += 1;
            }
            out.put(&text[..n]);
        }
        IpAddr::V6(_) => {
            let mut text = Vec::with_capacity(45);
            let _ = write!(text, "{addr}");
            out.put(&text);
        }
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
fn quoted(out: &mut Cursor<'_>, value: &str, escape: Escape) {
    out.byte(b'"');
    let bytes = value.as_bytes();
    if is_plain(bytes) {
        out.put(bytes);
        out.byte(b'"');
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
        out.put(&bytes[plain..i]);
        plain = i + 1;
        if special.is_empty() {
            let hex = |d: u8| b"0123456789abcdef"[usize::from(d)];
            match escape {
                Escape::Json => {
                    out.put(b"\\u00");
                    out.byte(hex(b >> 4));
                    out.byte(hex(b & 0xf));
                }
                Escape::Debug => {
                    out.put(b"\\u{");
                    if b >= 0x10 {
                        out.byte(hex(b >> 4));
                    }
                    out.byte(hex(b & 0xf));
                    out.byte(b'}');
                }
            }
        } else {
            out.put(special);
        }
    }
    out.put(&bytes[plain..]);
    out.byte(b'"');
}

/// Whether every byte is printable ASCII other than a quote or a
/// backslash: written as it is. Eight bytes at a time, as one integer
/// (the last eight overlapping the ones before): a byte-at-a-time scan
/// costs several times as much.
fn is_plain(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    /// The tests at once: each byte's high bit says whether it is below
    /// 0x20, one of the three, or 0x80 and above (one branch per word).
    fn special(x: u64) -> bool {
        let low = x.wrapping_sub(ONES * 0x20) & !x;
        let eq = |c: u8| {
            let y = x ^ (ONES * u64::from(c));
            y.wrapping_sub(ONES) & !y
        };
        (low | eq(b'"') | eq(b'\\') | eq(0x7f) | x) & HIGHS != 0
    }
    let word = |at: usize| u64::from_ne_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    if bytes.len() < 8 {
        return !bytes
            .iter()
            .any(|&b| b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b));
    }
    let last = bytes.len() - 8;
    !((0..last).step_by(8).any(|at| special(word(at))) || special(word(last)))
}

/// RFC 3339 UTC timestamps to the microsecond, the date and time of day
/// worked out once per second.
#[derive(Default)]
struct DateCache {
    second: Option<u64>,
    text: [u8; 19],
}

impl DateCache {
    fn write(&mut self, out: &mut Cursor<'_>, unix_us: u64) {
        let second = unix_us / 1_000_000;
        if self.second != Some(second) {
            self.second = Some(second);
            self.text = date_time(second);
        }
        out.put(&self.text);
        out.byte(b'.');
        out.digits::<6>(unix_us % 1_000_000);
        out.byte(b'Z');
    }
}

/// `YYYY-MM-DDTHH:MM:SS` of a Unix time (UTC).
fn date_time(unix: u64) -> [u8; 19] {
    let (y, m, d) = civil_from_days((unix / 86_400) as i64);
    let s = unix % 86_400;
    let mut text = [0u8; 19];
    let out = &mut Cursor {
        buf: &mut text,
        at: 0,
    };
    out.digits::<4>(y.clamp(0, 9999) as u64);
    out.byte(b'-');
    out.digits::<2>(m);
    out.byte(b'-');
    out.digits::<2>(d);
    out.byte(b'T');
    out.digits::<2>(s / 3600);
    out.byte(b':');
    out.digits::<2>(s / 60 % 60);
    out.byte(b':');
    out.digits::<2>(s % 60);
    text
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
        fill(Box::new(Record::blank()), path)
    }

    /// `r` filled in as a request would.
    fn fill(mut r: Box<Record>, path: &str) -> Box<Record> {
        r.texts.set(Field::Host, b"api.example");
        r.texts.set(Field::Path, path.as_bytes());
        r.texts.set(Field::RequestId, b"req-1");
        r.client = "192.0.2.7".parse().unwrap();
        r.method = http::Method::POST;
        r.texts.set(Field::Route, b"r");
        r.texts.set(Field::Upstream, b"u");
        r.texts.set(Field::Backend, b"http://10.0.0.1:80");
        r.status = 502;
        r.retries = 1;
        r.bytes_in = 5;
        r.bytes_out = 1234;
        r.complete = true;
        r.error = Some("connect to http://10.0.0.1:80: refused".into());
        r.ended_ns = 1_234_567;
        r
    }

    /// `r`'s line as the writer writes it.
    fn render<S: Shape>(r: &Record) -> Vec<u8> {
        let mut buf = vec![0; room(r)];
        let len = line::<S>(&mut buf, &mut DateCache::default(), r, WALL_US);
        buf.truncate(len);
        buf
    }

    /// What `write` puts through a cursor (up to 1 KiB).
    fn written(write: impl FnOnce(&mut Cursor<'_>)) -> Vec<u8> {
        let mut buf = vec![0; 1024];
        let mut out = Cursor {
            buf: &mut buf,
            at: 0,
        };
        write(&mut out);
        let len = out.at;
        buf.truncate(len);
        buf
    }

    #[test]
    fn json_lines_are_tracing_events_with_every_field() {
        let out = render::<Json>(&record("/a\"b\\c\n\u{1}é"));
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
        r.texts.spans[Field::Route as usize] = None;
        assert_eq!(
            String::from_utf8(render::<Text>(&r)).unwrap(),
            "2026-12-05T23:49:45.000042Z  INFO switchyard::access: request_id=\"req-1\" \
             client=192.0.2.7 method=POST host=\"api.example\" path=\"/x y\\\"\\n\" route=\"-\" \
             upstream=\"u\" backend=\"http://10.0.0.1:80\" status=502 duration_ms=1.234 \
             bytes_in=5 bytes_out=1234 retries=1 complete=true policy=\"rate_limit\"\n"
        );
        // Control characters as Debug writes them.
        let out = written(|out| quoted(out, "a\u{1}\u{1b}\u{7f}", Escape::Debug));
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
            assert_eq!(written(|out| ip(out, addr)), addr.to_string().as_bytes());
        }
    }

    #[test]
    fn texts_that_are_not_utf8_are_written_as_lossy_text() {
        let mut r = record("/p\u{e9}");
        r.texts.set(Field::Host, b"h\xffst\x01");
        let v: serde_json::Value = serde_json::from_slice(&render::<Json>(&r)).unwrap();
        assert_eq!(v["fields"]["host"], "h\u{fffd}st\u{1}");
        assert_eq!(v["fields"]["path"], "/p\u{e9}");
        let text = String::from_utf8(render::<Text>(&r)).unwrap();
        // As `Debug` writes them: U+FFFD is printable, U+0001 is not.
        let expected = "host=\"h\u{fffd}st\\u{1}\" path=\"/p\u{e9}\"";
        assert!(text.contains(expected), "{text}");
    }

    #[test]
    fn the_longest_lines_fit_the_room_worked_out_for_them() {
        // Every text at its most escaped, every number at its longest.
        for worst in [&b"\x01"[..], b"\x7f", b"\xff", b"\""] {
            let long = worst.repeat(300);
            let mut r = Box::new(Record::blank());
            for field in [
                Field::RequestId,
                Field::Host,
                Field::Path,
                Field::Route,
                Field::Upstream,
                Field::Backend,
            ] {
                r.texts.set(field, &long);
            }
            r.client = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"
                .parse()
                .unwrap();
            r.method = http::Method::from_bytes(&[b'M'; 100]).unwrap();
            r.status = u16::MAX;
            r.retries = u32::MAX;
            r.bytes_in = u64::MAX;
            r.bytes_out = u64::MAX;
            r.started_ns = 0;
            r.ended_ns = u64::MAX;
            r.error = Some(String::from_utf8_lossy(&long).into_owned());
            r.policy = Some("rate_limit");
            let json = render::<Json>(&r);
            let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
            let lossy = String::from_utf8_lossy(&long);
            assert_eq!(v["fields"]["backend"], *lossy);
            assert_eq!(v["fields"]["error"], *lossy);
            assert!(render::<Text>(&r).len() <= room(&r));
        }
    }

    #[test]
    fn the_escape_check_finds_every_special_byte_wherever_it_is() {
        for len in 0..50 {
            let plain = vec![b'a'; len];
            assert!(is_plain(&plain), "{len} plain bytes");
            for at in 0..len {
                for special in [b'"', b'\\', 0, b'\n', 0x1f, 0x7f, 0x80, 0xc3, 0xff] {
                    let mut bytes = plain.clone();
                    bytes[at] = special;
                    assert!(!is_plain(&bytes), "{special:#x} at {at} of {len}");
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
                        .all(|&b| b != b'"' && b != b'\\' && (0x20..0x7f).contains(&b));
                    assert_eq!(is_plain(&bytes), expected, "{bytes:x?}");
                }
            }
        }
    }

    #[test]
    fn wall_time_is_worked_out_from_the_monotonic_reading() {
        let log = AccessLog::with_output(
            Out::Test(Box::new(io::sink())),
            Format::Text,
            Arc::default(),
            THREAD_LIMIT_BYTES,
        );
        let shared = &log.handle.shared;
        shared
            .wall_at_zero_us
            .store(WALL_US - 5_000, Ordering::Relaxed);
        assert_eq!(shared.wall_us(5_000_000), WALL_US);
        assert_eq!(shared.wall_us(7_500_999), WALL_US + 2_500);
        assert_eq!(shared.wall_us(1_000_000), WALL_US - 4_000);
        shared.set_wall();
        let system = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros() as u64;
        let derived = shared.wall_us(crate::clock::now_ns());
        assert!(
            derived.abs_diff(system) < 1_000_000,
            "{derived} vs {system}"
        );
        log.close();
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
        // A line as long as those written below, and the room one needs:
        // the thread's batch may hold four of them.
        let more = |log: &AccessLog| {
            let mut r = fill(log.record(b"", ""), "/more");
            r.started_ns = crate::clock::now_ns();
            r
        };
        let sample = fill(Box::new(Record::blank()), "/more");
        let len = render::<Json>(&sample).len();
        let limit = 3 * len + room(&sample);
        let log = AccessLog::with_output(
            Out::Test(Box::new(Gate {
                entered: entered_tx,
                go: go_rx,
                written: written_tx,
            })),
            Format::Json,
            Arc::clone(&dropped),
            limit,
        );
        // The writer takes the first line and waits at the gate with it.
        fill(log.record(b"", ""), "/first").submit();
        entered
            .recv_timeout(Duration::from_secs(5))
            .expect("the writer writes the first line");
        for _ in 0..100 {
            more(&log).submit(); // returns at once, the sink stuck
        }
        assert_eq!(dropped.queue_full.load(Ordering::Relaxed), 96);
        drop(go); // open the gate for good
        log.close();
        let lines: usize = written
            .try_iter()
            .map(|b| b.iter().filter(|c| **c == b'\n').count())
            .sum();
        assert_eq!(lines, 5, "the first line and the 4 the batch held");
        assert_eq!(dropped.write_failed.load(Ordering::Relaxed), 0);
    }

    /// A text log through a [`Gate`] open for good: each batch it writes
    /// comes out of the receiver.
    fn open_log() -> (AccessLog, mpsc::Receiver<Vec<u8>>) {
        let (entered, _) = mpsc::channel();
        let (go, go_rx) = mpsc::channel::<()>();
        drop(go);
        let (written_tx, written) = mpsc::channel();
        let log = AccessLog::with_output(
            Out::Test(Box::new(Gate {
                entered,
                go: go_rx,
                written: written_tx,
            })),
            Format::Text,
            Arc::new(Dropped::default()),
            THREAD_LIMIT_BYTES,
        );
        (log, written)
    }

    #[test]
    fn lines_from_many_threads_are_all_written_even_after_the_threads_end() {
        let (log, written) = open_log();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let log = log.clone();
                thread::spawn(move || {
                    for i in 0..500 {
                        fill(log.record(b"", ""), &format!("/{t}/{i}")).submit();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // The threads are gone; their last lines are still taken.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut text = String::new();
        while text.lines().count() < 2000 {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let batch = written.recv_timeout(left).expect("all 2000 lines");
            text.push_str(std::str::from_utf8(&batch).unwrap());
        }
        for t in 0..4 {
            let paths: Vec<_> = text
                .lines()
                .filter_map(|l| l.split(" path=\"").nth(1))
                .filter_map(|p| p.strip_prefix(&format!("/{t}/")))
                .map(|p| p.split('"').next().unwrap().parse::<usize>().unwrap())
                .collect();
            assert_eq!(
                paths,
                (0..500).collect::<Vec<_>>(),
                "thread {t}'s lines in order"
            );
        }
        log.close();
        assert_eq!(
            log.handle.shared.dropped.queue_full.load(Ordering::Relaxed),
            0
        );
    }

    #[test]
    fn a_written_record_comes_back_blank_for_the_next_request() {
        let (log, written) = open_log();
        let first = fill(log.record(b"", ""), "/a-long-path-that-needs-room");
        let address = std::ptr::from_ref::<Record>(&first) as usize;
        first.submit();
        let line = written.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(String::from_utf8(line).unwrap().contains("/a-long-path"));

        let mut again = log.record(b"other.example", "/b");
        assert_eq!(
            std::ptr::from_ref::<Record>(&again) as usize,
            address,
            "reused"
        );
        let texts = std::mem::take(&mut again.texts);
        assert_eq!(texts.get(Field::Host), Some(&b"other.example"[..]));
        assert_eq!(texts.get(Field::Path), Some(&b"/b"[..]));
        for field in [
            Field::RequestId,
            Field::Route,
            Field::Upstream,
            Field::Backend,
        ] {
            assert_eq!(texts.get(field), None, "{field:?}");
        }
        assert!(texts.buf.capacity() >= "api.example/a-long-path-that-needs-roomreq-1".len());
        assert!(again.log.take().is_some(), "knows its log");
        assert_eq!(format!("{:?}", Record::blank()), format!("{again:?}"));
        // None spare: a new one.
        let fresh = log.record(b"h", "/");
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
        fill(log.record(b"", ""), "/one").submit();
        wait_for(&path, 1);
        let rotated = dir.join("access.log.1");
        std::fs::rename(&path, &rotated).unwrap();
        log.reopen();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !path.exists() {
            assert!(std::time::Instant::now() < deadline, "not reopened");
            thread::sleep(Duration::from_millis(5));
        }
        fill(log.record(b"", ""), "/two").submit();
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
