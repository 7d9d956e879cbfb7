//! The threads of this test process, by name, to check that what a test started has been joined.

/// Names of this process's threads (as the kernel keeps them: at most 15 bytes), sorted.
pub fn names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        // A thread may end while it is listed: skip what is gone.
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("comm")).ok())
        .map(|n| n.trim_end().to_string())
        .collect();
    names.sort();
    names
}

/// Those of [`names`] that start with one of `prefixes`.
pub fn named(prefixes: &[&str]) -> Vec<String> {
    names()
        .into_iter()
        .filter(|name| prefixes.iter().any(|p| name.starts_with(p)))
        .collect()
}

/// Starts a named thread (a panic message then says which helper thread failed).
pub fn spawn<T: Send + 'static>(
    name: &str,
    body: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(body)
        .expect("start a test thread")
}

/// `list()` once `done` accepts it, or whatever it is after 10 s. A joined thread can still be
/// listed for a moment: `join` returns when the kernel clears the thread's id, a little before
/// it removes the thread from `/proc/self/task`, and nothing signals that removal; hence this
/// bounded poll, after a shutdown only.
pub fn settled(list: impl Fn() -> Vec<String>, done: impl Fn(&[String]) -> bool) -> Vec<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let now = list();
        if done(&now) || std::time::Instant::now() > deadline {
            return now;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}
