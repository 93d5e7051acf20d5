//! What the tests of the `dirigo` binary share: running it, and running a benchmark
//! scenario for its JSON.

use std::process::Command;

/// The `dirigo` binary under test.
pub fn dirigo() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dirigo"))
}

/// Runs `dirigo bench <args> --json <tmp>`; returns the parsed JSON and the printed table.
pub fn bench_json(scenario: &str, args: &[&str]) -> (serde_json::Value, String) {
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!(
        "dirigo-cli-{scenario}-{}-{call}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("report.json");
    let output = dirigo()
        .args(["bench", scenario])
        .args(args)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    (report, String::from_utf8_lossy(&output.stdout).into_owned())
}
