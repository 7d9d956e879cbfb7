//! The JavaScript side of the interop tests: Node.js and the npm packages of a folder under
//! tests/. `cargo test` on a fresh machine installs the packages itself (`npm ci` from the
//! committed lock file), so the README's one test command stays true; a missing Node.js fails
//! with a message that says what to install, since an interop test that skips proves nothing.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

/// Serialises `npm ci` between the tests of one binary.
static INSTALL: Mutex<()> = Mutex::new(());

/// Checks that `node` runs and that `tests/<folder>/node_modules/<probe>` exists, running
/// `npm ci` there first when it does not. Returns the folder.
pub fn require_packages(folder: &str, probe: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(folder);
    let node = Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .status();
    assert!(
        matches!(node, Ok(status) if status.success()),
        "`node` is not on PATH: the interop tests run JavaScript packages under Node.js 18+ \
         (Debian: apt-get install nodejs npm; .ci/run installs them)"
    );
    let _installing = INSTALL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if !dir.join("node_modules").join(probe).is_dir() {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status()
            .expect("run npm (it comes with Node.js)");
        assert!(
            status.success(),
            "`npm ci` failed in {}: the npm registry must be reachable",
            dir.display()
        );
    }
    dir
}
