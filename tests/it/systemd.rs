//! The operations files in `systemd/` (DESIGN.md §8, issue 3 item 7, issue 4 item 5).
//!
//! Every shipped unit passes `systemd-analyze verify`; the signer daemon's unit keeps its
//! sandbox (no network at all, the CA passphrase as a credential, exposure ≤ 2.0 by
//! `systemd-analyze security`) and a syscall filter that still allows what the daemon
//! calls; the sysusers and tmpfiles snippets create the users and the directory modes the
//! units rely on; the example config file parses with the program's own config types.
//!
//! The systemd tools are looked up on `PATH`; a test whose tool is missing says so on
//! stderr and passes, so that the suite runs on machines without systemd.

// The helpers below are test code too; clippy's allow-unwrap-in-tests only covers #[test] fns.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use clap::Parser;
use smsgate_ca::cli::settings::{ConfigFile, Settings};
use smsgate_ca::cli::{Cli, GlobalArgs};

#[test]
fn every_unit_passes_systemd_analyze_verify() {
    if !have("systemd-analyze") {
        return;
    }
    let units = Units::install();
    let out = analyze(&units, &["verify", "--man=no"], &units.paths());
    let problems = units.lines_about_us(&out);
    assert!(
        out.status.success() && problems.is_empty(),
        "systemd-analyze verify ({}) reports problems in our units:\n{}\n--- full output:\n{}",
        out.status,
        problems.join("\n"),
        text(&out)
    );
}

/// The check above must fail on a broken unit, or it proves nothing: `verify` exits 0 for
/// unknown keys and unparsable values and only prints a line naming the file.
#[test]
fn verify_check_catches_a_broken_unit() {
    if !have("systemd-analyze") {
        return;
    }
    let units = Units::install();
    let broken = units.dir.path().join("smsgate-ca-daemon.service");
    let unit = fs::read_to_string(&broken).unwrap();
    let unit = unit
        .replace("ProtectClock=yes", "ProtectClok=yes")
        .replace("UMask=0077", "UMask=0999");
    fs::write(&broken, unit).unwrap();
    let out = analyze(&units, &["verify", "--man=no"], &[broken]);
    let problems = units.lines_about_us(&out);
    assert!(
        problems.iter().any(|l| l.contains("ProtectClok"))
            && problems.iter().any(|l| l.contains("0999")),
        "a misspelt key and a bad mode went unnoticed:\n{}",
        text(&out)
    );
}

#[test]
fn daemon_unit_exposure_is_at_most_2() {
    if !have("systemd-analyze") {
        return;
    }
    let units = Units::install();
    let daemon = units.dir.path().join(DAEMON);
    let out = analyze(&units, &["security", "--offline=yes"], &[daemon]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let exposure = stdout
        .lines()
        .find_map(|l| {
            l.split_once("Overall exposure level for ")?
                .1
                .split_once(": ")
        })
        .and_then(|(_, rest)| rest.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no overall exposure level in:\n{}", text(&out)));
    eprintln!("systemd-analyze security: {DAEMON} exposure {exposure}");
    assert!(exposure <= 2.0, "exposure {exposure} > 2.0:\n{stdout}");
}

/// Issue 3 item 7, read from the parsed unit (a commented-out line does not count).
#[test]
fn daemon_unit_has_no_network_and_gets_the_passphrase_as_a_credential() {
    let unit = Unit::read(DAEMON);
    for (key, value) in [
        ("PrivateNetwork", "yes"),
        ("IPAddressDeny", "any"),
        ("RestrictAddressFamilies", "AF_UNIX"),
        ("UMask", "0077"),
        ("User", "smsgate-ca"),
        ("Group", "smsgate-ca"),
        ("ProtectSystem", "strict"),
        ("NoNewPrivileges", "yes"),
        ("PrivateTmp", "yes"),
        ("ProtectHome", "yes"),
        ("CapabilityBoundingSet", ""),
        ("MemoryDenyWriteExecute", "yes"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
    ] {
        assert_eq!(unit.all(key), [value], "{DAEMON}: {key}=");
    }
    assert!(
        ["notify", "notify-reload"].contains(&unit.one("Type")),
        "{DAEMON}: Type="
    );
    assert!(
        !unit.one("WatchdogSec").is_empty(),
        "{DAEMON}: WatchdogSec="
    );
    assert_eq!(
        unit.all("LoadCredential"),
        ["ca-passphrase:/etc/smsgate-ca/ca-passphrase"]
    );
    assert_eq!(unit.all("SystemCallFilter")[0], "@system-service");
    let writable = unit.words("ReadWritePaths");
    assert_eq!(writable, [STATE, SPOOL], "{DAEMON}: ReadWritePaths=");

    // The program's paths are the sandbox's, and the passphrase never comes from argv.
    let exec = unit.one("ExecStart");
    assert!(exec.contains(&format!("--state {STATE} ")), "{exec}");
    assert!(exec.contains(&format!("--spool {SPOOL} ")), "{exec}");
    assert!(!exec.contains("passphrase"), "{exec}");
}

/// Only the daemon sees the CA: serve and sync get no passphrase and no path into the CA
/// state, and are not the daemon's user.
#[test]
fn online_units_never_see_the_ca_key() {
    for name in [SERVE, SYNC] {
        let unit = Unit::read(name);
        assert_eq!(unit.one("Type"), "exec", "{name}: Type=");
        assert!(
            unit.all("LoadCredential")
                .iter()
                .all(|c| c.starts_with("sync-token:")),
            "{name}: LoadCredential="
        );
        for (key, value) in &unit.entries {
            assert!(!value.contains("passphrase"), "{name}: {key}={value}");
            assert!(
                !value
                    .split_whitespace()
                    .any(|w| w == STATE || w.starts_with(&format!("{STATE}/"))),
                "{name}: {key}={value} reaches the CA state"
            );
        }
        assert_ne!(
            unit.all("User"),
            ["smsgate-ca"],
            "{name} runs as the daemon's user"
        );
        assert_eq!(
            unit.all("PrivateNetwork"),
            Vec::<&str>::new(),
            "{name} needs the network"
        );
        for key in [
            "NoNewPrivileges",
            "ProtectHome",
            "PrivateTmp",
            "MemoryDenyWriteExecute",
        ] {
            assert_eq!(unit.all(key), ["yes"], "{name}: {key}=");
        }
        assert_eq!(
            unit.all("ProtectSystem"),
            ["strict"],
            "{name}: ProtectSystem="
        );
        assert_eq!(
            unit.all("CapabilityBoundingSet"),
            [""],
            "{name}: CapabilityBoundingSet="
        );
        assert_eq!(
            unit.words("RestrictAddressFamilies"),
            ["AF_INET", "AF_INET6", "AF_UNIX"],
            "{name}: RestrictAddressFamilies="
        );
    }
    let sync = Unit::read(SYNC);
    assert_eq!(sync.words("ReadWritePaths"), [SPOOL]);
    assert!(sync.one("ExecStart").contains(&format!("--spool {SPOOL} ")));
    let serve = Unit::read(SERVE);
    assert_eq!(serve.all("StateDirectory"), ["smsgate-ca-serve"]);
}

/// The daemon calls syncfs(2) and flock(2) and watches with inotify; the filter (the
/// allow list minus the `~` lists, with `@default` always allowed) must keep them, or the
/// kernel answers EPERM in the middle of a batch.
#[test]
fn syscall_filters_keep_what_the_daemon_calls() {
    if !have("systemd-analyze") {
        return;
    }
    let out = Command::new("systemd-analyze")
        .arg("syscall-filter")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let groups = parse_syscall_groups(&String::from_utf8_lossy(&out.stdout));
    for name in [DAEMON, SERVE, SYNC, RENEW] {
        let unit = Unit::read(name);
        let mut allowed = expand(&groups, "@default");
        let mut denied = BTreeSet::new();
        for (i, line) in unit.all("SystemCallFilter").iter().enumerate() {
            let (deny, list) = match line.strip_prefix('~') {
                Some(list) => (true, list),
                None => (false, *line),
            };
            assert!(
                deny || i == 0,
                "{name}: an allow list after the first line widens it"
            );
            for item in list.split_whitespace() {
                let set = expand(&groups, item);
                if deny {
                    denied.extend(set)
                } else {
                    allowed.extend(set)
                }
            }
        }
        let effective: BTreeSet<_> = allowed.difference(&denied).cloned().collect();
        for call in NEEDED_SYSCALLS {
            assert!(
                effective.contains(*call),
                "{name}: SystemCallFilter= forbids {call}"
            );
        }
    }
}

/// Users and groups named by the units and tmpfiles exist in sysusers; tmpfiles gives the
/// CA state 0700 and the spool its shared group.
#[test]
fn sysusers_declare_everything_the_units_and_tmpfiles_use() {
    let sysusers = read(SYSUSERS);
    let mut users = BTreeSet::new();
    let mut groups = BTreeSet::new();
    for line in config_lines(&sysusers) {
        match line.as_slice() {
            ["u", name, ..] => {
                users.insert(name.to_string());
                groups.insert(name.to_string());
            }
            ["g", name, ..] => {
                groups.insert(name.to_string());
            }
            ["m", user, group] => {
                assert!(users.contains(*user), "m line for undeclared user {user}");
                assert!(
                    groups.contains(*group),
                    "m line for undeclared group {group}"
                );
            }
            other => panic!("{SYSUSERS}: unexpected line {other:?}"),
        }
    }
    for name in [DAEMON, SERVE, SYNC] {
        let unit = Unit::read(name);
        if unit.all("DynamicUser") == ["yes"] {
            continue;
        }
        for user in unit.all("User") {
            assert!(
                users.contains(user),
                "{name}: User={user} is not in {SYSUSERS}"
            );
        }
        for group in unit
            .words("Group")
            .into_iter()
            .chain(unit.words("SupplementaryGroups"))
        {
            assert!(
                groups.contains(group),
                "{name}: group {group} is not in {SYSUSERS}"
            );
        }
    }

    let tmpfiles = read(TMPFILES);
    let entries: BTreeMap<String, Vec<String>> = config_lines(&tmpfiles)
        .into_iter()
        .map(|l| (l[1].to_string(), l.iter().map(|s| s.to_string()).collect()))
        .collect();
    for fields in entries.values() {
        for (i, kind) in [(3, &users), (4, &groups)] {
            let who = &fields[i];
            assert!(
                who == "-" || who == "root" || kind.contains(who),
                "{TMPFILES}: {who} is not in {SYSUSERS}"
            );
        }
        assert_eq!(
            fields.get(5).map(String::as_str),
            Some("-"),
            "{TMPFILES}: an age cleans up"
        );
    }
    let expect = |path: &str, mode: &str, user: &str, group: &str| {
        let fields = entries
            .get(path)
            .unwrap_or_else(|| panic!("{TMPFILES} lacks {path}"));
        assert_eq!(
            fields[..5],
            ["d", path, mode, user, group],
            "{TMPFILES}: {path}"
        );
    };
    expect(STATE, "0700", "smsgate-ca", "smsgate-ca");
    expect(SPOOL, "0750", "smsgate-ca", "smsgate-ca-spool");
    expect(
        &format!("{SPOOL}/incoming"),
        "2770",
        "smsgate-ca",
        "smsgate-ca-spool",
    );
    expect(
        &format!("{SPOOL}/status"),
        "2750",
        "smsgate-ca",
        "smsgate-ca-spool",
    );
    expect(
        &format!("{SPOOL}/published"),
        "2750",
        "smsgate-ca",
        "smsgate-ca-spool",
    );
}

/// `systemd-sysusers --dry-run` accepts the snippet; as root, sysusers and tmpfiles applied
/// to an empty alternate root (`--root=`) make exactly the owners and modes we promise.
/// (systemd-tmpfiles has no `--dry-run` before v256, hence the alternate root.)
#[test]
fn sysusers_and_tmpfiles_apply_cleanly() {
    if !have("systemd-sysusers") || !have("systemd-tmpfiles") {
        return;
    }
    let sysusers = systemd_dir().join(SYSUSERS);
    let tmpfiles = systemd_dir().join(TMPFILES);
    if help_mentions("systemd-sysusers", "--dry-run") {
        let out = Command::new("systemd-sysusers")
            .arg("--dry-run")
            .arg(&sysusers)
            .output();
        let out = out.unwrap();
        assert!(
            out.status.success(),
            "systemd-sysusers --dry-run:\n{}",
            text(&out)
        );
    }
    if !running_as_root() {
        eprintln!("skipped: applying sysusers/tmpfiles to an alternate root needs root");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    fs::create_dir(root.path().join("etc")).unwrap();
    let run = |tool: &str, args: &[&str], file: &Path| {
        let out = Command::new(tool)
            .arg(format!("--root={}", root.path().display()))
            .args(args)
            .arg(file)
            .output()
            .unwrap();
        let complaints: Vec<_> = text(&out)
            .lines()
            .filter(|l| !l.starts_with("Creating "))
            .map(String::from)
            .collect();
        assert!(
            out.status.success() && complaints.is_empty(),
            "{tool}:\n{}",
            complaints.join("\n")
        );
    };
    run("systemd-sysusers", &[], &sysusers);
    run("systemd-tmpfiles", &["--create"], &tmpfiles);

    let ids = |file: &str| -> BTreeMap<u32, String> {
        fs::read_to_string(root.path().join("etc").join(file))
            .unwrap()
            .lines()
            .filter_map(|l| {
                let f: Vec<_> = l.split(':').collect();
                Some((f.get(2)?.parse().ok()?, f[0].to_string()))
            })
            .collect()
    };
    let (passwd, group) = (ids("passwd"), ids("group"));
    let groups = fs::read_to_string(root.path().join("etc/group")).unwrap();
    let members: BTreeSet<&str> = groups
        .lines()
        .find_map(|l| l.strip_prefix("smsgate-ca-spool:"))
        .and_then(|l| l.rsplit(':').next())
        .map(|m| m.split(',').collect())
        .unwrap_or_default();
    assert_eq!(
        members,
        BTreeSet::from(["smsgate-ca", "smsgate-ca-sync"]),
        "{groups}"
    );
    let check = |path: &str, mode: u32, user: &str, grp: &str| {
        let meta = fs::metadata(root.path().join(path.trim_start_matches('/'))).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, mode, "{path} mode");
        assert_eq!(
            passwd.get(&meta.uid()).map(String::as_str),
            Some(user),
            "{path} owner"
        );
        assert_eq!(
            group.get(&meta.gid()).map(String::as_str),
            Some(grp),
            "{path} group"
        );
    };
    check(STATE, 0o700, "smsgate-ca", "smsgate-ca");
    check(SPOOL, 0o750, "smsgate-ca", "smsgate-ca-spool");
    check(
        &format!("{SPOOL}/incoming"),
        0o2770,
        "smsgate-ca",
        "smsgate-ca-spool",
    );
    check(
        &format!("{SPOOL}/status"),
        0o2750,
        "smsgate-ca",
        "smsgate-ca-spool",
    );
    check(
        &format!("{SPOOL}/published"),
        0o2750,
        "smsgate-ca",
        "smsgate-ca-spool",
    );
    let config = root.path().join("etc/smsgate-ca/config.toml");
    assert_eq!(
        fs::read(&config).unwrap(),
        b"",
        "tmpfiles creates an empty config.toml"
    );
}

/// The example config parses with the program's own types (unknown keys are errors), with
/// its commented-out examples too, and names the paths the units sandbox.
#[test]
fn example_config_parses_and_matches_the_units() {
    let path = systemd_dir().join("config.toml");
    let settings = Settings::resolve(&GlobalArgs {
        config: Some(path.clone()),
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
    assert_eq!(settings.state, Path::new(STATE));
    assert_eq!(settings.spool, Path::new(SPOOL));
    assert_eq!(settings.policy, Path::new(POLICY));
    assert_eq!(
        settings.passphrase_file, None,
        "a passphrase file would beat the credential"
    );
    assert_eq!(settings.file.listen.as_deref(), Some("127.0.0.1:3000"));

    let uncommented: String = read("config.toml")
        .lines()
        .map(|l| match l.strip_prefix('#') {
            Some(rest) if rest.split_once(" = ").is_some_and(|(k, _)| is_key(k)) => rest,
            _ => l,
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let all: ConfigFile = toml::from_str(&uncommented).unwrap_or_else(|e| panic!("{e}"));
    assert!(all.passphrase_file.is_some() && all.workers.is_some() && all.metrics_file.is_some());
}

/// The daemon's command line parses with the real CLI (flags may stand before the
/// subcommand).
#[test]
fn daemon_exec_start_parses() {
    parse_exec_start(
        &Unit::read(DAEMON)
            .one("ExecStart")
            .replace("%d", CREDENTIALS),
    );
}

/// The renewal timer's two commands (`check`, then `webhooks --renew`), checked the same way.
#[test]
fn renew_exec_start_parses() {
    let renew = Unit::read(RENEW).one("ExecStart").to_string();
    let script = renew
        .strip_prefix("/bin/sh -c '")
        .and_then(|s| s.strip_suffix('\''))
        .unwrap_or_else(|| panic!("{RENEW}: ExecStart is not /bin/sh -c '…': {renew}"));
    let commands: Vec<&str> = script.split("||").map(str::trim).collect();
    assert_eq!(commands.len(), 2, "{renew}");
    for command in commands {
        parse_exec_start(command);
    }
}

/// serve's and sync's command lines, checked the same way.
#[test]
fn online_exec_start_parses() {
    for name in [SERVE, SYNC] {
        parse_exec_start(&Unit::read(name).one("ExecStart").replace("%d", CREDENTIALS));
    }
}

fn parse_exec_start(line: &str) {
    let argv: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(argv[0], INSTALLED_BIN, "{line}");
    if let Err(e) = Cli::try_parse_from(&argv) {
        panic!("{line}\n{e}");
    }
}

/// The units, copied into a temp dir with the installed binary's path replaced by the one
/// cargo built, so that `verify` checks the rest instead of stopping at a missing binary.
struct Units {
    dir: tempfile::TempDir,
    names: Vec<String>,
}

impl Units {
    fn install() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let bin = env!("CARGO_BIN_EXE_smsgate-ca");
        let mut names = Vec::new();
        for entry in fs::read_dir(systemd_dir()).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if !(name.ends_with(".service") || name.ends_with(".timer")) {
                continue;
            }
            let unit = fs::read_to_string(&path).unwrap();
            if name.ends_with(".service") {
                let exec = Unit::parse(&name, &unit).one("ExecStart").to_string();
                assert!(
                    exec.contains(INSTALLED_BIN),
                    "{name}: ExecStart does not run {INSTALLED_BIN}"
                );
            }
            fs::write(dir.path().join(&name), unit.replace(INSTALLED_BIN, bin)).unwrap();
            names.push(name);
        }
        names.sort();
        for expected in [DAEMON, SERVE, SYNC, RENEW, "smsgate-ca-renew.timer"] {
            assert!(
                names.iter().any(|n| n == expected),
                "systemd/{expected} is missing"
            );
        }
        Self { dir, names }
    }

    fn paths(&self) -> Vec<PathBuf> {
        self.names.iter().map(|n| self.dir.path().join(n)).collect()
    }

    /// Output lines that name one of our units or the temp dir: systemd-analyze prefixes
    /// every complaint about a unit with its file or unit name. Lines about the host's own
    /// units (pulled in as dependencies) are not ours to fix.
    fn lines_about_us(&self, out: &Output) -> Vec<String> {
        let dir = self.dir.path().to_string_lossy().into_owned();
        text(out)
            .lines()
            .filter(|l| l.contains(&dir) || self.names.iter().any(|n| l.contains(n.as_str())))
            .map(String::from)
            .collect()
    }
}

/// A unit file's `[Service]`/`[Timer]` assignments, comments and continuations resolved
/// the way systemd reads them (an empty assignment resets a list).
struct Unit {
    entries: Vec<(String, String)>,
}

impl Unit {
    fn read(name: &str) -> Self {
        Self::parse(name, &read(name))
    }

    fn parse(name: &str, text: &str) -> Self {
        let mut entries = Vec::new();
        let mut logical = String::new();
        for raw in text.lines() {
            let line = raw.trim();
            if logical.is_empty() && (line.starts_with('#') || line.starts_with(';')) {
                continue;
            }
            if let Some(head) = line.strip_suffix('\\') {
                logical.push_str(head);
                logical.push(' ');
                continue;
            }
            logical.push_str(line);
            let full = std::mem::take(&mut logical);
            if full.is_empty() || full.starts_with('[') {
                continue;
            }
            let (key, value) = full
                .split_once('=')
                .unwrap_or_else(|| panic!("{name}: not an assignment: {full}"));
            entries.push((key.trim().to_string(), value.trim().to_string()));
        }
        Self { entries }
    }

    /// Every value assigned to `key` since its last reset.
    fn all(&self, key: &str) -> Vec<&str> {
        let mut values = Vec::new();
        for (k, v) in &self.entries {
            if k == key {
                if v.is_empty() {
                    values.clear();
                }
                values.push(v.as_str());
            }
        }
        if values.len() > 1 && values[0].is_empty() {
            values.remove(0);
        }
        values
    }

    /// The single value of `key`.
    fn one(&self, key: &str) -> &str {
        match self.all(key).as_slice() {
            [v] => v,
            other => panic!("expected one {key}=, found {other:?}"),
        }
    }

    /// The space-separated words of all `key=` lines, sorted.
    fn words(&self, key: &str) -> Vec<&str> {
        let mut words: Vec<&str> = self
            .all(key)
            .into_iter()
            .flat_map(str::split_whitespace)
            .collect();
        words.sort_unstable();
        words
    }
}

fn parse_syscall_groups(listing: &str) -> BTreeMap<String, Vec<String>> {
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current = None;
    for line in listing.lines() {
        if line.starts_with('@') {
            let name = line.trim().to_string();
            groups.entry(name.clone()).or_default();
            current = Some(name);
        } else if !line.starts_with(' ') {
            current = None;
        } else if let Some(group) = &current {
            let item = line.trim();
            if !item.is_empty() && !item.starts_with('#') {
                groups.get_mut(group).unwrap().push(item.to_string());
            }
        }
    }
    assert!(
        groups.contains_key("@system-service"),
        "no @system-service in:\n{listing}"
    );
    groups
}

fn expand(groups: &BTreeMap<String, Vec<String>>, item: &str) -> BTreeSet<String> {
    if !item.starts_with('@') {
        return BTreeSet::from([item.to_string()]);
    }
    let members = groups
        .get(item)
        .unwrap_or_else(|| panic!("unknown syscall group {item}"));
    members.iter().flat_map(|m| expand(groups, m)).collect()
}

/// Non-comment lines of a sysusers/tmpfiles snippet, split into fields (a quoted GECOS
/// counts as one field).
fn config_lines(text: &str) -> Vec<Vec<&str>> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let mut fields = Vec::new();
            let mut rest = l;
            while !rest.is_empty() {
                let (field, tail) = match rest.strip_prefix('"') {
                    Some(quoted) => quoted.split_once('"').expect("closing quote"),
                    None => rest.split_once(char::is_whitespace).unwrap_or((rest, "")),
                };
                fields.push(field);
                rest = tail.trim_start();
            }
            fields
        })
        .collect()
}

fn analyze(units: &Units, args: &[&str], files: &[PathBuf]) -> Output {
    Command::new("systemd-analyze")
        .args(args)
        .args(files)
        .current_dir(units.dir.path())
        .env("SYSTEMD_LOG_COLOR", "0")
        .env("SYSTEMD_COLORS", "0")
        .output()
        .expect("run systemd-analyze")
}

/// Whether `tool` runs; says why the caller skips when it does not.
fn have(tool: &str) -> bool {
    let ok = Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("skipped: {tool} is not installed");
    }
    ok
}

fn help_mentions(tool: &str, flag: &str) -> bool {
    Command::new(tool)
        .arg("--help")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(flag))
}

fn running_as_root() -> bool {
    let probe = tempfile::tempfile().unwrap();
    probe.metadata().unwrap().uid() == 0
}

fn is_key(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_lowercase() || c == '-')
}

fn systemd_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd")
}

fn read(name: &str) -> String {
    let path = systemd_dir().join(name);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

const DAEMON: &str = "smsgate-ca-daemon.service";
const SERVE: &str = "smsgate-ca-serve.service";
const SYNC: &str = "smsgate-ca-sync.service";
const RENEW: &str = "smsgate-ca-renew.service";
const SYSUSERS: &str = "smsgate-ca.sysusers";
const TMPFILES: &str = "smsgate-ca.tmpfiles";
const INSTALLED_BIN: &str = "/usr/bin/smsgate-ca";
const STATE: &str = "/var/lib/smsgate-ca";
const SPOOL: &str = "/var/spool/smsgate-ca";
const POLICY: &str = "/etc/smsgate-ca/policy.toml";
const CREDENTIALS: &str = "/run/credentials/unit";

/// What the daemon must be able to call (fsx.rs, spool lock, watcher, workers).
const NEEDED_SYSCALLS: &[&str] = &[
    "syncfs",
    "fsync",
    "fdatasync",
    "flock",
    "inotify_init1",
    "inotify_add_watch",
    "inotify_rm_watch",
    "rename",
    "renameat",
    "renameat2",
    "openat",
    "fchmod",
    "epoll_wait",
    "sched_getaffinity",
    "getrandom",
    "clone3",
];
