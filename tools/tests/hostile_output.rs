//! The `dirigo` binary against writes that fail and hostile TCP peers: a full sink, a
//! sink peer that never reads, standard output closed early, a report path that cannot
//! be written, a thousand connections holding partial lines, a flood of garbage lines.
//! Each run is bounded by its config's duration and a deadline on the test side.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn dirigo() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dirigo"))
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dirigo-hostile-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes `toml` as `run.toml` in `dir`; returns its path.
fn config(dir: &Path, toml: &str) -> PathBuf {
    let path = dir.join("run.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

fn report(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("out/report.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A free loopback port (bound and released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Connects to `port`, retrying while the run starts (up to 20 s).
fn connect(port: u16) -> TcpStream {
    let started = Instant::now();
    loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(stream) => return stream,
            Err(_) if started.elapsed() < Duration::from_secs(20) => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(error) => panic!("no listener on {port}: {error}"),
        }
    }
}

const GENERATOR_TO_FILE: &str = "[run]\nduration_s = 20\n\n[report]\ndir = \"out\"\nplots = false\n\n[[app]]\nname = \"gen\"\n\n[app.source]\nevents = 50000\n\n[app.sink]\nkind = \"json-lines\"\n";

#[test]
fn a_sink_file_over_its_size_limit_exits_3_and_the_counts_match_the_file() {
    let dir = scratch("fsize");
    let path = config(&dir, &format!("{GENERATOR_TO_FILE}path = \"out.jsonl\"\n"));
    const LIMIT: libc::rlim_t = 256 * 1024;
    let mut command = dirigo();
    command.current_dir(&dir).arg("run").arg(&path);
    // SAFETY: between fork and exec the child only calls `signal` and `setrlimit`,
    // both async-signal-safe, on its own process. Ignoring SIGXFSZ makes a write past
    // the limit fail with EFBIG instead of killing the process.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, || {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let limit = libc::rlimit {
                rlim_cur: LIMIT,
                rlim_max: LIMIT,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let output = command.output().unwrap();
    assert_eq!(output.status.code(), Some(3), "{}", text(&output));
    assert!(text(&output).contains("out.jsonl"), "{}", text(&output));
    let app = &report(&dir)["apps"][0];
    let file = std::fs::read_to_string(dir.join("out.jsonl")).unwrap();
    assert!(file.len() as u64 <= LIMIT);
    assert!(file.is_empty() || file.ends_with('\n'), "only whole lines");
    let lines = file.lines().count() as u64;
    assert!(lines > 0, "some lines fit under the limit");
    assert_eq!(app["outputs_written"], lines, "{app}");
    assert_eq!(
        app["outputs_written"].as_u64().unwrap() + app["outputs_failed"].as_u64().unwrap(),
        app["outputs"].as_u64().unwrap(),
        "{app}"
    );
    assert!(app["outputs_failed"].as_u64().unwrap() > 0, "{app}");
    assert!(!report(&dir)["output_errors"].as_array().unwrap().is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn dev_full_as_sink_and_dead_letter_file_exits_3_and_names_no_missing_file() {
    let dir = scratch("devfull");
    std::fs::write(dir.join("in.csv"), "1,2,3\nbad\n4,5,6\nworse\n").unwrap();
    let path = config(
        &dir,
        "[run]\nduration_s = 20\n\n[report]\ndir = \"out\"\nplots = false\n\n[[app]]\nname = \"file\"\n\n[app.source]\nkind = \"file\"\npath = \"in.csv\"\ndead_letters = \"/dev/full\"\n\n[app.sink]\nkind = \"json-lines\"\npath = \"/dev/full\"\n",
    );
    let output = dirigo()
        .current_dir(&dir)
        .arg("run")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3), "{}", text(&output));
    let app = &report(&dir)["apps"][0];
    assert_eq!(app["outputs_written"], 0, "{app}");
    assert_eq!(app["outputs_failed"], 2, "{app}");
    assert_eq!(app["dead_letters"], 2, "{app}");
    assert_eq!(app["dead_letters_written"], 0, "{app}");
    assert_eq!(app["dead_letters_failed"], 2, "{app}");
    assert!(app["dead_letter_file"].is_null(), "{app}");
    assert!(Path::new("/dev/full").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_report_path_that_cannot_be_written_fails_before_the_run() {
    let dir = scratch("badreport");
    let path = config(&dir, &format!("{GENERATOR_TO_FILE}path = \"out.jsonl\"\n"));
    for bad in ["/dev/null/report.json", "out"] {
        std::fs::create_dir_all(dir.join("out")).unwrap();
        let started = Instant::now();
        let output = dirigo()
            .current_dir(&dir)
            .arg("run")
            .arg(&path)
            .args(["--report", bad])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{}", text(&output));
        assert!(text(&output).contains(bad), "{}", text(&output));
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(!dir.join("out.jsonl").exists(), "the run did not start");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_stale_report_is_gone_when_a_run_fails_and_a_missing_sink_folder_is_named() {
    let dir = scratch("stale");
    std::fs::create_dir_all(dir.join("out")).unwrap();
    std::fs::write(dir.join("out/report.json"), "{\"stale\": true}").unwrap();
    let path = config(
        &dir,
        &format!("{GENERATOR_TO_FILE}path = \"no-such-folder/out.jsonl\"\n"),
    );
    let output = dirigo()
        .current_dir(&dir)
        .arg("run")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        text(&output).contains("no-such-folder/out.jsonl"),
        "{}",
        text(&output)
    );
    assert!(
        !dir.join("out/report.json").exists(),
        "no stale report left"
    );
    // A good run writes the report in place, with no temporary file left behind.
    let path = config(&dir, &format!("{GENERATOR_TO_FILE}path = \"out.jsonl\"\n"));
    let output = dirigo()
        .current_dir(&dir)
        .arg("run")
        .arg(&path)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(report(&dir)["apps"][0]["outputs_written"], 50000);
    let names: Vec<String> = std::fs::read_dir(dir.join("out"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|name| name.ends_with(".tmp")),
        "{names:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_tcp_sink_peer_that_never_reads_ends_the_run_within_the_write_deadline() {
    let dir = scratch("stuckpeer");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accepts, then holds the connection without reading a byte.
    let peer = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        std::thread::sleep(Duration::from_secs(15));
        drop(stream);
    });
    let path = config(
        &dir,
        &format!("[run]\nduration_s = 30\n\n[report]\ndir = \"out\"\nplots = false\n\n[[app]]\nname = \"gen\"\n\n[app.source]\nevents = 3000000\n\n[app.sink]\nkind = \"tcp\"\nconnect = \"127.0.0.1:{port}\"\nwrite_timeout_ms = 500\n"),
    );
    let started = Instant::now();
    let output = dirigo()
        .current_dir(&dir)
        .arg("run")
        .arg(&path)
        .output()
        .unwrap();
    let took = started.elapsed();
    assert_eq!(output.status.code(), Some(3), "{}", text(&output));
    assert!(took < Duration::from_secs(10), "{took:?}");
    let app = &report(&dir)["apps"][0];
    let failed = app["outputs_failed"].as_u64().unwrap();
    assert!(failed > 0, "{app}");
    assert_eq!(
        app["outputs_written"].as_u64().unwrap() + failed,
        app["outputs"].as_u64().unwrap(),
        "{app}"
    );
    assert!(
        text(&output).contains("write deadline"),
        "{}",
        text(&output)
    );
    drop(peer);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn standard_output_closed_early_ends_that_sink_quietly() {
    let dir = scratch("epipe");
    let path = config(&dir, &format!("{GENERATOR_TO_FILE}path = \"-\"\n"));
    let mut child = dirigo()
        .current_dir(&dir)
        .arg("run")
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        // As `head -1`: one line, then the pipe is closed.
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        assert!(first.starts_with('{'), "{first}");
    }
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.lines().count() < 10,
        "no flood of warnings: {stderr}"
    );
    let app = &report(&dir)["apps"][0];
    // Either every line fit in the pipe before it closed, or the rest are counted.
    let failed = app["outputs_failed"].as_u64().unwrap();
    assert_eq!(
        app["outputs_written"].as_u64().unwrap() + failed,
        50000,
        "{app}"
    );
    assert_eq!(
        status.code(),
        Some(if failed > 0 { 3 } else { 0 }),
        "{stderr}"
    );
    assert!(failed > 0, "50 000 lines do not fit in a pipe: {app}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Resident memory of process `pid`, bytes.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// Starts `dirigo run path` in `dir`, its output captured.
fn spawn_run(dir: &Path, path: &Path) -> std::process::Child {
    dirigo()
        .current_dir(dir)
        .arg("run")
        .arg(path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The bound `configs/README.md` documents for a TCP source with the default
/// `max_connections` and a small `max_frame_bytes`, plus the process's own memory.
const RSS_BOUND: u64 = 256 << 20;

#[test]
fn a_thousand_connections_holding_partial_lines_stay_bounded_and_the_excess_is_refused() {
    let dir = scratch("conns");
    let port = free_port();
    let path = config(
        &dir,
        &format!("[run]\nduration_s = 6\n\n[runtime]\nshards = 1\n\n[report]\ndir = \"out\"\nplots = false\n\n[[app]]\nname = \"net\"\n\n[app.source]\nkind = \"tcp\"\nlisten = \"{port}\"\nmax_frame_bytes = 4096\n"),
    );
    let child = spawn_run(&dir, &path);
    let mut held = Vec::new();
    held.push(connect(port));
    for _ in 1..1000 {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(stream) => held.push(stream),
            Err(_) => break,
        }
    }
    let mut peak = 0;
    for stream in &mut held {
        // A partial line, never ended; writes to a refused connection may fail.
        let _ = stream.write_all(&[b'7'; 3000]);
    }
    for _ in 0..10 {
        peak = peak.max(rss_bytes(child.id()));
        std::thread::sleep(Duration::from_millis(100));
    }
    let output = child.wait_with_output().unwrap();
    drop(held);
    assert!(output.status.success(), "{}", text(&output));
    assert!(peak < RSS_BOUND, "resident memory {peak} over {RSS_BOUND}");
    let tcp = &report(&dir)["apps"][0]["tcp"];
    let accepted = tcp["connections"].as_u64().unwrap();
    let refused = tcp["connections_refused"].as_u64().unwrap();
    assert!(accepted <= 64, "{tcp}");
    assert!(refused >= 1000 - 64 - 5, "{tcp}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_flood_of_one_byte_garbage_lines_keeps_the_dead_letter_file_under_its_cap() {
    let dir = scratch("flood");
    let port = free_port();
    const CAP: u64 = 64 * 1024;
    let path = config(
        &dir,
        &format!("[run]\nduration_s = 4\n\n[report]\ndir = \"out\"\nplots = false\n\n[[app]]\nname = \"net\"\n\n[app.source]\nkind = \"tcp\"\nlisten = \"127.0.0.1:{port}\"\ndead_letter_max_bytes = {CAP}\ndead_letter_max_per_s = 1000000\n"),
    );
    let child = spawn_run(&dir, &path);
    let mut stream = connect(port);
    stream.write_all(&b"x\n".repeat(200_000)).unwrap();
    drop(stream);
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let app = &report(&dir)["apps"][0];
    let file = dir.join(app["dead_letter_file"].as_str().unwrap());
    let size = std::fs::metadata(&file).unwrap().len();
    assert!(size <= CAP, "{size} over {CAP}");
    assert_eq!(app["dead_letters"], 200_000, "{app}");
    let lines = std::fs::read_to_string(&file).unwrap().lines().count() as u64;
    assert_eq!(app["dead_letters_written"], lines, "{app}");
    assert_eq!(
        lines + app["dead_letters_suppressed"].as_u64().unwrap(),
        200_000,
        "{app}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_tcp_source_asks_for_its_token_and_closes_idle_connections() {
    let dir = scratch("token");
    let port = free_port();
    let path = config(
        &dir,
        &format!("[run]\nduration_s = 3\n\n[report]\ndir = \"out\"\nplots = false\n\n[[app]]\nname = \"net\"\n\n[app.source]\nkind = \"tcp\"\nlisten = \"{port}\"\ntoken = \"open-sesame\"\nidle_timeout_ms = 300\n"),
    );
    let child = spawn_run(&dir, &path);
    let mut good = connect(port);
    good.write_all(b"open-sesame\n1,2,3\n4,5,6\n").unwrap();
    drop(good);
    let mut wrong = connect(port);
    wrong.write_all(b"open-sesamE\n7,8,9\n").unwrap();
    let mut none = connect(port);
    none.write_all(b"7,8,9\n").unwrap();
    // Sends nothing: closed as idle, and as unauthorized since no token came.
    let idle = connect(port);
    let output = child.wait_with_output().unwrap();
    drop((wrong, none, idle));
    assert!(output.status.success(), "{}", text(&output));
    assert!(!text(&output).contains("open-sesam"), "{}", text(&output));
    let app = &report(&dir)["apps"][0];
    assert_eq!(app["events_out"], 2, "{app}");
    assert_eq!(app["dead_letters"], 0, "{app}");
    assert_eq!(app["tcp"]["connections_unauthorized"], 3, "{app}");
    assert!(
        app["tcp"]["connections_idle_closed"].as_u64().unwrap() >= 1,
        "{app}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn out_of_range_tcp_and_dead_letter_settings_exit_2_with_their_position() {
    let dir = scratch("bounds");
    for (key, line) in [
        ("max_connections = 0", 7),
        ("max_frame_bytes = 0", 7),
        ("idle_timeout_ms = 0", 7),
        ("token = \"\"", 7),
        ("dead_letter_max_per_s = 0", 7),
    ] {
        let path = config(
            &dir,
            &format!("[[app]]\nname = \"net\"\n\n[app.source]\nkind = \"tcp\"\nlisten = \"9000\"\n{key}\n"),
        );
        let output = dirigo().arg("validate").arg(&path).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{key}: {}", text(&output));
        let position = format!("{}:{line}:", path.display());
        assert!(
            text(&output).contains(&position),
            "{key}: {}",
            text(&output)
        );
    }
    let path = config(
        &dir,
        "[[app]]\nname = \"gen\"\n\n[[app.operator]]\nname = \"pass\"\nkind = \"map\"\n\n[app.sink]\nkind = \"tcp\"\nconnect = \"9000\"\nwrite_timeout_ms = 0\n",
    );
    let output = dirigo().arg("validate").arg(&path).output().unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(text(&output).contains(":11:"), "{}", text(&output));
    std::fs::remove_dir_all(&dir).unwrap();
}
