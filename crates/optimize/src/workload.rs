//! One run of a workload inside a mounted image: chrooted into the image's root with its own
//! mount namespace (`/proc`, and the host's `/dev` and `/sys` bound in, as a container sees
//! them), the image's environment, working directory and user; its output captured, watched
//! for a ready line, and bounded by a timeout.

use std::ffi::CString;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// Output kept of a workload for error messages (its last bytes).
const OUTPUT_TAIL: usize = 16 << 10;

/// How long the output is still read after the workload was stopped.
const OUTPUT_GRACE: Duration = Duration::from_secs(2);

/// What to run.
#[derive(Debug, Clone)]
pub struct Workload {
    /// The command line; the program is looked up in the image's `PATH` when it has no `/`.
    pub argv: Vec<String>,
    /// The environment, `NAME=value` each (nothing of ours is inherited).
    pub env: Vec<String>,
    /// Working directory inside the image (empty: `/`).
    pub working_dir: String,
    /// `user[:group]`, names (from the image's `/etc/passwd` and `/etc/group`) or numbers;
    /// empty: root.
    pub user: String,
    /// Done once a line of its output (stdout or stderr) contains this; `None`: done when it
    /// exits successfully.
    pub ready_line: Option<String>,
    /// Longest wait for it to be done.
    pub timeout: Duration,
    /// Set (by a signal handler) to stop the workload now; the run then fails.
    pub interrupted: Arc<AtomicBool>,
}

/// How a run ended well.
#[derive(Debug, Clone)]
pub struct Finished {
    /// From start to the ready line (or the exit).
    pub elapsed: Duration,
    /// The ready line was seen (the workload was then stopped).
    pub ready: bool,
}

/// Why a workload could not be run or did not get ready.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    /// Nothing to run: no arguments and an image without entrypoint or command.
    #[error("nothing to run: the image has no entrypoint or command; give one after `--`")]
    NoCommand,
    /// The program is not in the image.
    #[error("{program} is not in the image (looked in PATH {path:?})")]
    NotFound {
        /// The program named.
        program: String,
        /// The PATH searched.
        path: String,
    },
    /// The user is not in the image's `/etc/passwd` or `/etc/group`.
    #[error("user {0:?} is not in the image's /etc/passwd and /etc/group, and is not numeric")]
    UnknownUser(String),
    /// An argument or variable holds a NUL byte.
    #[error("{0:?} holds a NUL byte")]
    Nul(String),
    /// The process could not be started.
    #[error("starting {program}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It exited before it was ready (or, without a ready line, unsuccessfully).
    #[error("the workload {status} {}; its output:\n{output}", ready_note(ready_line.as_deref()))]
    Failed {
        /// How it exited.
        status: String,
        /// The ready line it never printed.
        ready_line: Option<String>,
        /// The end of its output.
        output: String,
    },
    /// It was stopped because we were asked to stop.
    #[error("interrupted: the workload was stopped")]
    Interrupted,
    /// It did not get ready in time (it was killed).
    #[error("the workload was not {} after {seconds} s and was stopped; its output:\n{output}", done_word(ready_line.as_deref()))]
    Timeout {
        /// The timeout.
        seconds: u64,
        /// The ready line it never printed.
        ready_line: Option<String>,
        /// The end of its output.
        output: String,
    },
}

fn ready_note(ready: Option<&str>) -> String {
    match ready {
        Some(line) => format!("before printing its ready line {line:?}"),
        None => String::new(),
    }
}

fn done_word(ready: Option<&str>) -> String {
    match ready {
        Some(line) => format!("ready (no line with {line:?})"),
        None => "done".to_owned(),
    }
}

/// Runs `w` in the image mounted at `root` and waits until it is done (ready line, or a
/// successful exit), then stops what is left of it.
pub fn run_in(root: &Path, w: &Workload) -> Result<Finished, WorkloadError> {
    let (program, args) = w.argv.split_first().ok_or(WorkloadError::NoCommand)?;
    let exe = find_program(root, program, &w.env)?;
    let (uid, gid) = resolve_user(root, &w.user)?;
    let mut cmd = Command::new(&exe);
    cmd.args(args)
        .env_clear()
        .envs(w.env.iter().filter_map(|kv| kv.split_once('=')))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let setup = Confine::new(root, &w.working_dir, uid, gid)?;
    // SAFETY: the closure only makes system calls (unshare, mount, chroot, chdir, setsid,
    // setgroups, setgid, setuid) on strings prepared before the fork; it allocates nothing.
    unsafe { cmd.pre_exec(move || setup.apply()) };
    let started = Instant::now();
    let mut child = cmd.spawn().map_err(|source| WorkloadError::Spawn {
        program: program.clone(),
        source,
    })?;
    let (lines, output) = watch_output(&mut child);
    let outcome = wait_done(&mut child, &lines, w, started);
    stop(&mut child);
    let tail = output.join();
    outcome.map_err(|end| end.into_error(w, tail))
}

/// How a run ended badly, before its output is attached.
enum BadEnd {
    Exited(ExitStatus),
    TimedOut,
    Interrupted,
}

impl BadEnd {
    fn into_error(self, w: &Workload, output: String) -> WorkloadError {
        let ready_line = w.ready_line.clone();
        match self {
            BadEnd::Exited(status) => WorkloadError::Failed {
                status: describe(status),
                ready_line,
                output,
            },
            BadEnd::Interrupted => WorkloadError::Interrupted,
            BadEnd::TimedOut => WorkloadError::Timeout {
                seconds: w.timeout.as_secs(),
                ready_line,
                output,
            },
        }
    }
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(0), _) => "exited successfully".to_owned(),
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        (None, None) => "ended".to_owned(),
    }
}

/// Waits for the ready line, the exit or the timeout.
fn wait_done(
    child: &mut Child,
    lines: &mpsc::Receiver<String>,
    w: &Workload,
    started: Instant,
) -> Result<Finished, BadEnd> {
    let deadline = started + w.timeout;
    loop {
        let now = Instant::now();
        if w.interrupted.load(Ordering::SeqCst) {
            return Err(BadEnd::Interrupted);
        }
        if now >= deadline {
            return Err(BadEnd::TimedOut);
        }
        let wait = (deadline - now).min(Duration::from_millis(20));
        match lines.recv_timeout(wait) {
            Ok(line) => {
                if let Some(ready) = &w.ready_line {
                    if line.contains(ready.as_str()) {
                        return Ok(Finished {
                            elapsed: started.elapsed(),
                            ready: true,
                        });
                    }
                }
                continue;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            // Both streams closed: the process is about to exit (or has).
            Err(mpsc::RecvTimeoutError::Disconnected) => std::thread::sleep(wait),
        }
        if let Ok(Some(status)) = child.try_wait() {
            // Lines it printed just before exiting may still be queued.
            let ready = w.ready_line.as_deref();
            if ready.is_some_and(|r| lines.try_iter().any(|l| l.contains(r))) {
                return Ok(Finished {
                    elapsed: started.elapsed(),
                    ready: true,
                });
            }
            return match (ready, status.success()) {
                (None, true) => Ok(Finished {
                    elapsed: started.elapsed(),
                    ready: false,
                }),
                _ => Err(BadEnd::Exited(status)),
            };
        }
    }
}

/// Kills the workload's session (it leads one) and reaps it.
fn stop(child: &mut Child) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) of the process group the child leads (setsid in pre_exec).
        unsafe { libc::kill(-pid, libc::SIGKILL) };
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The tails of both output streams, kept as they are read.
struct OutputTail {
    tails: Vec<Arc<Mutex<Vec<u8>>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl OutputTail {
    /// The output so far, once both streams closed, or after [`OUTPUT_GRACE`] when something
    /// the workload started still holds them open (it is not waited for).
    fn join(self) -> String {
        let deadline = Instant::now() + OUTPUT_GRACE;
        while self.readers.iter().any(|r| !r.is_finished()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut text = String::new();
        for tail in &self.tails {
            let bytes = tail.lock().unwrap_or_else(|p| p.into_inner());
            text.push_str(&String::from_utf8_lossy(&bytes));
        }
        text
    }
}

/// Reads both streams on threads of their own: each line goes to the receiver.
fn watch_output(child: &mut Child) -> (mpsc::Receiver<String>, OutputTail) {
    let (tx, rx) = mpsc::channel();
    let mut out = OutputTail {
        tails: Vec::new(),
        readers: Vec::new(),
    };
    let streams: [Option<Box<dyn Read + Send>>; 2] = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ];
    for stream in streams.into_iter().flatten() {
        let (tx, tail) = (tx.clone(), Arc::new(Mutex::new(Vec::new())));
        out.tails.push(tail.clone());
        out.readers
            .push(std::thread::spawn(move || read_lines(stream, &tx, &tail)));
    }
    (rx, out)
}

/// Sends each line on, keeping the last [`OUTPUT_TAIL`] bytes in `tail`.
fn read_lines(stream: Box<dyn Read + Send>, tx: &mpsc::Sender<String>, tail: &Mutex<Vec<u8>>) {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    while let Ok(n) = reader.read_until(b'\n', &mut line) {
        if n == 0 {
            break;
        }
        {
            let mut tail = tail.lock().unwrap_or_else(|p| p.into_inner());
            tail.extend_from_slice(&line);
            let excess = tail.len().saturating_sub(OUTPUT_TAIL);
            tail.drain(..excess);
        }
        let _ = tx.send(String::from_utf8_lossy(&line).trim_end().to_owned());
        line.clear();
    }
}

/// The program's path inside the image (absolute), found in the image's `PATH`.
fn find_program(root: &Path, program: &str, env: &[String]) -> Result<PathBuf, WorkloadError> {
    if program.contains('/') {
        return Ok(PathBuf::from(program));
    }
    let path = env
        .iter()
        .find_map(|kv| kv.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    for dir in path.split(':').filter(|d| d.starts_with('/')) {
        let inside = Path::new(dir).join(program);
        // Symlinks are resolved by the kernel after chroot; here only existence matters.
        let host = root.join(inside.strip_prefix("/").unwrap_or(&inside));
        if host.symlink_metadata().is_ok() {
            return Ok(inside);
        }
    }
    Err(WorkloadError::NotFound {
        program: program.to_owned(),
        path: path.to_owned(),
    })
}

/// `user[:group]` as numbers, names looked up in the image's files.
fn resolve_user(root: &Path, user: &str) -> Result<(u32, u32), WorkloadError> {
    if user.is_empty() {
        return Ok((0, 0));
    }
    let (name, group) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let unknown = || WorkloadError::UnknownUser(user.to_owned());
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap_or_default();
    let entry = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&name) || f.get(2) == Some(&name));
    let uid = match name.parse::<u32>() {
        Ok(n) => n,
        Err(_) => field(entry.as_deref(), 2).ok_or_else(unknown)?,
    };
    let gid = match group {
        None => field(entry.as_deref(), 3).unwrap_or(0),
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => {
                let groups = std::fs::read_to_string(root.join("etc/group")).unwrap_or_default();
                groups
                    .lines()
                    .map(|l| l.split(':').collect::<Vec<_>>())
                    .find(|f| f.first() == Some(&g))
                    .and_then(|f| f.get(2).and_then(|n| n.parse().ok()))
                    .ok_or_else(unknown)?
            }
        },
    };
    Ok((uid, gid))
}

fn field(entry: Option<&[&str]>, i: usize) -> Option<u32> {
    entry?.get(i)?.parse().ok()
}

/// What the child does between fork and exec, prepared before the fork.
struct Confine {
    root: CString,
    proc_dir: Option<CString>,
    binds: Vec<(CString, CString)>,
    working_dir: CString,
    uid: u32,
    gid: u32,
}

impl Confine {
    fn new(root: &Path, working_dir: &str, uid: u32, gid: u32) -> Result<Self, WorkloadError> {
        let c = |p: &Path| {
            CString::new(p.as_os_str().as_bytes())
                .map_err(|_| WorkloadError::Nul(p.display().to_string()))
        };
        let inside = |name: &str| root.join(name);
        let proc_dir = inside("proc")
            .is_dir()
            .then(|| c(&inside("proc")))
            .transpose()?;
        let mut binds = Vec::new();
        for name in ["dev", "sys"] {
            if inside(name).is_dir() {
                binds.push((c(Path::new("/").join(name).as_path())?, c(&inside(name))?));
            }
        }
        let wd = if working_dir.is_empty() {
            "/"
        } else {
            working_dir
        };
        Ok(Confine {
            root: c(root)?,
            proc_dir,
            binds,
            working_dir: c(Path::new(wd))?,
            uid,
            gid,
        })
    }

    /// In the child: a session and mount namespace of its own, `/proc`, `/dev` and `/sys`,
    /// then the chroot, the working directory and the user.
    fn apply(&self) -> std::io::Result<()> {
        let check = |r: libc::c_int| {
            if r == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        };
        let none = std::ptr::null::<libc::c_char>();
        // SAFETY: plain system calls on NUL-terminated strings that outlive them.
        unsafe {
            libc::setsid();
            check(libc::unshare(libc::CLONE_NEWNS))?;
            // Nothing mounted here may reach the host's mount table.
            let root = c"/".as_ptr();
            check(libc::mount(
                none,
                root,
                none,
                libc::MS_REC | libc::MS_PRIVATE,
                none.cast(),
            ))?;
            if let Some(proc_dir) = &self.proc_dir {
                check(libc::mount(
                    c"proc".as_ptr(),
                    proc_dir.as_ptr(),
                    c"proc".as_ptr(),
                    0,
                    none.cast(),
                ))?;
            }
            for (from, to) in &self.binds {
                let flags = libc::MS_BIND | libc::MS_REC;
                check(libc::mount(
                    from.as_ptr(),
                    to.as_ptr(),
                    none,
                    flags,
                    none.cast(),
                ))?;
            }
            check(libc::chroot(self.root.as_ptr()))?;
            check(libc::chdir(self.working_dir.as_ptr()))?;
            if self.uid != 0 || self.gid != 0 {
                check(libc::setgroups(0, std::ptr::null()))?;
                check(libc::setgid(self.gid))?;
                check(libc::setuid(self.uid))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_numbers_or_names_of_the_image() {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(root.path().join("etc")).expect("etc");
        std::fs::write(
            root.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/app:/bin/sh\n",
        )
        .expect("passwd");
        std::fs::write(root.path().join("etc/group"), "root:x:0:\nstaff:x:50:\n").expect("group");
        assert_eq!(resolve_user(root.path(), "").ok(), Some((0, 0)));
        assert_eq!(resolve_user(root.path(), "app").ok(), Some((1000, 1001)));
        assert_eq!(
            resolve_user(root.path(), "app:staff").ok(),
            Some((1000, 50))
        );
        assert_eq!(resolve_user(root.path(), "7:8").ok(), Some((7, 8)));
        assert!(matches!(
            resolve_user(root.path(), "nobody"),
            Err(WorkloadError::UnknownUser(_))
        ));
    }

    #[test]
    fn programs_are_found_in_the_image_path() {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(root.path().join("opt/bin")).expect("dirs");
        std::fs::write(root.path().join("opt/bin/app"), "").expect("app");
        let env = ["PATH=/usr/bin:/opt/bin".to_owned()];
        assert_eq!(
            find_program(root.path(), "app", &env).ok(),
            Some(PathBuf::from("/opt/bin/app"))
        );
        assert!(matches!(
            find_program(root.path(), "gone", &env),
            Err(WorkloadError::NotFound { .. })
        ));
        assert_eq!(
            find_program(root.path(), "/x/y", &env).ok(),
            Some(PathBuf::from("/x/y"))
        );
    }

    /// A root with the host's static busybox as `/bin/sh`, and `/proc`, `/dev` mount points.
    fn busybox_root() -> tempfile::TempDir {
        let root = tempfile::tempdir().expect("tempdir");
        for d in ["bin", "proc", "dev", "tmp"] {
            std::fs::create_dir(root.path().join(d)).expect("dir");
        }
        std::fs::copy("/bin/busybox", root.path().join("bin/busybox")).expect("busybox-static");
        std::os::unix::fs::symlink("busybox", root.path().join("bin/sh")).expect("sh");
        root
    }

    fn sh(script: &str, ready_line: Option<&str>, timeout: Duration) -> Workload {
        Workload {
            argv: vec!["sh".into(), "-c".into(), script.into()],
            env: vec!["PATH=/bin".into(), "GREETING=hi".into()],
            working_dir: "/tmp".into(),
            user: String::new(),
            ready_line: ready_line.map(str::to_owned),
            timeout,
            interrupted: Arc::default(),
        }
    }

    #[test]
    fn a_workload_runs_confined_and_is_stopped_at_its_ready_line() {
        let root = busybox_root();
        // It sees the image's environment, working directory and a /proc of its own, and
        // would run for a minute after the ready line if it were not stopped.
        let script = "test \"$GREETING $(pwd)\" = 'hi /tmp' && test -e /proc/self/stat \
                      && echo up and ready && sleep 60";
        let w = sh(script, Some("ready"), Duration::from_secs(20));
        let done = run_in(root.path(), &w).expect("ready");
        assert!(done.ready);
        assert!(done.elapsed < Duration::from_secs(20));
        // Nothing it mounted reached the host.
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        assert!(!mounts.contains(root.path().to_str().expect("utf-8")));
    }

    #[test]
    fn without_a_ready_line_a_workload_must_exit_successfully() {
        let root = busybox_root();
        let done = run_in(root.path(), &sh("exit 0", None, Duration::from_secs(20)));
        assert!(!done.expect("exit 0").ready);
        let failed = run_in(
            root.path(),
            &sh("echo oops >&2; exit 4", None, Duration::from_secs(20)),
        );
        match failed {
            Err(WorkloadError::Failed { status, output, .. }) => {
                assert_eq!(status, "exited with status 4");
                assert!(output.contains("oops"), "{output}");
            }
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[test]
    fn a_workload_that_never_prints_its_ready_line_fails() {
        let root = busybox_root();
        let exits = sh("echo not yet", Some("ready"), Duration::from_secs(20));
        match run_in(root.path(), &exits) {
            Err(WorkloadError::Failed { output, .. }) => assert!(output.contains("not yet")),
            other => panic!("expected a failure, got {other:?}"),
        }
        let hangs = sh(
            "echo waiting; sleep 60",
            Some("ready"),
            Duration::from_secs(1),
        );
        match run_in(root.path(), &hangs) {
            Err(e @ WorkloadError::Timeout { .. }) => {
                let text = e.to_string();
                assert!(
                    text.contains("after 1 s") && text.contains("waiting"),
                    "{text}"
                );
            }
            other => panic!("expected a timeout, got {other:?}"),
        }
    }

    #[test]
    fn a_process_left_holding_the_output_does_not_hold_up_the_run() {
        let root = busybox_root();
        // A daemon in a session of its own escapes the kill and keeps stdout open.
        let script = "/bin/busybox setsid /bin/busybox sleep 40 & echo ready";
        let started = Instant::now();
        let done = run_in(
            root.path(),
            &sh(script, Some("ready"), Duration::from_secs(20)),
        );
        assert!(done.expect("ready").ready);
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "waited for the daemon"
        );
    }

    #[test]
    fn an_interrupted_workload_is_stopped() {
        let root = busybox_root();
        let w = sh(
            "echo started; sleep 60",
            Some("ready"),
            Duration::from_secs(30),
        );
        let flag = w.interrupted.clone();
        let raise = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            flag.store(true, Ordering::SeqCst);
        });
        let started = Instant::now();
        let result = run_in(root.path(), &w);
        raise.join().expect("thread");
        assert!(
            matches!(result, Err(WorkloadError::Interrupted)),
            "{result:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(25),
            "it ran on to the timeout"
        );
    }
}
