//! A fresh 2048-bit RSA key for the simulated Google service account.
//!
//! `ring` signs and verifies RSA but cannot generate keys, so the simulator
//! generates one here: two random 1024-bit probable primes (trial division,
//! then Miller–Rabin), the private exponent for e = 65537, and the PKCS#8 DER
//! encoding. `ring` validates the result when the gateway loads it. This is
//! test-key material only; it is not constant-time and never leaves tests.

use num_bigint::BigUint;
use num_traits::{One, Zero};
use ring::rand::{SecureRandom, SystemRandom};

/// A generated key: PKCS#8 DER for the service-account JSON, and the public
/// modulus and exponent (big-endian) for verifying signatures.
pub struct RsaKey {
    pub pkcs8_der: Vec<u8>,
    pub n: Vec<u8>,
    pub e: Vec<u8>,
}

const SMALL_PRIMES: [u32; 25] = [
    3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97,
    101,
];

fn random_bytes(rng: &SystemRandom, len: usize) -> anyhow::Result<Vec<u8>> {
    let mut buf = vec![0; len];
    rng.fill(&mut buf)
        .map_err(|_| anyhow::anyhow!("system RNG failed"))?;
    Ok(buf)
}

/// Miller–Rabin with `rounds` random bases.
fn probably_prime(n: &BigUint, rng: &SystemRandom, rounds: usize) -> anyhow::Result<bool> {
    let one = BigUint::one();
    let two = &one + &one;
    let n_minus_1 = n - &one;
    let mut d = n_minus_1.clone();
    let mut s = 0;
    while (&d % &two).is_zero() {
        d /= &two;
        s += 1;
    }
    'witness: for _ in 0..rounds {
        let a = BigUint::from_bytes_be(&random_bytes(rng, 128)?) % (n - 3u32) + &two;
        let mut x = a.modpow(&d, n);
        if x == one || x == n_minus_1 {
            continue;
        }
        for _ in 1..s {
            x = x.modpow(&two, n);
            if x == n_minus_1 {
                continue 'witness;
            }
        }
        return Ok(false);
    }
    Ok(true)
}

/// A random 1024-bit prime p with gcd(p - 1, e) = 1.
fn prime(rng: &SystemRandom, e: &BigUint) -> anyhow::Result<BigUint> {
    loop {
        let mut bytes = random_bytes(rng, 128)?;
        bytes[0] |= 0xC0; // top two bits: the product is exactly 2048 bits
        bytes[127] |= 1;
        let candidate = BigUint::from_bytes_be(&bytes);
        if SMALL_PRIMES.iter().any(|p| (&candidate % *p).is_zero()) {
            continue;
        }
        if ((&candidate - 1u32) % e).is_zero() {
            continue;
        }
        if probably_prime(&candidate, rng, 24)? {
            return Ok(candidate);
        }
    }
}

/// Generates a key.
pub fn generate() -> anyhow::Result<RsaKey> {
    let rng = SystemRandom::new();
    let e = BigUint::from(65537u32);
    let (p, q) = loop {
        let (p, q) = (prime(&rng, &e)?, prime(&rng, &e)?);
        match p.cmp(&q) {
            std::cmp::Ordering::Greater => break (p, q),
            std::cmp::Ordering::Less => break (q, p),
            std::cmp::Ordering::Equal => continue,
        }
    };
    let n = &p * &q;
    let phi = (&p - 1u32) * (&q - 1u32);
    let d = e
        .modinv(&phi)
        .ok_or_else(|| anyhow::anyhow!("e not invertible"))?;
    let dp = &d % (&p - 1u32);
    let dq = &d % (&q - 1u32);
    let qinv = q
        .modinv(&p)
        .ok_or_else(|| anyhow::anyhow!("q not invertible mod p"))?;
    // RSAPrivateKey (PKCS#1) inside PrivateKeyInfo (PKCS#8).
    let mut rsa_key = der_integer(&[0]);
    for part in [&n, &e, &d, &p, &q, &dp, &dq, &qinv] {
        rsa_key.extend(der_integer(&part.to_bytes_be()));
    }
    let rsa_key = der_tlv(0x30, &rsa_key);
    // AlgorithmIdentifier: rsaEncryption (1.2.840.113549.1.1.1), NULL parameters.
    let algorithm = der_tlv(
        0x30,
        &[
            0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x01, 0x05, 0x00,
        ],
    );
    let mut info = der_integer(&[0]);
    info.extend(algorithm);
    info.extend(der_tlv(0x04, &rsa_key));
    Ok(RsaKey {
        pkcs8_der: der_tlv(0x30, &info),
        n: n.to_bytes_be(),
        e: e.to_bytes_be(),
    })
}

fn der_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

/// A non-negative INTEGER from big-endian magnitude bytes.
fn der_integer(magnitude: &[u8]) -> Vec<u8> {
    let trimmed: Vec<u8> = match magnitude.iter().position(|b| *b != 0) {
        Some(first) => magnitude[first..].to_vec(),
        None => vec![0],
    };
    let mut content = Vec::with_capacity(trimmed.len() + 1);
    if trimmed[0] & 0x80 != 0 {
        content.push(0);
    }
    content.extend(trimmed);
    der_tlv(0x02, &content)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{
        RsaKeyPair, RsaPublicKeyComponents, RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256,
    };

    #[test]
    fn generated_key_signs_and_verifies_with_ring() {
        let key = generate().unwrap();
        let pair = RsaKeyPair::from_pkcs8(&key.pkcs8_der).unwrap();
        assert_eq!(pair.public().modulus_len(), 256);
        let mut sig = vec![0; 256];
        pair.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), b"msg", &mut sig)
            .unwrap();
        let public = RsaPublicKeyComponents {
            n: &key.n,
            e: &key.e,
        };
        public
            .verify(&RSA_PKCS1_2048_8192_SHA256, b"msg", &sig)
            .unwrap();
        assert!(public
            .verify(&RSA_PKCS1_2048_8192_SHA256, b"other", &sig)
            .is_err());
    }
}
