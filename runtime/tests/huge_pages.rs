//! The runtime's transparent-huge-page setting reaches the process (one test in its own
//! process: the flag is process-wide, so tests running beside it would race on it).

use dirigo_runtime::{huge_pages, Runtime};

#[cfg(target_os = "linux")]
#[test]
fn a_runtime_turns_huge_pages_off_unless_asked_for_them() {
    huge_pages::set_allowed(true).unwrap();
    assert_eq!(huge_pages::allowed().unwrap(), Some(true));

    let runtime = Runtime::<u64>::builder().shards(1).build().unwrap();
    assert_eq!(
        huge_pages::allowed().unwrap(),
        Some(false),
        "the default runtime turns them off"
    );
    runtime.shutdown();

    let runtime = Runtime::<u64>::builder()
        .shards(1)
        .transparent_huge_pages(true)
        .build()
        .unwrap();
    assert_eq!(huge_pages::allowed().unwrap(), Some(true));
    runtime.shutdown();
}
