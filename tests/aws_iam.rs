//! ElastiCache IAM tokens against SigV4 itself: a small reference signer, written here from
//! the SigV4 specification, first reproduces AWS's published example (IAM `ListUsers`, key
//! `wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY`, 2015-08-30), then must agree with every token
//! the provider makes. No AWS account is needed.
#![cfg(feature = "aws-iam")]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::Credentials as AwsCredentials;
use hmac::{digest::KeyInit, Hmac, Mac};
use sha2::{Digest, Sha256};
use tower_redis_session::{CredentialsProvider, ElastiCacheIam};

const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
/// 2015-08-30T12:36:00Z, the time of AWS's example.
const EXAMPLE_TIME: u64 = 1_440_938_160;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("any key length");
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

fn sha256_hex(data: &str) -> String {
    hex(&Sha256::digest(data.as_bytes()))
}

/// kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request").
fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Vec<u8> {
    let k = hmac(format!("AWS4{secret}").as_bytes(), date);
    let k = hmac(&k, region);
    let k = hmac(&k, service);
    hmac(&k, "aws4_request")
}

/// The signature of a canonical request, as the specification builds it.
fn signature(canonical_request: &str, amz_date: &str, scope: &str, key: &[u8]) -> String {
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical_request)
    );
    hex(&hmac(key, &to_sign))
}

/// URI-encoding of SigV4: unreserved characters stay, the rest is %XX uppercase.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() + 1 {
            let v = u8::from_str_radix(&s[i + 1..i + 3], 16).expect("hex escape");
            out.push(v);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).expect("utf-8")
}

#[test]
fn the_reference_signer_reproduces_the_published_example() {
    let canonical = "GET\n/\nAction=ListUsers&Version=2010-05-08\n\
        content-type:application/x-www-form-urlencoded; charset=utf-8\n\
        host:iam.amazonaws.com\nx-amz-date:20150830T123600Z\n\n\
        content-type;host;x-amz-date\n\
        e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    assert_eq!(
        sha256_hex(canonical),
        "f536975d06c0309214f805bb90ccff089219ecd68b2577efef23edd43b7e1a59"
    );
    let key = signing_key(SECRET, "20150830", "us-east-1", "iam");
    assert_eq!(
        hex(&key),
        "c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9"
    );
    assert_eq!(
        signature(
            canonical,
            "20150830T123600Z",
            "20150830/us-east-1/iam/aws4_request",
            &key
        ),
        "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
    );
}

/// Checks a token as ElastiCache would: its parameters, then its signature.
fn verify(
    token: &str,
    cache: &str,
    user: &str,
    region: &str,
    time: SystemTime,
    session: Option<&str>,
) {
    let query = token
        .strip_prefix(&format!("{cache}/?"))
        .unwrap_or_else(|| panic!("a token is `<cache>/?query`: {token}"));
    let mut params: Vec<(String, String)> = query
        .split('&')
        .map(|p| {
            let (k, v) = p.split_once('=').expect("k=v");
            (decode(k), decode(v))
        })
        .collect();
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{name} missing in {token}"))
    };
    let secs = time.duration_since(UNIX_EPOCH).unwrap().as_secs();
    let (date, amz_date) = utc(secs);
    assert_eq!(get("Action"), "connect");
    assert_eq!(get("User"), user);
    assert_eq!(get("X-Amz-Algorithm"), "AWS4-HMAC-SHA256");
    assert_eq!(get("X-Amz-Date"), amz_date);
    assert_eq!(get("X-Amz-Expires"), "900");
    assert_eq!(get("X-Amz-SignedHeaders"), "host");
    let scope = format!("{date}/{region}/elasticache/aws4_request");
    assert_eq!(get("X-Amz-Credential"), format!("AKIDEXAMPLE/{scope}"));
    if let Some(t) = session {
        assert_eq!(get("X-Amz-Security-Token"), t);
    }
    let signature_given = get("X-Amz-Signature");
    params.retain(|(k, _)| k != "X-Amz-Signature");
    params.sort();
    let canonical_query = params
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    let canonical = format!(
        "GET\n/\n{canonical_query}\nhost:{cache}\n\nhost\n{}",
        sha256_hex("")
    );
    let key = signing_key(SECRET, &date, region, "elasticache");
    assert_eq!(
        signature(&canonical, &amz_date, &scope, &key),
        signature_given,
        "{token}"
    );
}

/// ("20150830", "20150830T123600Z") for a Unix time.
fn utc(secs: u64) -> (String, String) {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let date = format!("{y:04}{m:02}{d:02}");
    let time = format!(
        "{date}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
    (date, time)
}

#[test]
fn tokens_are_valid_sigv4_presigned_connect_requests() {
    let keys = AwsCredentials::new("AKIDEXAMPLE", SECRET, None, None, "test");
    let iam = ElastiCacheIam::new("my-cache", "app-user", "us-east-1", keys.clone());
    let at = UNIX_EPOCH + Duration::from_secs(EXAMPLE_TIME);
    assert_eq!(utc(EXAMPLE_TIME).1, "20150830T123600Z");
    let token = iam.token(&keys, at).unwrap();
    assert!(!token.starts_with("http"), "{token}");
    verify(&token, "my-cache", "app-user", "us-east-1", at, None);
    // Serverless caches, user names that need encoding, temporary credentials.
    let temp = AwsCredentials::new(
        "AKIDEXAMPLE",
        SECRET,
        Some("session/token+1=".into()),
        None,
        "test",
    );
    let iam =
        ElastiCacheIam::new("cache-2", "user@example", "eu-west-1", temp.clone()).serverless();
    let token = iam.token(&temp, at).unwrap();
    assert!(token.contains("ResourceType=ServerlessCache"), "{token}");
    verify(
        &token,
        "cache-2",
        "user@example",
        "eu-west-1",
        at,
        Some("session/token+1="),
    );
    // Another moment, another signature.
    let later = at + Duration::from_secs(60);
    assert_ne!(iam.token(&temp, later).unwrap(), token);
}

#[tokio::test]
async fn the_provider_signs_a_fresh_token_each_time_and_expires_it_in_15_minutes() {
    let keys = AwsCredentials::new("AKIDEXAMPLE", SECRET, None, None, "test");
    let iam = ElastiCacheIam::new("my-cache", "app-user", "us-east-1", keys);
    let before = SystemTime::now();
    let c = iam.credentials().await.unwrap();
    assert_eq!(c.username.as_deref(), Some("app-user"));
    let expires = c.expires_at.expect("tokens expire");
    let lifetime = expires.duration_since(before).unwrap();
    assert!(lifetime <= Duration::from_secs(901) && lifetime > Duration::from_secs(890));
    verify(
        &c.password,
        "my-cache",
        "app-user",
        "us-east-1",
        expires - Duration::from_secs(900),
        None,
    );
    assert!(
        !format!("{c:?}").contains("X-Amz-Signature"),
        "the token is never printed"
    );
    // Temporary credentials that end sooner bound the token's use.
    let short = AwsCredentials::new(
        "AKIDEXAMPLE",
        SECRET,
        None,
        Some(SystemTime::now() + Duration::from_secs(120)),
        "test",
    );
    let c = ElastiCacheIam::new("my-cache", "app-user", "us-east-1", short)
        .credentials()
        .await
        .unwrap();
    let left = c
        .expires_at
        .unwrap()
        .duration_since(SystemTime::now())
        .unwrap();
    assert!(left <= Duration::from_secs(120), "{left:?}");
}
