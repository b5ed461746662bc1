//! Issue 9, finding 3 and 6: keys nobody owns are never certified (DESIGN §3, "real keys").
//!
//! The CSRs are forged by hand, as an attacker would: the request is assembled in DER here and
//! signed so that OpenSSL's own check of the self-signature passes wherever that is possible —
//! an EC point at infinity (with the signature any such key "verifies"), an off-curve point, a
//! compressed point, RSA keys with e = 1 (whose signature is the padded digest), e = 3, an even
//! e, a modulus with a small prime factor and one whose primes are close enough for Fermat's
//! method. Each must be denied with its reason code both in the spool (`process`) and at
//! `POST /api/v1/csr` (the same policy code), with no `intent` left in the ledger.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::{EcGroup, EcKey, EcPoint, PointConversionForm};
use openssl::ecdsa::EcdsaSig;
use openssl::hash::{hash, MessageDigest};
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use openssl::sign::Signer;

use crate::util::*;

/// One forged request: its id, the CSR (PEM) and the reason it must be denied with.
struct Forged {
    id: &'static str,
    pem: String,
    reason: &'static str,
}

fn forgeries() -> Vec<Forged> {
    let ip = "192.168.7.7";
    let mut out = Vec::new();
    // EC: a real P-256 key to take points from.
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    let key = EcKey::generate(&group).unwrap();
    let pkey = PKey::from_ec_key(key.clone()).unwrap();
    let mut ctx = BigNumContext::new().unwrap();
    let ec_sign = |cri: &[u8]| {
        let mut s = Signer::new(MessageDigest::sha256(), &pkey).unwrap();
        s.update(cri).unwrap();
        s.sign_to_vec().unwrap()
    };
    // The point at infinity, with the signature that "verifies" for it: r = x(kG),
    // s = e / k, so that u1·G + u2·∞ = kG.
    out.push(Forged {
        id: "infinity",
        pem: ec_csr(ip, &[0x00], |cri| infinity_signature(&group, cri)),
        reason: "weak_key",
    });
    let uncompressed = key
        .public_key()
        .to_bytes(&group, PointConversionForm::UNCOMPRESSED, &mut ctx)
        .unwrap();
    let mut off = uncompressed.clone();
    *off.last_mut().unwrap() ^= 0x01;
    out.push(Forged {
        id: "off-curve",
        pem: ec_csr(ip, &off, ec_sign),
        reason: "weak_key",
    });
    let compressed = key
        .public_key()
        .to_bytes(&group, PointConversionForm::COMPRESSED, &mut ctx)
        .unwrap();
    out.push(Forged {
        id: "compressed",
        pem: ec_csr(ip, &compressed, ec_sign),
        reason: "unsupported_key",
    });
    // RSA: a genuine modulus with e = 1 (signature = the PKCS#1 v1.5 encoded digest).
    let real = Rsa::generate(2048).unwrap();
    let one = BigNum::from_u32(1).unwrap();
    out.push(Forged {
        id: "rsa-e1",
        pem: rsa_csr(ip, real.n(), &one, &one),
        reason: "weak_key",
    });
    // A genuine key with e = 3.
    let three = BigNum::from_u32(3).unwrap();
    let e3 = Rsa::generate_with_e(2048, &three).unwrap();
    out.push(Forged {
        id: "rsa-e3",
        pem: rsa_csr(ip, e3.n(), e3.e(), e3.d()),
        reason: "weak_key",
    });
    // An even exponent: no private exponent exists, the signature cannot verify; the key is
    // what is wrong with it.
    let even = BigNum::from_u32(65_538).unwrap();
    out.push(Forged {
        id: "rsa-even-e",
        pem: rsa_csr(ip, real.n(), &even, real.d()),
        reason: "weak_key",
    });
    // n = 3 · q: a prime factor below 752, signed with the true private exponent.
    let (n, d) = loop {
        let mut q = BigNum::new().unwrap();
        // OpenSSL sets a prime's top two bits: 3 · (2046-bit prime) has 2048 bits.
        q.generate_prime(2046, false, None, None).unwrap();
        let mut n = BigNum::new().unwrap();
        n.checked_mul(&q, &three, &mut ctx).unwrap();
        if n.num_bits() == 2048 {
            break (n, private_exponent(&three_minus_one(), &q));
        }
    };
    out.push(Forged {
        id: "rsa-small-factor",
        pem: rsa_csr(ip, &n, &BigNum::from_u32(65_537).unwrap(), &d),
        reason: "weak_key",
    });
    // p and the next prime after it: Fermat's method factors n at once.
    let (n, d) = loop {
        let mut p = BigNum::new().unwrap();
        p.generate_prime(1024, false, None, None).unwrap();
        let mut q = BigNum::from_slice(&p.to_vec()).unwrap();
        loop {
            q.add_word(2).unwrap();
            if q.is_prime(20, &mut ctx).unwrap() {
                break;
            }
        }
        let mut n = BigNum::new().unwrap();
        n.checked_mul(&p, &q, &mut ctx).unwrap();
        if n.num_bits() == 2048 {
            let mut pm1 = BigNum::from_slice(&p.to_vec()).unwrap();
            pm1.sub_word(1).unwrap();
            break (n, private_exponent(&pm1, &q));
        }
    };
    out.push(Forged {
        id: "rsa-close-primes",
        pem: rsa_csr(ip, &n, &BigNum::from_u32(65_537).unwrap(), &d),
        reason: "weak_key",
    });
    out
}

fn three_minus_one() -> BigNum {
    BigNum::from_u32(2).unwrap()
}

/// d = 65537⁻¹ mod (a − 1 is given as `am1`)·(q − 1).
fn private_exponent(am1: &BigNum, q: &BigNum) -> BigNum {
    let mut ctx = BigNumContext::new().unwrap();
    let mut qm1 = BigNum::from_slice(&q.to_vec()).unwrap();
    qm1.sub_word(1).unwrap();
    let mut phi = BigNum::new().unwrap();
    phi.checked_mul(am1, &qm1, &mut ctx).unwrap();
    let mut d = BigNum::new().unwrap();
    d.mod_inverse(&BigNum::from_u32(65_537).unwrap(), &phi, &mut ctx)
        .unwrap();
    d
}

/// An ECDSA signature that verifies with the point at infinity as the public key.
fn infinity_signature(group: &EcGroup, cri: &[u8]) -> Vec<u8> {
    let mut ctx = BigNumContext::new().unwrap();
    let mut order = BigNum::new().unwrap();
    group.order(&mut order, &mut ctx).unwrap();
    let mut k = BigNum::new().unwrap();
    order.rand_range(&mut k).unwrap();
    let mut r_point = EcPoint::new(group).unwrap();
    r_point.mul_generator2(group, &k, &mut ctx).unwrap();
    let (mut x, mut y) = (BigNum::new().unwrap(), BigNum::new().unwrap());
    r_point
        .affine_coordinates(group, &mut x, &mut y, &mut ctx)
        .unwrap();
    let mut r = BigNum::new().unwrap();
    r.nnmod(&x, &order, &mut ctx).unwrap();
    let e = BigNum::from_slice(&hash(MessageDigest::sha256(), cri).unwrap()).unwrap();
    let mut k_inv = BigNum::new().unwrap();
    k_inv.mod_inverse(&k, &order, &mut ctx).unwrap();
    let mut s = BigNum::new().unwrap();
    s.mod_mul(&e, &k_inv, &order, &mut ctx).unwrap();
    EcdsaSig::from_private_components(r, s)
        .unwrap()
        .to_der()
        .unwrap()
}

/// A CSR for `ip` (CN only, which DESIGN §3 takes as the IP) with an EC P-256 key given as its
/// encoded point, signed ECDSA-SHA256 by `sign` over the request info.
fn ec_csr(ip: &str, point: &[u8], sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let spki = der(
        0x30,
        &[
            der(
                0x30,
                &[
                    oid(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01]),
                    oid(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07]),
                ]
                .concat(),
            ),
            bit_string(point),
        ]
        .concat(),
    );
    let alg = der(
        0x30,
        &oid(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02]),
    );
    assemble(ip, &spki, &alg, sign)
}

/// A CSR for `ip` with the RSA key (n, e), signed sha256WithRSAEncryption by computing
/// EM^d mod n directly (so that any e and d can be used).
fn rsa_csr(
    ip: &str,
    n: &openssl::bn::BigNumRef,
    e: &openssl::bn::BigNumRef,
    d: &openssl::bn::BigNumRef,
) -> String {
    let rsa_key = der(0x30, &[integer(&n.to_vec()), integer(&e.to_vec())].concat());
    let spki = der(
        0x30,
        &[
            der(
                0x30,
                &[
                    oid(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01]),
                    vec![0x05, 0x00],
                ]
                .concat(),
            ),
            bit_string(&rsa_key),
        ]
        .concat(),
    );
    let alg = der(
        0x30,
        &[
            oid(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b]),
            vec![0x05, 0x00],
        ]
        .concat(),
    );
    let k = (n.num_bits() as usize).div_ceil(8);
    assemble(ip, &spki, &alg, |cri| {
        // EMSA-PKCS1-v1_5 (RFC 8017 §9.2) with SHA-256's DigestInfo prefix.
        let digest = hash(MessageDigest::sha256(), cri).unwrap();
        let prefix = [
            0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x01, 0x05, 0x00, 0x04, 0x20,
        ];
        let t_len = prefix.len() + digest.len();
        let mut em = vec![0x00, 0x01];
        em.extend(std::iter::repeat_n(0xff, k - t_len - 3));
        em.push(0x00);
        em.extend_from_slice(&prefix);
        em.extend_from_slice(&digest);
        let m = BigNum::from_slice(&em).unwrap();
        let mut ctx = BigNumContext::new().unwrap();
        let mut s = BigNum::new().unwrap();
        s.mod_exp(&m, d, n, &mut ctx).unwrap();
        s.to_vec_padded(k as i32).unwrap()
    })
}

/// CertificationRequest { info { 0, CN=ip, spki, [0] {} }, alg, BIT STRING sig } as PEM.
fn assemble(ip: &str, spki: &[u8], alg: &[u8], sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let cn = der(
        0x30,
        &der(
            0x31,
            &der(
                0x30,
                &[oid(&[0x55, 0x04, 0x03]), der(0x0c, ip.as_bytes())].concat(),
            ),
        ),
    );
    let info = der(
        0x30,
        &[vec![0x02, 0x01, 0x00], cn, spki.to_vec(), vec![0xa0, 0x00]].concat(),
    );
    let sig = sign(&info);
    let req = der(0x30, &[info, alg.to_vec(), bit_string(&sig)].concat());
    let b64 = openssl::base64::encode_block(&req);
    let mut pem = String::from("-----BEGIN CERTIFICATE REQUEST-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(chunk).unwrap());
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE REQUEST-----\n");
    pem
}

fn der(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = body.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let len = n.to_be_bytes();
        let skip = len.iter().position(|b| *b != 0).unwrap();
        out.push(0x80 | (len.len() - skip) as u8);
        out.extend_from_slice(&len[skip..]);
    }
    out.extend_from_slice(body);
    out
}

fn oid(body: &[u8]) -> Vec<u8> {
    der(0x06, body)
}

fn integer(magnitude: &[u8]) -> Vec<u8> {
    let mut body = magnitude.to_vec();
    if body.first().is_none_or(|b| b & 0x80 != 0) {
        body.insert(0, 0);
    }
    der(0x02, &body)
}

fn bit_string(bytes: &[u8]) -> Vec<u8> {
    der(0x03, &[&[0u8][..], bytes].concat())
}

/// Finding 3 and 6 in the spool: each forgery is denied with its reason, nothing is issued and
/// no `intent` is written for any of them (a compressed point used to pass policy, fail the
/// post-signing check, stay held and leave an orphan `intent` at every `approve`).
#[test]
fn issue_9_keys_nobody_owns_are_denied_in_the_spool() {
    let env = TestEnv::new();
    let forged = forgeries();
    for f in &forged {
        env.drop_file(format!("{}.csr", f.id), &f.pem);
    }
    env.process();
    for f in &forged {
        let s = env.assert_denied(f.id, f.reason);
        let message = s["message"].as_str().unwrap();
        assert!(message.contains("key"), "{}: {message}", f.id);
    }
    let ledger = std::fs::read_to_string(env.ledger()).unwrap();
    assert!(
        !ledger.contains("\"intent\"") && !ledger.contains("\"issued\""),
        "a forged key reached the signer:\n{ledger}"
    );
    // Under a manual profile a compressed point is denied at once, not held for `approve`.
    let manual = TestEnv::with_policy(&policy_text("", "approval = \"manual\"", ""));
    let compressed = forged.iter().find(|f| f.id == "compressed").unwrap();
    manual.drop_file("c.csr", &compressed.pem);
    manual.process();
    manual.assert_denied("c", "unsupported_key");
    assert!(manual.list("held").is_empty(), "{}", manual.tree());
}

/// The same forgeries at `POST /api/v1/csr`: 400 with the same reason code (the API and the
/// signer run one policy).
#[test]
fn issue_9_keys_nobody_owns_are_refused_at_post() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = serve(dir.path());
    let port = port_of(&mut child, dir.path());
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let mut failures = Vec::new();
    for f in forgeries() {
        let mut reply = agent
            .post(format!("http://127.0.0.1:{port}/api/v1/csr"))
            .content_type("application/json")
            .send(serde_json::json!({"content": f.pem, "type": "webhook"}).to_string())
            .unwrap();
        let status = reply.status().as_u16();
        let body: serde_json::Value =
            serde_json::from_str(&reply.body_mut().read_to_string().unwrap()).unwrap();
        if status != 400 || body["error"]["reason"] != f.reason {
            failures.push(format!("{}: {status} {body}", f.id));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn serve(dir: &Path) -> Child {
    Command::new(BIN)
        .arg("--state")
        .arg(dir.join("state"))
        .arg("--policy")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("policy/default.toml"))
        .args(["serve", "--listen", "127.0.0.1:0", "--rate-limit", "0"])
        .arg("--db")
        .arg(format!("sqlite:{}", dir.join("api.db").display()))
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(
            std::fs::File::create(dir.join("serve.log")).unwrap(),
        ))
        .spawn()
        .unwrap()
}

fn port_of(child: &mut Child, dir: &Path) -> u16 {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(line)) = lines.next() {
            let _ = tx.send(line);
        }
        for _ in lines {}
    });
    let line = rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| {
            panic!(
                "serve did not start:\n{}",
                std::fs::read_to_string(dir.join("serve.log")).unwrap_or_default()
            )
        });
    line.strip_prefix("listening on 127.0.0.1:")
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
}
