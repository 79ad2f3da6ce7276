//! A load client for one thing: requests at a steady rate, released every
//! 100 µs rather than in bursts, with each request's latency counted from
//! the time it was due (bench/run.sh's fixed-rate mode).
//!
//! Why not oha: `oha -q` schedules request i at `start + i/rate` with
//! `tokio::time::sleep_until`, and tokio's timer has a 1 ms resolution, so
//! at 26,000 requests/s it sends a burst of ~26 requests each millisecond.
//! With its latency correction a request's clock starts at its due time,
//! so the direct backend's median was ~770 µs of which ~500 µs was the
//! wait for the next millisecond, and a proxy's p99 was the time to drain
//! a 26-request burst through two cores: a measure of the generator's
//! timer, not of a steady rate. wrk has no rate; hey (Debian) is closed
//! loop (a worker waits for its response before it sends again); wrk2 is
//! not packaged for Debian or published on a registry.
//!
//! How: one thread (a current-thread runtime, so `taskset` pins it to one
//! core). A periodic `timerfd` (nanosecond resolution, the thread's timer
//! slack set to 1 ns) ticks every `-t` µs (100 by default); tick j is due
//! at `start + j * tick` and releases the requests due by then, ~2.6 of
//! them at 26,000/s. A timer per request was tried: it spent ~22 µs of the
//! load core per request (the core the backend shares), 100 µs ticks
//! ~17 µs. Each released request goes to an idle one of the `-c`
//! keep-alive connections opened before the start; when none is idle it
//! waits in a queue, and that wait counts in its latency (open loop: a
//! slow server does not slow the schedule; latency is counted from the
//! tick the request was due at, like oha's `--latency-correction`). Each
//! connection sends `GET PATH HTTP/1.1`, reads the response head and its
//! Content-Length body, and records `now - due`. After `-d` seconds no
//! request is due any more; the ones still queued or in flight get 2 s to
//! finish.
//!
//! Prints one JSON object: requests (2xx), errors, non2xx, unsent (still
//! queued at the end), unfinished (sent, unanswered at the end), rps,
//! latency percentiles in µs (`p50_us` ...), and `lag_p99_us`, how late
//! the dispatcher itself woke for a tick at the 99th percentile (per
//! request), which says whether the client kept its schedule.
//!
//! Usage: bench-rate-load -q RATE -c CONNS -d SECONDS [-t TICK_US] http://HOST:PORT/PATH

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// How long requests still queued or in flight at the end may take.
const GRACE: Duration = Duration::from_secs(2);
/// From the connections' set-up to the first tick.
const FIRST: Duration = Duration::from_millis(10);

struct Args {
    rate: f64,
    conns: usize,
    duration: Duration,
    tick: Duration,
    host: String,
    port: u16,
    path: String,
}

fn main() {
    let args = match parse(std::env::args().skip(1).collect()) {
        Ok(args) => args,
        Err(e) => {
            eprintln!(
                "bench-rate-load: {e}\nusage: bench-rate-load -q RATE -c CONNS -d SECONDS [-t TICK_US] http://HOST:PORT/PATH"
            );
            std::process::exit(2);
        }
    };
    // A sleeping thread's timers may fire up to its slack late (50 µs by
    // default); a request is due at its own microsecond.
    // SAFETY: PR_SET_TIMERSLACK takes an integer and touches only this thread.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1, 0, 0, 0) };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let local = tokio::task::LocalSet::new();
    let totals = match local.block_on(&rt, run(args)) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("bench-rate-load: {e}");
            std::process::exit(1);
        }
    };
    let lat = sorted(totals.latencies_us);
    let lag = sorted(totals.lags_us);
    println!(
        "{{\"requests\":{},\"errors\":{},\"non2xx\":{},\"unsent\":{},\"unfinished\":{},\"rps\":{:.1},\
         \"p50_us\":{},\"p90_us\":{},\"p99_us\":{},\"p999_us\":{},\"max_us\":{},\"lag_p99_us\":{}}}",
        totals.ok,
        totals.errors,
        totals.non2xx,
        totals.unsent,
        totals.unfinished,
        totals.ok as f64 / totals.elapsed.as_secs_f64(),
        pct(&lat, 0.5),
        pct(&lat, 0.9),
        pct(&lat, 0.99),
        pct(&lat, 0.999),
        lat.last().copied().unwrap_or(0),
        pct(&lag, 0.99),
    );
}

fn sorted(mut v: Vec<u64>) -> Vec<u64> {
    v.sort_unstable();
    v
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn parse(args: Vec<String>) -> Result<Args, String> {
    let (mut rate, mut conns, mut secs, mut tick_us, mut url) =
        (None, 64usize, 10u64, 100u64, None);
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let mut value = |what: &str| it.next().ok_or(format!("{a} needs {what}"));
        match a.as_str() {
            "-q" => {
                rate = Some(
                    value("a rate")?
                        .parse::<f64>()
                        .map_err(|_| "-q needs a number")?,
                )
            }
            "-c" => {
                conns = value("a number")?
                    .parse()
                    .map_err(|_| "-c needs a number")?
            }
            "-d" => secs = value("seconds")?.parse().map_err(|_| "-d needs seconds")?,
            "-t" => {
                tick_us = value("microseconds")?
                    .parse()
                    .map_err(|_| "-t needs microseconds")?
            }
            _ if a.starts_with("http://") => url = Some(a),
            _ => return Err(format!("unknown argument {a}")),
        }
    }
    let rate = rate.ok_or("-q RATE is required")?;
    if !(rate.is_finite() && rate > 0.0) || conns == 0 || secs == 0 || tick_us == 0 {
        return Err("-q, -c, -d and -t must be positive".into());
    }
    let url = url.ok_or("no http:// URL")?;
    let rest = &url["http://".len()..];
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (host, port) = authority.rsplit_once(':').ok_or("the URL needs a port")?;
    let port = port.parse().map_err(|_| "the URL's port is not a number")?;
    let path = if path.is_empty() { "/" } else { path };
    Ok(Args {
        rate,
        conns,
        duration: Duration::from_secs(secs),
        tick: Duration::from_micros(tick_us),
        host: host.to_string(),
        port,
        path: path.to_string(),
    })
}

/// What the connections share: the due times not yet taken, and the counts.
#[derive(Default)]
struct Shared {
    due: RefCell<VecDeque<Instant>>,
    ready: Notify,
    done: Cell<bool>,
    in_flight: Cell<u64>,
    ok: Cell<u64>,
    errors: Cell<u64>,
    non2xx: Cell<u64>,
    latencies_us: RefCell<Vec<u64>>,
}

struct Totals {
    ok: u64,
    errors: u64,
    non2xx: u64,
    latencies_us: Vec<u64>,
    lags_us: Vec<u64>,
    unsent: usize,
    unfinished: u64,
    elapsed: Duration,
}

async fn run(args: Args) -> io::Result<Totals> {
    let addr = (args.host.clone(), args.port);
    let request: Rc<[u8]> = format!(
        "GET {} HTTP/1.1\r\nHost: {}:{}\r\n\r\n",
        args.path, args.host, args.port
    )
    .into_bytes()
    .into();
    let total = (args.rate * args.duration.as_secs_f64()) as u64;
    let shared = Rc::new(Shared {
        latencies_us: RefCell::new(Vec::with_capacity(total as usize)),
        ..Shared::default()
    });
    let mut streams = Vec::with_capacity(args.conns);
    for _ in 0..args.conns {
        let stream = TcpStream::connect(&addr).await?;
        stream.set_nodelay(true)?;
        streams.push(stream);
    }
    let workers: Vec<_> = streams
        .into_iter()
        .map(|s| {
            let (shared, request, addr) = (Rc::clone(&shared), Rc::clone(&request), addr.clone());
            tokio::task::spawn_local(connection(s, addr, request, shared))
        })
        .collect();

    // Tick j is due at `start + j * tick` and sends the requests due by
    // then: request i belongs to tick ceil(i / per_tick).
    let per_tick = args.rate * args.tick.as_secs_f64();
    let start = Instant::now() + FIRST;
    let timer = Timer::periodic(FIRST, args.tick)?;
    let mut lags_us = Vec::with_capacity(total as usize);
    let (mut ticks, mut sent) = (0u64, 0u64);
    while sent < total {
        ticks += timer.wait().await?;
        let last = ticks - 1;
        let due = start + args.tick * last as u32;
        let lag = Instant::now().saturating_duration_since(due).as_micros() as u64;
        let upto = ((last as f64 * per_tick) as u64 + 1).min(total);
        let mut queue = shared.due.borrow_mut();
        for i in sent..upto {
            let tick = (i as f64 / per_tick).ceil() as u32;
            queue.push_back(start + args.tick * tick);
            lags_us.push(lag);
            shared.ready.notify_one();
        }
        sent = upto;
    }
    let end = Instant::now();
    shared.done.set(true);
    shared.ready.notify_waiters();
    let _ = tokio::time::timeout(GRACE, async {
        for w in workers {
            let _ = w.await;
        }
    })
    .await;
    let unsent = shared.due.borrow().len();
    Ok(Totals {
        ok: shared.ok.get(),
        errors: shared.errors.get(),
        non2xx: shared.non2xx.get(),
        latencies_us: shared.latencies_us.take(),
        lags_us,
        unsent,
        unfinished: shared.in_flight.get(),
        elapsed: end - start,
    })
}

/// One keep-alive connection: takes due times until the run is over.
async fn connection(
    mut stream: TcpStream,
    addr: (String, u16),
    request: Rc<[u8]>,
    shared: Rc<Shared>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let due = loop {
            if let Some(due) = shared.due.borrow_mut().pop_front() {
                break Some(due);
            }
            if shared.done.get() {
                break None;
            }
            shared.ready.notified().await;
        };
        let Some(due) = due else { return };
        shared.in_flight.set(shared.in_flight.get() + 1);
        let outcome = exchange(&mut stream, &request, &mut buf).await;
        shared.in_flight.set(shared.in_flight.get() - 1);
        match outcome {
            Ok(true) => {
                shared.ok.set(shared.ok.get() + 1);
                let us = Instant::now().duration_since(due).as_micros() as u64;
                shared.latencies_us.borrow_mut().push(us);
            }
            Ok(false) => shared.non2xx.set(shared.non2xx.get() + 1),
            Err(_) => {
                shared.errors.set(shared.errors.get() + 1);
                // A fresh connection for the next request; none: the
                // requests left to this one go to the others.
                match TcpStream::connect(&addr).await {
                    Ok(s) => {
                        let _ = s.set_nodelay(true);
                        stream = s;
                    }
                    Err(_) => return,
                }
            }
        }
    }
}

/// One request and its whole response; `Ok(true)` for a 2xx.
async fn exchange(stream: &mut TcpStream, request: &[u8], buf: &mut Vec<u8>) -> io::Result<bool> {
    stream.write_all(request).await?;
    let mut have = 0;
    let mut need = None;
    loop {
        if have == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        let n = stream.read(&mut buf[have..]).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        have += n;
        if need.is_none() {
            need = head_and_body_len(&buf[..have])?;
        }
        match need {
            Some(n) if have == n => return Ok(buf.starts_with(b"HTTP/1.1 2")),
            // Nothing was pipelined: more than one response is a fault.
            Some(n) if have > n => return Err(io::ErrorKind::InvalidData.into()),
            _ => {}
        }
    }
}

/// The length of head + Content-Length body, once the head is complete.
fn head_and_body_len(buf: &[u8]) -> io::Result<Option<usize>> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let end = end + 4;
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| io::ErrorKind::InvalidData)?;
    let mut len = None;
    for line in head.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        if k.eq_ignore_ascii_case("content-length") {
            len = Some(
                v.trim()
                    .parse::<usize>()
                    .map_err(|_| io::ErrorKind::InvalidData)?,
            );
        } else if k.eq_ignore_ascii_case("transfer-encoding") {
            // Not needed by the bench's peers: say so rather than misread.
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "chunked response",
            ));
        }
    }
    Ok(Some(end + len.unwrap_or(0)))
}

/// A periodic `timerfd` on the runtime's reactor.
struct Timer(AsyncFd<OwnedFd>);

impl Timer {
    /// Fires first after `first`, then every `every`.
    fn periodic(first: Duration, every: Duration) -> io::Result<Timer> {
        // SAFETY: plain syscall; the fd is checked and then owned.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let spec = libc::itimerspec {
            it_interval: timespec(every),
            it_value: timespec(first),
        };
        // SAFETY: a valid timerfd and a valid itimerspec.
        if unsafe { libc::timerfd_settime(fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the OwnedFd keeps the descriptor open for as long as the
        // AsyncFd holds it, and it is not closed or replaced meanwhile.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)?;
        Ok(Timer(fd))
    }

    /// Waits for the next tick; how many ticks passed since the last call.
    async fn wait(&self) -> io::Result<u64> {
        loop {
            let mut guard = self.0.readable().await?;
            let mut expirations = [0u8; 8];
            // SAFETY: reads 8 bytes into an 8-byte buffer.
            let n = unsafe {
                libc::read(
                    self.0.as_raw_fd(),
                    expirations.as_mut_ptr().cast(),
                    expirations.len(),
                )
            };
            if n == 8 {
                return Ok(u64::from_ne_bytes(expirations));
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::WouldBlock {
                return Err(e);
            }
            guard.clear_ready();
        }
    }
}

fn timespec(d: Duration) -> libc::timespec {
    libc::timespec {
        tv_sec: d.as_secs() as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    }
}
