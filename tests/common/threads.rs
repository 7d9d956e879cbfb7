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
