fn main() {
    let pid: u32 = std::env::args().nth(1).unwrap().parse().unwrap();
    let mut c = match fmd_daemon::capture::Capture::load() { Ok(c) => c, Err(e) => { eprintln!("{e}"); let mut s: &dyn std::error::Error = &e; while let Some(x) = s.source() { eprintln!("  {x}"); s = x; } return; } };
    let t = fmd_daemon::capture::procs::resolve(pid).unwrap();
    eprintln!("{t:?}");
    match &t { fmd_daemon::capture::procs::Target::Master{pid, workers} => { c.watch(*pid, 1).unwrap(); for w in workers { c.watch(*w, 2).unwrap(); } } fmd_daemon::capture::procs::Target::Worker{pid} => c.watch(*pid, 2).unwrap() }
    let mut rb = c.take_events().unwrap();
    let end = std::time::Instant::now() + std::time::Duration::from_secs(8);
    while std::time::Instant::now() < end {
        while let Some(item) = rb.next() {
            let (h, p) = fmd_common::http::EventHeader::parse(&item).unwrap();
            eprintln!("{} tgid={} tid={} fd={} len={} copied={} conn={} {:?}", h.kind, h.tgid, h.tid, h.fd, h.len, h.copied, h.conn_ts, String::from_utf8_lossy(&p[..p.len().min(80)]));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    eprintln!("{:?}", c.counters());
}
