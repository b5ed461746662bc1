//! `--config FILE` (DESIGN §6): the global flags' keys in TOML, relative paths resolved against
//! the file's directory, flags winning over the file, unknown keys refused with their line.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_smsgate-ca");

#[test]
fn config_file_keys_are_used_and_flags_win() {
    let dir = tempfile::tempdir().unwrap();
    let policy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policy/default.toml");
    let conf = dir.path().join("conf/smsgate.toml");
    std::fs::create_dir_all(conf.parent().unwrap()).unwrap();
    std::fs::write(
        &conf,
        format!(
            "state = \"from-file\"\nspool = \"spool\"\npolicy = {:?}\n",
            policy.display().to_string()
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&conf)
        .args(["init", "--no-passphrase"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        dir.path().join("conf/from-file/ca.key").exists(),
        "relative to the config file"
    );

    let flag_state = dir.path().join("from-flag");
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&conf)
        .args(["init", "--no-passphrase", "--state"])
        .arg(&flag_state)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        flag_state.join("ca.key").exists(),
        "the flag wins over the file"
    );
}

#[test]
fn unknown_config_keys_exit_2_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("c.toml");
    std::fs::write(&conf, "state = \"s\"\n\nstat = \"typo\"\n").unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&conf)
        .arg("list")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("c.toml:3") && err.contains("stat"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}
