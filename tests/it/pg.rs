//! A throwaway PostgreSQL cluster for the tests that run `serve` on PostgreSQL, and the switch
//! that runs the API tests on either backend.
//!
//! One cluster serves the whole test binary: made on first use with Debian's `initdb` as the
//! `postgres` user (the server refuses to run as root) in a temp directory, started with
//! `pg_ctl` on a free port on 127.0.0.1 with its socket in that directory, and each test gets
//! its own database. A watchdog process started with it stops the cluster (`pg_ctl -m
//! immediate stop`) and removes the directory as soon as the test binary exits, however it
//! exits (success, a failed assertion, a panic). Never a downloaded PostgreSQL.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// The backends `serve` runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

thread_local! {
    static BACKEND: Cell<Backend> = const { Cell::new(Backend::Sqlite) };
}

/// The backend servers started on this thread use.
pub(crate) fn backend() -> Backend {
    BACKEND.with(Cell::get)
}

/// Runs `test` with every server it starts on PostgreSQL.
pub(crate) fn on_postgres(test: fn()) {
    BACKEND.with(|b| b.set(Backend::Postgres));
    test();
}

/// Generates, for each named test body (a plain `fn name()`), a module `name` with the tests
/// `sqlite` and `postgres` (the same body, parametrised, never copied).
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn sqlite() {
                super::$name()
            }
            #[test]
            fn postgres() {
                crate::pg::on_postgres(super::$name)
            }
        }
    )*};
}
pub(crate) use on_both_backends;

/// The shared cluster.
pub(crate) struct Cluster {
    pub port: u16,
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();
static NEXT_DB: AtomicU64 = AtomicU64::new(1);

impl Cluster {
    /// The cluster, started on first use.
    pub(crate) fn get() -> &'static Self {
        CLUSTER.get_or_init(Self::start)
    }

    /// A fresh empty database; returns its URL (`postgres://postgres@127.0.0.1:PORT/NAME`).
    pub(crate) fn new_database(&self) -> String {
        let name = format!(
            "t{}_{}",
            std::process::id(),
            NEXT_DB.fetch_add(1, Ordering::Relaxed)
        );
        self.psql(&format!("CREATE DATABASE {name}"));
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Runs one SQL command as the superuser.
    pub(crate) fn psql(&self, sql: &str) -> String {
        let out = Command::new("psql")
            .args([
                "-X",
                "-q",
                "-t",
                "-A",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-p",
            ])
            .arg(self.port.to_string())
            .args(["-d", "postgres", "-c", sql])
            .env_remove("PGPASSFILE")
            .output()
            .expect("psql runs (Debian package postgresql-client)");
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn start() -> Self {
        let bin = pg_bin();
        let dir = std::env::temp_dir().join(format!("smsgate-it-pg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let data = dir.join("data");
        as_postgres(
            Command::new("chown").args(["postgres:postgres"]).arg(&dir),
            false,
        );
        let out = as_postgres(
            Command::new(bin.join("initdb"))
                .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
                .arg(&data),
            true,
        );
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let options = format!(
            "-k {} -p {port} -c listen_addresses=127.0.0.1 -c max_connections=300 \
             -c shared_buffers=32MB",
            dir.display()
        );
        let out = as_postgres(
            Command::new(bin.join("pg_ctl"))
                .arg("-D")
                .arg(&data)
                .args(["-l"])
                .arg(dir.join("server.log"))
                .args(["-o", &options, "-w", "-t", "60", "start"]),
            true,
        );
        assert!(
            out.status.success(),
            "pg_ctl start: {}{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
        );
        watchdog(&bin, &data, &dir);
        Self { port }
    }
}

/// Stops the cluster and removes its directory once this test process is gone.
fn watchdog(bin: &Path, data: &Path, dir: &Path) {
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; \
         runuser -u postgres -- {pg_ctl} -D {data} -m immediate stop >/dev/null 2>&1; \
         rm -rf {dir}",
        pid = std::process::id(),
        pg_ctl = bin.join("pg_ctl").display(),
        data = data.display(),
        dir = dir.display(),
    );
    // `setsid --fork`: the watchdog outlives us in its own session; setsid itself returns.
    let status = Command::new("setsid")
        .args(["--fork", "sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("setsid runs the watchdog");
    assert!(status.success(), "the cluster's watchdog did not start");
}

/// Where Debian puts the server binaries (not on PATH on a fresh machine).
fn pg_bin() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| rd.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    versions.sort();
    versions
        .pop()
        .filter(|b| b.join("initdb").exists())
        .expect("PostgreSQL is installed (Debian package postgresql; .ci/run installs it)")
}

fn as_postgres(cmd: &mut Command, runuser: bool) -> std::process::Output {
    let out = if runuser {
        let program = cmd.get_program().to_owned();
        let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
        Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(program)
            .args(args)
            .current_dir("/")
            .stdin(Stdio::null())
            .output()
    } else {
        cmd.output()
    };
    out.expect("the command runs")
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}
