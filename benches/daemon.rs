//! Benchmark of the signer daemon (issue 3), with its references measured in the same run:
//!
//! - CPU-bound throughput (spool on tmpfs) as a ratio to the bound of one CSR verification
//!   plus one P-256 signature per request on all cores, from `openssl speed`;
//! - durable throughput (spool on the ordinary disk) as a ratio to a synthetic writer doing the
//!   temp-file / fsync / rename / directory-fsync pattern for the same files per request;
//! - latency rename → status file for single requests into an idle daemon (p50, p99);
//! - peak RSS with 1,000 and 100,000 requests queued.
//!
//! Run: `cargo bench --bench daemon` (release build; about five minutes on 2 cores).
//! `SMSGATE_BENCH_N` (10000), `SMSGATE_BENCH_BIG` (100000) and `SMSGATE_BENCH_DISK_DIR`
//! (./target/bench-disk) change the sizes and the disk directory; `SMSGATE_BENCH_CPU_ONLY=1`
//! stops after the CPU-bound run.

// A benchmark stops at the first failure: unwrap states that.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::stack::Stack;
use openssl::x509::extension::SubjectAlternativeName;
use openssl::x509::{X509NameBuilder, X509ReqBuilder};

const BIN: &str = env!("CARGO_BIN_EXE_smsgate-ca");

fn main() {
    let n: usize = env_or("SMSGATE_BENCH_N", 10_000);
    let big: usize = env_or("SMSGATE_BENCH_BIG", 100_000);
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let disk_dir = std::env::var("SMSGATE_BENCH_DISK_DIR")
        .map_or_else(|_| PathBuf::from("target/bench-disk"), PathBuf::from);
    println!("smsgate-ca daemon benchmark: {n} P-256 CSRs, {cores} cores, binary {BIN}");

    let (sign, verify) = openssl_speed(cores);
    let bound = 1.0 / (1.0 / sign + 1.0 / verify);
    println!("openssl speed -multi {cores} ecdsap256: {sign:.0} sign/s, {verify:.0} verify/s -> CPU bound {bound:.0} requests/s");

    print!("generating {n} CSRs ... ");
    let t = Instant::now();
    let csrs: Vec<Vec<u8>> = (0..n).map(csr).collect();
    println!("{:.1} s", t.elapsed().as_secs_f64());

    let shm = PathBuf::from(format!("/dev/shm/smsgate-bench-{}", std::process::id()));
    let cpu = throughput(&shm, &csrs, cores);
    println!(
        "CPU-bound (tmpfs {}): {cpu:.0} requests/s = {:.2} x the CPU bound (target >= 0.4)",
        shm.display(),
        cpu / bound
    );
    let _ = fs::remove_dir_all(&shm);
    if std::env::var_os("SMSGATE_BENCH_CPU_ONLY").is_some() {
        return;
    }

    let disk = disk_dir.join(format!("run-{}", std::process::id()));
    fs::create_dir_all(&disk).unwrap();
    // Files published per request: the certificate and the status record (each temp + rename),
    // plus the move of the request to archive/.
    let ceiling = synthetic_durable_writer(&disk.join("synthetic"), n.min(3000), 2);
    let durable = throughput(&disk.join("daemon"), &csrs, cores);
    println!(
        "durable (disk {}): {durable:.0} requests/s; synthetic writer (2 files per request, fsync + rename + dir fsync each): {ceiling:.0} requests/s -> ratio {:.2} (target >= 0.5)",
        disk.display(),
        durable / ceiling
    );

    let (p50, p99) = latency(&shm, 200);
    println!("latency rename -> status, idle daemon, 200 single requests: p50 {p50:.1} ms, p99 {p99:.1} ms (target p99 <= 20 ms)");
    let _ = fs::remove_dir_all(&shm);

    for queued in [1_000, big] {
        let extra: Vec<Vec<u8>> = (0..queued)
            .map(|i| {
                if i < csrs.len() {
                    csrs[i].clone()
                } else {
                    csr(i)
                }
            })
            .collect();
        let rss = peak_rss(&shm, &extra, cores);
        println!(
            "peak RSS with {queued} requests queued: {:.1} MB (target <= 64 MB)",
            rss as f64 / 1024.0
        );
        let _ = fs::remove_dir_all(&shm);
    }
    let _ = fs::remove_dir_all(&disk);
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `openssl speed -seconds 3 -multi N ecdsap256` → (sign/s, verify/s), summed over all cores.
fn openssl_speed(cores: usize) -> (f64, f64) {
    let out = Command::new("openssl")
        .args([
            "speed",
            "-seconds",
            "3",
            "-multi",
            &cores.to_string(),
            "ecdsap256",
        ])
        .stderr(Stdio::null())
        .output()
        .expect("openssl runs");
    let text = String::from_utf8_lossy(&out.stdout);
    // The summary line: " 256 bits ecdsa (nistp256)   0.0000s   0.0001s  57000.0  18600.0"
    let line = text
        .lines()
        .rev()
        .find(|l| l.contains("nistp256"))
        .expect("openssl speed printed a nistp256 line");
    let nums: Vec<f64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    let k = nums.len();
    (nums[k - 2], nums[k - 1])
}

fn csr(i: usize) -> Vec<u8> {
    let key = PKey::from_ec_key(
        EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap()).unwrap(),
    )
    .unwrap();
    let ip = format!(
        "10.{}.{}.{}",
        (i >> 16) & 255,
        (i >> 8) & 255,
        (i & 255).max(1)
    );
    let mut b = X509ReqBuilder::new().unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", &ip).unwrap();
    b.set_subject_name(&name.build()).unwrap();
    b.set_pubkey(&key).unwrap();
    let mut exts = Stack::new().unwrap();
    exts.push(
        SubjectAlternativeName::new()
            .ip(&ip)
            .build(&b.x509v3_context(None))
            .unwrap(),
    )
    .unwrap();
    b.add_extensions(&exts).unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    b.build().to_pem().unwrap()
}

/// A fresh CA, policy and spool under `root`; returns the daemon's arguments.
fn setup(root: &Path) -> Vec<String> {
    let _ = fs::remove_dir_all(root);
    fs::create_dir_all(root.join("spool/incoming")).unwrap();
    fs::create_dir_all(root.join("staging")).unwrap();
    fs::write(
        root.join("policy.toml"),
        "version = 1\n[profiles.webhook]\nserial_prefix = 1\nallow = [\"10.0.0.0/8\"]\n",
    )
    .unwrap();
    let args: Vec<String> = [
        "--state",
        "state",
        "--spool",
        "spool",
        "--policy",
        "policy.toml",
    ]
    .iter()
    .map(|a| (*a).to_owned())
    .collect();
    let out = Command::new(BIN)
        .current_dir(root)
        .args(["init", "--no-passphrase"])
        .args(&args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    args
}

fn start(root: &Path, args: &[String], cores: usize) -> Child {
    let log = fs::File::create(root.join("daemon.log")).unwrap();
    let child = Command::new(BIN)
        .current_dir(root)
        .args(["daemon", "--workers", &cores.to_string()])
        .args(args)
        .env("RUST_LOG", "warn,smsgate_ca::daemon=info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let log = root.join("daemon.log");
    wait(
        || fs::read_to_string(&log).is_ok_and(|l| l.contains("daemon ready")),
        Duration::from_secs(30),
    );
    child
}

fn stop(mut child: Child) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = child.wait();
}

fn stage(root: &Path, csrs: &[Vec<u8>]) -> Vec<(PathBuf, PathBuf)> {
    csrs.iter()
        .enumerate()
        .map(|(i, pem)| {
            let from = root.join(format!("staging/r{i}.csr"));
            fs::write(&from, pem).unwrap();
            (from, root.join(format!("spool/incoming/r{i}.csr")))
        })
        .collect()
}

/// Requests per second from the first rename to the last status file.
fn throughput(root: &Path, csrs: &[Vec<u8>], cores: usize) -> f64 {
    let args = setup(root);
    let files = stage(root, csrs);
    let child = start(root, &args, cores);
    let t0 = Instant::now();
    for (from, to) in &files {
        fs::rename(from, to).unwrap();
    }
    let status = root.join("spool/status");
    wait(|| count(&status) >= csrs.len(), Duration::from_secs(600));
    let secs = t0.elapsed().as_secs_f64();
    stop(child);
    csrs.len() as f64 / secs
}

/// The disk's durable-write ceiling: per request, `files` files each written to a temp name,
/// fsynced, renamed and the directory fsynced, one at a time.
fn synthetic_durable_writer(dir: &Path, requests: usize, files: usize) -> f64 {
    use std::io::Write;
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir).unwrap();
    let body = vec![b'x'; 1200];
    let dirf = fs::File::open(dir).unwrap();
    let t0 = Instant::now();
    for i in 0..requests {
        for j in 0..files {
            let tmp = dir.join(format!(".{i}-{j}.tmp"));
            let mut f = fs::File::create(&tmp).unwrap();
            f.write_all(&body).unwrap();
            f.sync_all().unwrap();
            fs::rename(&tmp, dir.join(format!("{i}-{j}"))).unwrap();
            dirf.sync_all().unwrap();
        }
    }
    let rate = requests as f64 / t0.elapsed().as_secs_f64();
    let _ = fs::remove_dir_all(dir);
    rate
}

/// p50 and p99 in ms of rename → status file for single requests into an idle daemon.
fn latency(root: &Path, samples: usize) -> (f64, f64) {
    let args = setup(root);
    let csrs: Vec<Vec<u8>> = (0..samples).map(csr).collect();
    let files = stage(root, &csrs);
    let child = start(root, &args, 2);
    let mut ms = Vec::with_capacity(samples);
    for (i, (from, to)) in files.iter().enumerate() {
        let status = root.join(format!("spool/status/r{i}.json"));
        let t0 = Instant::now();
        fs::rename(from, to).unwrap();
        while !status.exists() {
            std::thread::sleep(Duration::from_micros(100));
            assert!(t0.elapsed() < Duration::from_secs(10), "no status for r{i}");
        }
        ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        std::thread::sleep(Duration::from_millis(5));
    }
    stop(child);
    ms.sort_by(f64::total_cmp);
    (ms[samples / 2], ms[(samples * 99 / 100).min(samples - 1)])
}

/// Peak RSS (kB) of a daemon started with `csrs` already queued in incoming/.
fn peak_rss(root: &Path, csrs: &[Vec<u8>], cores: usize) -> u64 {
    let args = setup(root);
    for (from, to) in stage(root, csrs) {
        fs::rename(from, to).unwrap();
    }
    let child = start(root, &args, cores);
    let pid = child.id();
    let status = root.join("spool/status");
    wait(|| count(&status) >= csrs.len(), Duration::from_secs(1200));
    let hwm = fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0);
    stop(child);
    hwm
}

fn count(dir: &Path) -> usize {
    fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .count()
        })
        .unwrap_or(0)
}

fn wait(cond: impl Fn() -> bool, limit: Duration) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < limit, "benchmark step timed out");
        std::thread::sleep(Duration::from_millis(2));
    }
}
