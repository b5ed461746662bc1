//! Issue 12: the CA key in a PKCS#11 token (DESIGN §6 "Keys in hardware"), with a real
//! SoftHSM2 token in a private token directory (`SOFTHSM2_CONF` points at a temp config) and
//! OpenSC's `pkcs11-tool` to look at it from outside: `init` generating in the token or
//! adopting a key, `process` and `daemon` signing through it, `revoke` + `crl` and `ledger
//! verify`, the PIN (wrong, missing, loose; never in logs, argv or the environment), the token
//! going away and coming back, and no private key material in the state directory.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use x509_parser::prelude::FromDer;

use crate::util::*;

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const USER_PIN: &str = "731905";
const SO_PIN: &str = "12345678";
const TOKEN: &str = "smsgate-test";

/// A SoftHSM2 token directory of its own, one initialised token and a 0600 PIN file.
struct Token {
    conf: PathBuf,
    dir: PathBuf,
    pin_file: PathBuf,
}

impl Token {
    fn new(env: &TestEnv) -> Self {
        assert!(
            Path::new(MODULE).exists(),
            "SoftHSM2 is not installed ({MODULE}): apt-get install softhsm2 opensc"
        );
        let dir = env.root.join("tokens");
        fs::create_dir_all(&dir).unwrap();
        let conf = env.root.join("softhsm2.conf");
        fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                dir.display()
            ),
        )
        .unwrap();
        let t = Self {
            conf,
            dir,
            pin_file: env.root.join("ca-pin"),
        };
        let out = t
            .tool("softhsm2-util")
            .args(["--init-token", "--free", "--label", TOKEN])
            .args(["--so-pin", SO_PIN, "--pin", USER_PIN])
            .output()
            .unwrap();
        assert!(out.status.success(), "softhsm2-util: {out:?}");
        fs::write(&t.pin_file, format!("{USER_PIN}\n")).unwrap();
        fs::set_permissions(&t.pin_file, fs::Permissions::from_mode(0o600)).unwrap();
        t
    }

    fn tool(&self, name: &str) -> Command {
        let mut c = Command::new(name);
        c.env("SOFTHSM2_CONF", &self.conf);
        c
    }

    /// `pkcs11-tool --module … --token-label … --login --pin … ARGS` (the test's own view of
    /// the token; the PIN on this command line is the test's, never the CA's).
    fn pkcs11_tool(&self, args: &[&str]) -> String {
        let out = self
            .tool("pkcs11-tool")
            .args([
                "--module",
                MODULE,
                "--token-label",
                TOKEN,
                "--login",
                "--pin",
                USER_PIN,
            ])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pkcs11-tool {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The token's public key with this id, as PEM SubjectPublicKeyInfo.
    fn public_key_pem(&self, env: &TestEnv, id: &str) -> String {
        let der = env.work.join(format!("token-pub-{id}.der"));
        self.pkcs11_tool(&[
            "--read-object",
            "--type",
            "pubkey",
            "--id",
            id,
            "--output-file",
            der.to_str().unwrap(),
        ]);
        openssl_ok(&[
            "pkey",
            "-pubin",
            "-inform",
            "DER",
            "-in",
            der.to_str().unwrap(),
        ])
    }

    /// The `ID:` of the first private key object `pkcs11-tool --list-objects` shows.
    fn private_key_id(&self) -> String {
        let list = self.pkcs11_tool(&["--list-objects", "--type", "privkey"]);
        list.lines()
            .find_map(|l| l.trim().strip_prefix("ID:"))
            .map(|id| id.trim().to_owned())
            .unwrap_or_else(|| panic!("no private key in the token:\n{list}"))
    }
}

/// `smsgate-ca ARGS` with the env's flags, the token's config and `--pin-file`.
fn cmd(env: &TestEnv, t: &Token, args: &[&str]) -> Command {
    let mut c = env.cmd(args);
    c.arg("--pin-file")
        .arg(&t.pin_file)
        .env("SOFTHSM2_CONF", &t.conf);
    c
}

fn init_in_token(env: &TestEnv, t: &Token, extra: &[&str]) -> Run {
    let uri = format!("pkcs11:token={TOKEN};object=issuing");
    let mut args = vec![
        "init",
        "--pkcs11-module",
        MODULE,
        "--key-uri",
        &uri,
        "--generate-in-token",
    ];
    args.extend_from_slice(extra);
    run(cmd(env, t, &args))
}

/// The CA certificate's public key, PEM.
fn ca_public_key(env: &TestEnv) -> String {
    openssl_ok(&[
        "x509".as_ref(),
        "-in".as_ref(),
        env.ca_cert().as_os_str(),
        "-noout".as_ref(),
        "-pubkey".as_ref(),
    ])
}

/// Every file under the state directory that holds a private key in any form.
fn private_keys_in(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            found.extend(private_keys_in(&p));
        } else if fs::read_to_string(&p).is_ok_and(|t| t.contains("PRIVATE KEY")) {
            found.push(p);
        }
    }
    found
}

/// Issue 12: `init --generate-in-token --root-only` makes the CA key in the token, sensitive
/// and never extractable; the state records module and URI only, and holds no private key;
/// the CA certificate carries the token's public key.
#[test]
fn issue_12_init_generates_a_never_extractable_key_in_the_token() {
    let env = TestEnv::without_ca(DEFAULT_POLICY);
    let t = Token::new(&env);
    init_in_token(&env, &t, &["--root-only"])
        .success()
        .stdout_has("PKCS#11 token");
    let objects = t.pkcs11_tool(&["--list-objects", "--type", "privkey"]);
    assert!(
        objects.contains("sensitive") && objects.contains("never extractable"),
        "the token's key must be sensitive and never extractable:\n{objects}"
    );
    assert!(
        !objects.contains("  Usage:      decrypt"),
        "a CA key only signs:\n{objects}"
    );
    let record: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(env.state.join("pkcs11.json")).unwrap()).unwrap();
    assert_eq!(record["module"], MODULE);
    assert_eq!(
        record["uri"],
        format!("pkcs11:token={TOKEN};object=issuing")
    );
    assert!(!fs::read_to_string(env.state.join("pkcs11.json"))
        .unwrap()
        .contains(USER_PIN));
    assert_eq!(private_keys_in(&env.state), Vec::<PathBuf>::new());
    assert!(!env.state.join("ca.key").exists());
    let id = t.private_key_id();
    assert_eq!(ca_public_key(&env), t.public_key_pem(&env, &id));
    // The self-signed CA certificate verifies (the token signed it).
    openssl_ok(&[
        "verify".as_ref(),
        "-CAfile".as_ref(),
        env.root_cert().as_os_str(),
        env.ca_cert().as_os_str(),
    ]);
}

/// Issue 12: adopting a key made with `pkcs11-tool --keypairgen` (by id), in a two-tier CA:
/// the intermediate certifies the token's key, the root key is an encrypted file, and `process`
/// and `revoke` + `crl` and `ledger verify` all work through the token.
#[test]
fn issue_12_adopted_key_signs_leaves_crls_and_checkpoints() {
    let env = TestEnv::without_ca(DEFAULT_POLICY);
    let t = Token::new(&env);
    t.pkcs11_tool(&[
        "--keypairgen",
        "--key-type",
        "EC:prime256v1",
        "--label",
        "adopted",
        "--id",
        "a1b2",
    ]);
    run(cmd(
        &env,
        &t,
        &[
            "init",
            "--pkcs11-module",
            MODULE,
            "--key-uri",
            &format!("pkcs11:token={TOKEN};id=%a1%b2"),
        ],
    ))
    .success();
    assert_eq!(ca_public_key(&env), t.public_key_pem(&env, "a1b2"));
    assert!(!env.state.join("ca.key").exists());
    assert_eq!(
        private_keys_in(&env.state),
        vec![env.state.join("root.key")]
    );
    assert!(fs::read_to_string(env.state.join("root.key"))
        .unwrap()
        .starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));

    for i in 1..=3 {
        env.drop_csr(&format!("p{i}"), &CsrSpec::ip(&format!("10.9.0.{i}")));
    }
    run(cmd(&env, &t, &["process"]))
        .success()
        .stdout_has("3 approved");
    for i in 1..=3 {
        env.check_issued(
            &format!("p{i}"),
            &LeafExpect::webhook(&format!("10.9.0.{i}")),
        );
    }

    run(cmd(
        &env,
        &t,
        &["revoke", "p2", "--reason", "keyCompromise"],
    ))
    .success();
    let crl = env.spool_dir("published").join("ca.crl");
    // Signed by the token's key: OpenSSL verifies it against the issuing certificate.
    openssl(&[
        "crl".as_ref(),
        "-inform".as_ref(),
        "DER".as_ref(),
        "-in".as_ref(),
        crl.as_os_str(),
        "-CAfile".as_ref(),
        env.ca_cert().as_os_str(),
        "-noout".as_ref(),
    ])
    .success()
    .stderr_has("verify OK");
    env.verify_chain_with(
        &env.issued("p2"),
        &["-crl_check", "-CRLfile", crl.to_str().unwrap()],
    )
    .code_is(2);
    run(cmd(&env, &t, &["crl", "--days", "3"])).success();
    let checkpoint = env.spool_dir("published").join("ledger-checkpoint.json");
    run(cmd(
        &env,
        &t,
        &[
            "ledger",
            "verify",
            "--checkpoint",
            checkpoint.to_str().unwrap(),
        ],
    ))
    .success()
    .stdout_has("ledger OK");
}

/// Issue 12: a wrong PIN is one clear line and exit 1 with nothing signed; a missing or loose
/// PIN file is refused before the token is touched (`--allow-loose-permissions` overrides);
/// no PIN at all says where to put it.
#[test]
fn issue_12_wrong_missing_and_loose_pins() {
    let env = TestEnv::without_ca(DEFAULT_POLICY);
    let t = Token::new(&env);
    init_in_token(&env, &t, &[]).success();
    env.drop_csr("w1", &CsrSpec::ip("10.9.1.1"));
    let ledger_before = fs::read_to_string(env.ledger()).unwrap_or_default();

    fs::write(&t.pin_file, "000000\n").unwrap();
    let r = run(cmd(&env, &t, &["process"])).code_is(1);
    let err = r.stderr();
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("refused the PIN") && err.contains("CKR_PIN_INCORRECT"),
        "{err}"
    );
    assert!(
        !err.contains("000000"),
        "the PIN itself is never printed: {err}"
    );
    assert!(env.status_opt("w1").is_none(), "nothing signed");
    assert_eq!(
        fs::read_to_string(env.ledger()).unwrap_or_default(),
        ledger_before
    );

    fs::write(&t.pin_file, format!("{USER_PIN}\n")).unwrap();
    fs::set_permissions(&t.pin_file, fs::Permissions::from_mode(0o644)).unwrap();
    run(cmd(&env, &t, &["process"]))
        .code_is(1)
        .stderr_has("chmod 600");
    assert!(env.status_opt("w1").is_none());
    let mut loose = cmd(&env, &t, &["process"]);
    loose.arg("--allow-loose-permissions");
    run(loose).success();
    env.assert_approved("w1");

    let mut missing = env.cmd(&["crl"]);
    missing
        .arg("--pin-file")
        .arg(env.root.join("no-such-pin"))
        .env("SOFTHSM2_CONF", &t.conf);
    run(missing).code_is(1).stderr_has("no-such-pin");
    let mut none = env.cmd(&["crl"]);
    none.env("SOFTHSM2_CONF", &t.conf);
    run(none).code_is(1).stderr_has("--pin-file");

    // init checks the PIN file before it touches the token.
    let other = TestEnv::without_ca(DEFAULT_POLICY);
    let t2 = Token::new(&other);
    fs::set_permissions(&t2.pin_file, fs::Permissions::from_mode(0o640)).unwrap();
    init_in_token(&other, &t2, &[])
        .code_is(2)
        .stderr_has("chmod 600");
    fs::set_permissions(&t2.pin_file, fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(&t2.pin_file, "111111\n").unwrap();
    init_in_token(&other, &t2, &["--root-only"])
        .code_is(1)
        .stderr_has("refused the PIN");
    assert!(!other.state.join("ca.crt").exists(), "no CA is left behind");
}

/// Issue 12: the daemon signs 50 requests through the token, every leaf verifies with
/// OpenSSL and carries the token key as issuer key; the PIN is in no log line, not in
/// `/proc/<pid>/cmdline` nor its environment (it comes from `$CREDENTIALS_DIRECTORY/ca-pin`
/// here, as under systemd); when the token goes away requests wait (logged), and when it is
/// back they are signed: nothing lost, nothing held.
#[test]
fn issue_12_daemon_signs_through_the_token_and_waits_while_it_is_away() {
    let env = TestEnv::without_ca(DEFAULT_POLICY);
    let t = Token::new(&env);
    init_in_token(&env, &t, &["--root-only"]).success();
    let creds = env.root.join("creds");
    fs::create_dir_all(&creds).unwrap();
    fs::copy(&t.pin_file, creds.join("ca-pin")).unwrap();
    fs::set_permissions(creds.join("ca-pin"), fs::Permissions::from_mode(0o600)).unwrap();

    let log = env.root.join("daemon.log");
    let mut daemon = env
        .cmd(&["daemon", "--workers", "2", "--rescan-interval", "1s", "-vv"])
        .env("SOFTHSM2_CONF", &t.conf)
        .env("CREDENTIALS_DIRECTORY", &creds)
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let _guard = Kill(&mut daemon);
    let pid = _guard.0.id();
    wait_for("daemon ready", Duration::from_secs(60), || {
        fs::read_to_string(&log).is_ok_and(|l| l.contains("daemon ready"))
    });

    let csrs: Vec<Csr> = (0..50)
        .map(|i| env.csr(&format!("d{i}"), &CsrSpec::ip(&format!("10.9.2.{}", i + 1))))
        .collect();
    for (i, c) in csrs.iter().enumerate() {
        let tmp = env.incoming(format!(".d{i}.tmp"));
        fs::write(&tmp, c.bytes()).unwrap();
        fs::rename(&tmp, env.incoming(format!("d{i}.csr"))).unwrap();
    }
    wait_for("50 status records", Duration::from_secs(120), || {
        (0..50).all(|i| env.status_opt(&format!("d{i}")).is_some())
    });
    let token_key = t.public_key_pem(&env, &t.private_key_id());
    assert_eq!(ca_public_key(&env), token_key);
    for i in 0..50 {
        env.check_issued(
            &format!("d{i}"),
            &LeafExpect::webhook(&format!("10.9.2.{}", i + 1)),
        );
    }

    // The PIN is nowhere a process listing or a log shows.
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let environ = fs::read(format!("/proc/{pid}/environ")).unwrap();
    for (what, bytes) in [("cmdline", &cmdline), ("environ", &environ)] {
        assert!(
            !bytes
                .windows(USER_PIN.len())
                .any(|w| w == USER_PIN.as_bytes()),
            "the PIN is in /proc/{pid}/{what}"
        );
    }

    // The token goes away: a request waits, and the log says why.
    let away = env.root.join("tokens-away");
    fs::rename(&t.dir, &away).unwrap();
    fs::create_dir(&t.dir).unwrap();
    let late = env.csr("late", &CsrSpec::ip("10.9.3.1"));
    // A first request may still be signed by the module's cached session; the one after it
    // finds the key gone.
    env.drop_file("late.csr", late.bytes());
    wait_for(
        "the daemon to notice the token is away",
        Duration::from_secs(60),
        || fs::read_to_string(&log).is_ok_and(|l| l.contains("the CA key is unavailable")),
    );
    let later = env.csr("later", &CsrSpec::ip("10.9.3.2"));
    env.drop_file("later.csr", later.bytes());
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        env.status_opt("later").is_none(),
        "signed without the token"
    );
    // It waits in incoming/ (or is being looked at again in processing/).
    assert!(
        env.incoming("later.csr").exists()
            || env.spool_dir("processing").join("later.csr").exists(),
        "the request must wait; spool:\n{}",
        env.tree()
    );

    // It comes back: everything is signed, nothing was held or denied.
    fs::remove_dir(&t.dir).unwrap();
    fs::rename(&away, &t.dir).unwrap();
    wait_for("the waiting requests", Duration::from_secs(60), || {
        env.status_opt("late").is_some() && env.status_opt("later").is_some()
    });
    env.check_issued("late", &LeafExpect::webhook("10.9.3.1"));
    env.check_issued("later", &LeafExpect::webhook("10.9.3.2"));
    let text = fs::read_to_string(&log).unwrap();
    assert!(text.contains("the PKCS#11 token is back"), "{text}");
    assert!(!text.contains(USER_PIN), "the PIN is in the daemon's log");
    assert!(
        !text.contains("held"),
        "nothing may be held for the token:\n{text}"
    );
}

struct Kill<'a>(&'a mut Child);

impl Drop for Kill<'_> {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.0.wait();
    }
}

#[track_caller]
fn wait_for(what: &str, limit: Duration, cond: impl Fn() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Issue 12: a PIN in the URI, a URI that names no key, a module that is not there and a
/// token that is not there are each one clear line; nothing is created.
#[test]
fn issue_12_bad_uris_modules_and_tokens_are_named() {
    let env = TestEnv::without_ca(DEFAULT_POLICY);
    let t = Token::new(&env);
    let init = |module: &str, uri: &str| {
        run(cmd(
            &env,
            &t,
            &[
                "init",
                "--pkcs11-module",
                module,
                "--key-uri",
                uri,
                "--generate-in-token",
            ],
        ))
    };
    init(
        MODULE,
        &format!("pkcs11:token={TOKEN};object=k?pin-value={USER_PIN}"),
    )
    .code_is(2)
    .stderr_has("never goes in the URI");
    init(MODULE, &format!("pkcs11:token={TOKEN}"))
        .code_is(2)
        .stderr_has("object=");
    init(
        "/nonexistent/module.so",
        &format!("pkcs11:token={TOKEN};object=k"),
    )
    .code_is(1)
    .stderr_has("cannot load the PKCS#11 module /nonexistent/module.so");
    init(MODULE, "pkcs11:token=elsewhere;object=k")
        .code_is(1)
        .stderr_has("no token \"elsewhere\" in PKCS#11 module")
        .stderr_has(TOKEN);
    // Adopting a key that is not there.
    run(cmd(
        &env,
        &t,
        &[
            "init",
            "--pkcs11-module",
            MODULE,
            "--key-uri",
            &format!("pkcs11:token={TOKEN};object=nothing"),
        ],
    ))
    .code_is(1)
    .stderr_has("no private key object \"nothing\"");
    assert!(!env.state.join("ca.crt").exists());
}

/// Issue 12: a P-384 and an RSA key generated in the token sign with their own algorithms
/// (raw ECDSA over SHA-384 with a 96-byte r‖s; CKM_RSA_PKCS over a SHA-256 DigestInfo), and
/// OpenSSL verifies the leaves and the CRL.
#[test]
fn issue_12_p384_and_rsa_keys_in_the_token() {
    for (key_type, oid) in [("ec-p384", ECDSA_SHA384), ("rsa-2048", RSA_SHA256)] {
        let env = TestEnv::without_ca(DEFAULT_POLICY);
        let t = Token::new(&env);
        init_in_token(&env, &t, &["--root-only", "--key-type", key_type]).success();
        env.drop_csr("k1", &CsrSpec::ip("10.9.4.1"));
        run(cmd(&env, &t, &["process"])).success();
        let mut expect = LeafExpect::webhook("10.9.4.1");
        expect.signature_oid = oid;
        env.check_issued("k1", &expect);
        run(cmd(&env, &t, &["revoke", "k1", "--reason", "superseded"])).success();
        openssl(&[
            "crl".as_ref(),
            "-inform".as_ref(),
            "DER".as_ref(),
            "-in".as_ref(),
            env.spool_dir("published").join("ca.crl").as_os_str(),
            "-CAfile".as_ref(),
            env.ca_cert().as_os_str(),
            "-noout".as_ref(),
        ])
        .success()
        .stderr_has("verify OK");
        if key_type == "rsa-2048" {
            assert_eq!(
                ca_public_key(&env),
                t.public_key_pem(&env, &t.private_key_id())
            );
        } else {
            // pkcs11-tool cannot export a P-384 key here ("cannot create EVP_PKEY"): compare
            // the point it lists with the certificate's.
            let list = t.pkcs11_tool(&["--list-objects", "--type", "pubkey"]);
            let point = list
                .lines()
                .find_map(|l| l.trim().strip_prefix("EC_POINT:"))
                .unwrap()
                .trim()
                .to_owned();
            let der = pem_certs(&env.ca_cert()).remove(0);
            let (_, cert) = x509_parser::prelude::X509Certificate::from_der(&der).unwrap();
            let ours: String = cert
                .public_key()
                .subject_public_key
                .data
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert!(
                point.ends_with(&ours),
                "token {point} vs certificate {ours}"
            );
        }
    }
}
