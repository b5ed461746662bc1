//! Real keys only (DESIGN §3): a public key must be one that only its holder can sign with.
//! Let's Encrypt's `goodkey` is the model.
//!
//! - EC: a point on its named curve, in uncompressed form. The point at infinity and off-curve
//!   or malformed points are nobody's key (`weak_key`); a compressed point is a valid key this
//!   CA does not sign (`unsupported_key`: the certificate would carry another encoding of it).
//! - RSA: an odd public exponent with 65537 ≤ e < 2^256 (e = 1 makes the "signature" the padded
//!   digest itself; small exponents invite broadcast attacks), an odd modulus with no prime
//!   factor below 752, and not factorable by Fermat's method in 100 rounds (primes too close
//!   together). Each failure is `weak_key` with the rule in the message.
//!
//! Pure: arithmetic on the facts `csr` read, with OpenSSL's big numbers; no I/O.

use openssl::bn::{BigNum, BigNumContext, BigNumRef};

use super::Reason;
use crate::csr::{KeyMaterial, PointForm};

/// Checks a key's material; the refusal's reason code and message when it is not a real key.
pub(super) fn check(material: &KeyMaterial) -> Result<(), (Reason, String)> {
    match material {
        KeyMaterial::Ec(form) => check_point(form),
        KeyMaterial::Rsa { modulus, exponent } => check_rsa(modulus, exponent)
            .map_err(|why| (Reason::WeakKey, format!("the CSR's RSA key is not usable: {why}; make a new key with `openssl genrsa 2048` (or use ec-p256)"))),
        KeyMaterial::Other => Ok(()),
    }
}

/// Whether the CSR's own signature is worth judging: not when the key itself is refused (an
/// EC point that is nobody's key has no signature to check, and an RSA key with an even
/// exponent cannot have made one). The key rule then says what is wrong.
pub(super) fn signature_checkable(material: &KeyMaterial) -> bool {
    check(material).is_ok()
}

fn check_point(form: &PointForm) -> Result<(), (Reason, String)> {
    let weak = |why: &str| {
        Err((
            Reason::WeakKey,
            format!("the CSR's EC key {why}: nobody holds such a key; make a new key (openssl ecparam -genkey -name prime256v1)"),
        ))
    };
    match form {
        PointForm::Uncompressed => Ok(()),
        PointForm::Infinity => weak("is the point at infinity"),
        PointForm::OffCurve => weak("is not a point on its curve"),
        PointForm::Malformed(what) => weak(&format!("is malformed ({what})")),
        PointForm::Compressed => Err((
            Reason::UnsupportedKey,
            "the CSR's EC key is in compressed form, which this CA does not sign: make a normal \
             CSR (openssl req -new writes the key uncompressed; convert a key with \
             `openssl ec -in server.key -conv_form uncompressed -out server.key`)"
                .into(),
        )),
    }
}

/// The RSA rules; the text names the one that failed.
fn check_rsa(modulus: &[u8], exponent: &[u8]) -> Result<(), String> {
    let err = |e: openssl::error::ErrorStack| e.to_string();
    let e = BigNum::from_slice(exponent).map_err(err)?;
    let n = BigNum::from_slice(modulus).map_err(err)?;
    let min_e = BigNum::from_u32(65_537).map_err(err)?;
    if !e.is_odd() || e < min_e || e.num_bits() > 256 {
        return Err(format!(
            "its public exponent is {}, not an odd number from 65537 to 2^256 (use 65537)",
            shorten(&e.to_dec_str().map_err(err)?)
        ));
    }
    if !n.is_odd() {
        return Err("its modulus is even".into());
    }
    for p in SMALL_PRIMES {
        if n.mod_word(p).map_err(err)? == 0 {
            return Err(format!("its modulus has the prime factor {p}"));
        }
    }
    if fermat_factors(&n, FERMAT_ROUNDS).map_err(err)? {
        return Err(format!(
            "its two primes are so close that Fermat's method factors the modulus within \
             {FERMAT_ROUNDS} rounds"
        ));
    }
    Ok(())
}

/// Whether Fermat's method finds `n = a² − b²` with `a` within `rounds` steps of ⌈√n⌉
/// (Boulder's `checkPrimeFactorsTooClose`). Cheap residue tests rule most rounds out before a
/// square root is taken.
fn fermat_factors(n: &BigNumRef, rounds: u32) -> Result<bool, openssl::error::ErrorStack> {
    let mut ctx = BigNumContext::new()?;
    let mut a = isqrt(n, &mut ctx)?;
    a.add_word(1)?;
    // b2 = a² − n, then b2 += 2a + 1 as a grows by one.
    let mut b2 = BigNum::new()?;
    b2.sqr(&a, &mut ctx)?;
    let mut tmp = BigNum::new()?;
    tmp.checked_sub(&b2, n)?;
    std::mem::swap(&mut b2, &mut tmp);
    for _ in 0..rounds {
        if maybe_square(&b2)? {
            let r = isqrt(&b2, &mut ctx)?;
            let mut sq = BigNum::new()?;
            sq.sqr(&r, &mut ctx)?;
            if sq == b2 {
                return Ok(true);
            }
        }
        let mut step = BigNum::new()?;
        step.lshift1(&a)?;
        step.add_word(1)?;
        tmp.checked_add(&b2, &step)?;
        std::mem::swap(&mut b2, &mut tmp);
        a.add_word(1)?;
    }
    Ok(false)
}

/// False when `x` is certainly not a perfect square (quadratic residues modulo 64, 63, 65, 11).
fn maybe_square(x: &BigNumRef) -> Result<bool, openssl::error::ErrorStack> {
    for m in [64u32, 63, 65, 11] {
        let r = x.mod_word(m)?;
        if !(0..u64::from(m)).any(|k| (k * k) % u64::from(m) == r) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// ⌊√n⌋ by Newton's method.
fn isqrt(n: &BigNumRef, ctx: &mut BigNumContext) -> Result<BigNum, openssl::error::ErrorStack> {
    if n.num_bits() <= 1 {
        return n.to_owned();
    }
    // Start above the root: 2^⌈bits/2⌉.
    let mut x = BigNum::new()?;
    x.set_bit((n.num_bits() + 1) / 2)?;
    loop {
        let mut q = BigNum::new()?;
        q.checked_div(n, &x, ctx)?;
        let mut y = BigNum::new()?;
        y.checked_add(&x, &q)?;
        let mut half = BigNum::new()?;
        half.rshift1(&y)?;
        if half >= x {
            return Ok(x);
        }
        x = half;
    }
}

fn shorten(s: &str) -> String {
    if s.len() > 24 {
        format!("{}…", &s[..24])
    } else {
        s.to_owned()
    }
}

/// Rounds of Fermat's method (Boulder's default).
const FERMAT_ROUNDS: u32 = 100;

/// The primes below 752 (Boulder's small-factor check).
const SMALL_PRIMES: [u32; 133] = [
    2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97,
    101, 103, 107, 109, 113, 127, 131, 137, 139, 149, 151, 157, 163, 167, 173, 179, 181, 191, 193,
    197, 199, 211, 223, 227, 229, 233, 239, 241, 251, 257, 263, 269, 271, 277, 281, 283, 293, 307,
    311, 313, 317, 331, 337, 347, 349, 353, 359, 367, 373, 379, 383, 389, 397, 401, 409, 419, 421,
    431, 433, 439, 443, 449, 457, 461, 463, 467, 479, 487, 491, 499, 503, 509, 521, 523, 541, 547,
    557, 563, 569, 571, 577, 587, 593, 599, 601, 607, 613, 617, 619, 631, 641, 643, 647, 653, 659,
    661, 673, 677, 683, 691, 701, 709, 719, 727, 733, 739, 743, 751,
];

#[cfg(test)]
mod tests {
    use super::*;

    fn bn(n: u64) -> BigNum {
        BigNum::from_dec_str(&n.to_string()).unwrap()
    }

    #[test]
    fn small_primes_are_the_primes_below_752() {
        let primes: Vec<u32> = (2..752)
            .filter(|n| (2..*n).take_while(|d| d * d <= *n).all(|d| n % d != 0))
            .collect();
        assert_eq!(primes, SMALL_PRIMES);
    }

    #[test]
    fn isqrt_and_squares() {
        let mut ctx = BigNumContext::new().unwrap();
        for n in [2u64, 3, 4, 15, 16, 17, 99, 100, 101, 1 << 40, (1 << 40) + 1] {
            let r = isqrt(&bn(n), &mut ctx).unwrap();
            let want = (n as f64).sqrt().floor() as u64;
            assert_eq!(r, bn(want), "{n}");
        }
        for k in [0u64, 1, 7, 1000, 123_456] {
            assert!(maybe_square(&bn(k * k)).unwrap());
        }
    }

    #[test]
    fn fermat_finds_close_primes_only() {
        // 1000003 · 1000033: primes 30 apart.
        assert!(fermat_factors(&bn(1_000_003 * 1_000_033), 100).unwrap());
        // 1000003 · 4000037: far apart.
        assert!(!fermat_factors(&bn(1_000_003 * 4_000_037), 100).unwrap());
    }

    #[test]
    fn exponents_and_moduli() {
        let n = openssl::rsa::Rsa::generate(2048).unwrap();
        let (m, e) = (n.n().to_vec(), n.e().to_vec());
        assert_eq!(check_rsa(&m, &e), Ok(()));
        for bad in [1u32, 3, 65_536, 65_535] {
            let e = BigNum::from_u32(bad).unwrap().to_vec();
            assert!(check_rsa(&m, &e).unwrap_err().contains("exponent"), "{bad}");
        }
        let mut even = m.clone();
        *even.last_mut().unwrap() &= 0xfe;
        assert!(check_rsa(&even, &e).unwrap_err().contains("even"));
    }
}
