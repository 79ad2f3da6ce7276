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
//! Several URLs, interleaved (`bench/tail.sh`): with more than one URL the
//! same schedule is cut into slices of `-s` ms (100 by default), and each
//! slice's requests go to one URL. Each cycle of slices gives every URL
//! one slice, in an order shuffled anew each cycle (a fixed order would
//! always put the same peer after the same other one, on caches that other
//! one just used). Each URL has its own `-c` connections, opened before the
//! start. So the peers are measured in the same seconds at the same rate:
//! a stall of the host's CPUs, which on a shared machine sets a run's p99,
//! falls on whichever peer's slice it meets, and over hundreds of slices on
//! each alike. Prints one JSON object with `targets`, one object as above
//! per URL (its `rps` counted over its own slices), and `lag_p99_us`.
//!
//! Usage: bench-rate-load -q RATE -c CONNS -d SECONDS [-t TICK_US] [-s SLICE_MS] URL...
//!        (URL: http://HOST:PORT/PATH)

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
    slice: Duration,
    targets: Vec<Target>,
}

struct Target {
    url: String,
    host: String,
    port: u16,
    path: String,
}

const USAGE: &str = "usage: bench-rate-load -q RATE -c CONNS -d SECONDS [-t TICK_US] [-s SLICE_MS] http://HOST:PORT/PATH...";

fn main() {
    let args = match parse(std::env::args().skip(1).collect()) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("bench-rate-load: {e}\n{USAGE}");
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
    let urls: Vec<String> = args.targets.iter().map(|t| t.url.clone()).collect();
    let slice_ms = args.slice.as_millis();
    let run = match local.block_on(&rt, run(args)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bench-rate-load: {e}");
            std::process::exit(1);
        }
    };
    let lag_p99 = pct(&sorted(run.lags_us), 0.99);
    if let [one] = &run.targets[..] {
        println!("{{{},\"lag_p99_us\":{lag_p99}}}", fields(one));
    } else {
        let targets: Vec<String> = run
            .targets
            .iter()
            .zip(&urls)
            .map(|(t, url)| {
                format!(
                    "{{\"url\":\"{url}\",\"slices\":{},{}}}",
                    t.slices,
                    fields(t)
                )
            })
            .collect();
        println!(
            "{{\"slice_ms\":{slice_ms},\"lag_p99_us\":{lag_p99},\"targets\":[{}]}}",
            targets.join(",")
        );
    }
}

/// One target's counts and latency percentiles, as JSON fields.
fn fields(t: &Totals) -> String {
    let lat = sorted(t.latencies_us.clone());
    format!(
        "\"requests\":{},\"errors\":{},\"non2xx\":{},\"unsent\":{},\"unfinished\":{},\"rps\":{:.1},\
         \"p50_us\":{},\"p90_us\":{},\"p99_us\":{},\"p999_us\":{},\"max_us\":{}",
        t.ok,
        t.errors,
        t.non2xx,
        t.unsent,
        t.unfinished,
        t.ok as f64 / t.served.as_secs_f64().max(1e-9),
        pct(&lat, 0.5),
        pct(&lat, 0.9),
        pct(&lat, 0.99),
        pct(&lat, 0.999),
        lat.last().copied().unwrap_or(0),
    )
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
    let (mut rate, mut conns, mut secs, mut tick_us, mut slice_ms) =
        (None, 64usize, 10u64, 100u64, 100u64);
    let mut targets = Vec::new();
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
            "-s" => {
                slice_ms = value("milliseconds")?
                    .parse()
                    .map_err(|_| "-s needs milliseconds")?
            }
            _ if a.starts_with("http://") => targets.push(target(a)?),
            _ => return Err(format!("unknown argument {a}")),
        }
    }
    let rate = rate.ok_or("-q RATE is required")?;
    if !(rate.is_finite() && rate > 0.0) || conns == 0 || secs == 0 || tick_us == 0 || slice_ms == 0
    {
        return Err("-q, -c, -d, -t and -s must be positive".into());
    }
    if targets.is_empty() {
        return Err("no http:// URL".into());
    }
    if slice_ms * 1000 < tick_us {
        return Err("-s (ms) must be at least one tick (-t, µs)".into());
    }
    Ok(Args {
        rate,
        conns,
        duration: Duration::from_secs(secs),
        tick: Duration::from_micros(tick_us),
        slice: Duration::from_millis(slice_ms),
        targets,
    })
}

fn target(url: String) -> Result<Target, String> {
    let rest = &url["http://".len()..];
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (host, port) = authority
        .rsplit_once(':')
        .ok_or(format!("{url}: the URL needs a port"))?;
    let port = port
        .parse()
        .map_err(|_| format!("{url}: the URL's port is not a number"))?;
    let path = if path.is_empty() { "/" } else { path };
    Ok(Target {
        host: host.to_string(),
        port,
        path: path.to_string(),
        url,
    })
}

/// What one target's connections share: the due times not yet taken, and
/// the counts.
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
    unsent: usize,
    unfinished: u64,
    /// How many slices were this target's, and their time.
    slices: u64,
    served: Duration,
}

struct Run {
    targets: Vec<Totals>,
    lags_us: Vec<u64>,
}

/// Which target slice `k` belongs to: cycle `k / n` gives each of the `n`
/// targets one slice, in an order shuffled by the cycle's number.
fn slice_target(k: u64, n: usize) -> usize {
    if n == 1 {
        return 0;
    }
    let mut order: Vec<usize> = (0..n).collect();
    let mut x = k / n as u64;
    for i in (1..n).rev() {
        // splitmix64: each cycle's number gives its own shuffle.
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        order.swap(i, (z % (i as u64 + 1)) as usize);
    }
    order[(k % n as u64) as usize]
}

async fn run(args: Args) -> io::Result<Run> {
    let total = (args.rate * args.duration.as_secs_f64()) as u64;
    let n = args.targets.len();
    let mut shared = Vec::with_capacity(n);
    let mut workers = Vec::new();
    for t in &args.targets {
        let addr = (t.host.clone(), t.port);
        let request: Rc<[u8]> = format!(
            "GET {} HTTP/1.1\r\nHost: {}:{}\r\n\r\n",
            t.path, t.host, t.port
        )
        .into_bytes()
        .into();
        let s = Rc::new(Shared {
            latencies_us: RefCell::new(Vec::with_capacity(total as usize / n + 1)),
            ..Shared::default()
        });
        for _ in 0..args.conns {
            let stream = TcpStream::connect(&addr).await?;
            stream.set_nodelay(true)?;
            let (s, request, addr) = (Rc::clone(&s), Rc::clone(&request), addr.clone());
            workers.push(tokio::task::spawn_local(connection(
                stream, addr, request, s,
            )));
        }
        shared.push(s);
    }

    // Tick j is due at `start + j * tick` and sends the requests due by
    // then: request i belongs to tick ceil(i / per_tick), and to the target
    // of the slice its due time falls in.
    let per_tick = args.rate * args.tick.as_secs_f64();
    let slice_ns = args.slice.as_nanos() as u64;
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
        for i in sent..upto {
            let offset = args.tick * (i as f64 / per_tick).ceil() as u32;
            let to = &shared[slice_target(offset.as_nanos() as u64 / slice_ns, n)];
            to.due.borrow_mut().push_back(start + offset);
            lags_us.push(lag);
            to.ready.notify_one();
        }
        sent = upto;
    }
    let end = Instant::now();
    for s in &shared {
        s.done.set(true);
        s.ready.notify_waiters();
    }
    let _ = tokio::time::timeout(GRACE, async {
        for w in workers {
            let _ = w.await;
        }
    })
    .await;
    // The run's slices: the last may be cut short, which counts it whole.
    let elapsed = end - start;
    let slices = (elapsed.as_nanos() as u64).div_ceil(slice_ns).max(1);
    let targets = shared
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mine = if n == 1 {
                slices
            } else {
                (0..slices).filter(|&k| slice_target(k, n) == i).count() as u64
            };
            Totals {
                ok: s.ok.get(),
                errors: s.errors.get(),
                non2xx: s.non2xx.get(),
                latencies_us: s.latencies_us.take(),
                unsent: s.due.borrow().len(),
                unfinished: s.in_flight.get(),
                slices: mine,
                served: if n == 1 {
                    elapsed
                } else {
                    args.slice * mine as u32
                },
            }
        })
        .collect();
    Ok(Run { targets, lags_us })
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
