//! AWS credentials from the usual chain, as AWS's SDKs look for them: the environment's
//! keys, a web-identity token file (EKS with IRSA), a container credentials endpoint (EKS
//! Pod Identity, ECS), the instance metadata service (IMDSv2). Plain code, without nginx:
//! it blocks on HTTP and runs on the token thread, never on nginx's event loop.

use std::collections::BTreeMap;

use super::sigv4::{self, Credentials};

/// The `AWS_*` environment, as nginx's master had it when it read the configuration.
pub type Env = BTreeMap<String, String>;

/// The variables the chain reads.
pub const VARIABLES: &[&str] = &[
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
    "AWS_ENDPOINT_URL_STS",
    "AWS_ENDPOINT_URL",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_EC2_METADATA_SERVICE_ENDPOINT",
    "AWS_EC2_METADATA_DISABLED",
];

/// Reads the chain's variables from this process's environment (empty ones are unset).
pub fn env_from_process() -> Env {
    VARIABLES
        .iter()
        .filter_map(|&name| {
            let value = std::env::var(name).ok().filter(|v| !v.is_empty())?;
            Some((name.to_string(), value))
        })
        .collect()
}

/// Credentials, until when they are valid (seconds since the epoch; `None`: long-term
/// keys), and where they came from, for the log.
#[derive(Clone, Debug)]
pub struct Lease {
    pub credentials: Credentials,
    pub expires: Option<u64>,
    pub source: String,
}

/// One HTTP exchange: `(status, body)`, or why there was none.
pub trait Http {
    fn call(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Result<(u16, String), String>;
}

/// The first source of the chain that is configured; its error if it fails (the chain
/// does not fall through a configured source that fails, as AWS's SDKs do not).
pub fn resolve(env: &Env, region: &str, http: &dyn Http) -> Result<Lease, String> {
    let var = |name: &str| env.get(name).map(String::as_str);
    if let Some(id) = var("AWS_ACCESS_KEY_ID") {
        let Some(secret) = var("AWS_SECRET_ACCESS_KEY") else {
            return Err("AWS_ACCESS_KEY_ID is set, AWS_SECRET_ACCESS_KEY is not".into());
        };
        return Ok(Lease {
            credentials: Credentials {
                access_key_id: id.into(),
                secret_access_key: secret.into(),
                session_token: var("AWS_SESSION_TOKEN").map(Into::into),
            },
            expires: None,
            source: "the environment".into(),
        });
    }
    if let Some(file) = var("AWS_WEB_IDENTITY_TOKEN_FILE") {
        let Some(role) = var("AWS_ROLE_ARN") else {
            return Err("AWS_WEB_IDENTITY_TOKEN_FILE is set, AWS_ROLE_ARN is not".into());
        };
        return web_identity(env, region, file, role, http);
    }
    if var("AWS_CONTAINER_CREDENTIALS_FULL_URI").is_some()
        || var("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI").is_some()
    {
        return container(env, http);
    }
    if var("AWS_EC2_METADATA_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Err(
            "no credentials: none in the environment, no web identity, no container \
                    endpoint, and the instance metadata service is disabled"
                .into(),
        );
    }
    instance(env, http)
}

/// STS `AssumeRoleWithWebIdentity` with the token file's token (re-read each time: the
/// kubelet rotates it).
fn web_identity(
    env: &Env,
    region: &str,
    file: &str,
    role: &str,
    http: &dyn Http,
) -> Result<Lease, String> {
    let token = std::fs::read_to_string(file)
        .map_err(|e| format!("web identity token file \"{file}\" cannot be read: {e}"))?;
    let token = token.trim();
    if token.is_empty() {
        return Err(format!("web identity token file \"{file}\" is empty"));
    }
    let session = env
        .get("AWS_ROLE_SESSION_NAME")
        .cloned()
        .unwrap_or_else(|| format!("nginx-kafka-{}", std::process::id()));
    let endpoint = env
        .get("AWS_ENDPOINT_URL_STS")
        .or_else(|| env.get("AWS_ENDPOINT_URL"))
        .cloned()
        .unwrap_or_else(|| sts_endpoint(region));
    let form = format!(
        "Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn={}&RoleSessionName={}\
         &WebIdentityToken={}",
        sigv4::uri_encode(role),
        sigv4::uri_encode(&session),
        sigv4::uri_encode(token)
    );
    let url = format!("{}/", endpoint.trim_end_matches('/'));
    let (status, body) = http.call(
        "POST",
        &url,
        &[("Content-Type", "application/x-www-form-urlencoded")],
        Some(&form),
    )?;
    if status != 200 {
        let code = xml_text(&body, "Code").unwrap_or_default();
        let message = xml_text(&body, "Message").unwrap_or_default();
        return Err(format!(
            "STS AssumeRoleWithWebIdentity for \"{role}\" answered {status} {code}: {message}"
        ));
    }
    let field = |name: &str| {
        xml_text(&body, name).ok_or_else(|| {
            format!("STS AssumeRoleWithWebIdentity for \"{role}\": no {name} in the answer")
        })
    };
    Ok(Lease {
        credentials: Credentials {
            access_key_id: field("AccessKeyId")?,
            secret_access_key: field("SecretAccessKey")?,
            session_token: Some(field("SessionToken")?),
        },
        expires: Some(parse_time(&field("Expiration")?).ok_or_else(|| {
            format!("STS AssumeRoleWithWebIdentity for \"{role}\": a bad Expiration")
        })?),
        source: format!("web identity (role \"{role}\")"),
    })
}

/// STS's regional endpoint.
fn sts_endpoint(region: &str) -> String {
    let domain = if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    };
    format!("https://sts.{region}.{domain}")
}

/// The container credentials endpoint (EKS Pod Identity, ECS).
fn container(env: &Env, http: &dyn Http) -> Result<Lease, String> {
    let url = match (
        env.get("AWS_CONTAINER_CREDENTIALS_FULL_URI"),
        env.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"),
    ) {
        (Some(full), _) => full.clone(),
        (None, Some(relative)) => format!("http://169.254.170.2{relative}"),
        (None, None) => unreachable!("resolve() checks one is set"),
    };
    let authorization = match env.get("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE") {
        Some(file) => Some(
            std::fs::read_to_string(file)
                .map_err(|e| format!("container authorization token file \"{file}\": {e}"))?
                .trim()
                .to_string(),
        ),
        None => env.get("AWS_CONTAINER_AUTHORIZATION_TOKEN").cloned(),
    };
    let mut headers = vec![("Accept", "application/json")];
    if let Some(a) = &authorization {
        headers.push(("Authorization", a.as_str()));
    }
    let (status, body) = http.call("GET", &url, &headers, None)?;
    if status != 200 {
        return Err(format!(
            "the container credentials endpoint answered {status}"
        ));
    }
    json_lease(&body, "the container credentials endpoint".into())
}

/// The instance metadata service, IMDSv2 only (a session token first).
fn instance(env: &Env, http: &dyn Http) -> Result<Lease, String> {
    let base = env
        .get("AWS_EC2_METADATA_SERVICE_ENDPOINT")
        .map_or("http://169.254.169.254", String::as_str)
        .trim_end_matches('/')
        .to_string();
    let no_source = |e: String| {
        format!(
            "no credentials: none in the environment, no web identity, no container endpoint, \
             and the instance metadata service at {base}: {e}"
        )
    };
    let (status, token) = http
        .call(
            "PUT",
            &format!("{base}/latest/api/token"),
            &[("X-aws-ec2-metadata-token-ttl-seconds", "21600")],
            None,
        )
        .map_err(no_source)?;
    if status != 200 {
        return Err(no_source(format!(
            "the session token request answered {status}"
        )));
    }
    let token = token.trim();
    let headers = [("X-aws-ec2-metadata-token", token)];
    let list = format!("{base}/latest/meta-data/iam/security-credentials/");
    let (status, roles) = http.call("GET", &list, &headers, None)?;
    if status != 200 {
        return Err(format!(
            "the instance metadata service answered {status}: the instance has no IAM role"
        ));
    }
    let Some(role) = roles.lines().map(str::trim).find(|l| !l.is_empty()) else {
        return Err("the instance metadata service names no IAM role".into());
    };
    let (status, body) = http.call("GET", &format!("{list}{role}"), &headers, None)?;
    if status != 200 {
        return Err(format!(
            "the instance metadata service answered {status} for role \"{role}\""
        ));
    }
    json_lease(
        &body,
        format!("the instance metadata service (role \"{role}\")"),
    )
}

/// The JSON both metadata endpoints answer.
fn json_lease(body: &str, source: String) -> Result<Lease, String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Answer {
        code: Option<String>,
        message: Option<String>,
        access_key_id: Option<String>,
        secret_access_key: Option<String>,
        token: Option<String>,
        expiration: Option<String>,
    }
    let a: Answer =
        serde_json::from_str(body).map_err(|e| format!("{source}: a bad answer: {e}"))?;
    if let Some(code) = a.code.filter(|c| c != "Success") {
        return Err(format!(
            "{source}: {code}: {}",
            a.message.unwrap_or_default()
        ));
    }
    let (Some(id), Some(secret)) = (a.access_key_id, a.secret_access_key) else {
        return Err(format!(
            "{source}: no AccessKeyId or SecretAccessKey in the answer"
        ));
    };
    let expires = match a.expiration {
        Some(t) => Some(parse_time(&t).ok_or_else(|| format!("{source}: a bad Expiration"))?),
        None => None,
    };
    Ok(Lease {
        credentials: Credentials {
            access_key_id: id,
            secret_access_key: secret,
            session_token: a.token,
        },
        expires,
        source,
    })
}

/// The text of the first `<name>` element, unescaped.
fn xml_text(xml: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&close)?;
    Some(
        xml[start..end]
            .trim()
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

/// An ISO 8601 UTC time as AWS writes it (`2026-12-04T21:07:01Z`, fractions allowed), in
/// seconds since the epoch.
pub fn parse_time(s: &str) -> Option<u64> {
    let s = s.trim();
    let (main, _fraction) = match s.strip_suffix('Z')?.split_once('.') {
        Some((m, f)) if f.bytes().all(|b| b.is_ascii_digit()) => (m, f),
        Some(_) => return None,
        None => (s.strip_suffix('Z')?, ""),
    };
    let compact: String = main.chars().filter(|c| *c != '-' && *c != ':').collect();
    sigv4::parse_amz_date(&format!("{compact}Z"))
}

/// `YYYY-MM-DDTHH:MM:SSZ` (ISO 8601) of a Unix time, for the log.
pub fn iso_time(secs: u64) -> String {
    let d = sigv4::amz_date(secs);
    format!(
        "{}-{}-{}T{}:{}:{}Z",
        &d[0..4],
        &d[4..6],
        &d[6..8],
        &d[9..11],
        &d[11..13],
        &d[13..15]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// Answers from a script, and what was asked.
    struct Script {
        answers: RefCell<Vec<Result<(u16, String), String>>>,
        asked: RefCell<Vec<String>>,
    }

    impl Script {
        fn new(answers: Vec<Result<(u16, &str), &str>>) -> Script {
            Script {
                answers: RefCell::new(
                    answers
                        .into_iter()
                        .rev()
                        .map(|a| a.map(|(s, b)| (s, b.to_string())).map_err(String::from))
                        .collect(),
                ),
                asked: RefCell::new(Vec::new()),
            }
        }
    }

    impl Http for Script {
        fn call(
            &self,
            method: &str,
            url: &str,
            headers: &[(&str, &str)],
            body: Option<&str>,
        ) -> Result<(u16, String), String> {
            let h: Vec<String> = headers.iter().map(|(n, v)| format!("{n}: {v}")).collect();
            self.asked.borrow_mut().push(format!(
                "{method} {url} [{}] {}",
                h.join(", "),
                body.unwrap_or("")
            ));
            self.answers.borrow_mut().pop().expect("an answer")
        }
    }

    fn env(pairs: &[(&str, &str)]) -> Env {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn environment_keys_come_first() {
        let http = Script::new(vec![]);
        let e = env(&[
            ("AWS_ACCESS_KEY_ID", "AKID"),
            ("AWS_SECRET_ACCESS_KEY", "SECRET"),
            ("AWS_SESSION_TOKEN", "TOKEN"),
            ("AWS_ROLE_ARN", "arn:aws:iam::1:role/r"),
        ]);
        let lease = resolve(&e, "eu-west-1", &http).unwrap();
        assert_eq!(lease.credentials.access_key_id, "AKID");
        assert_eq!(lease.credentials.session_token.as_deref(), Some("TOKEN"));
        assert_eq!(lease.expires, None);
        assert!(http.asked.borrow().is_empty());
        let half = env(&[("AWS_ACCESS_KEY_ID", "AKID")]);
        assert!(resolve(&half, "eu-west-1", &http)
            .unwrap_err()
            .contains("AWS_SECRET_ACCESS_KEY"));
    }

    #[test]
    fn web_identity_asks_sts_with_the_token_file() {
        let dir = std::env::temp_dir().join(format!("nk-wi-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "eyJ.a+b/c=\n").unwrap();
        let answer = "<AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult>\
            <Credentials><AccessKeyId>ASIA1</AccessKeyId><SecretAccessKey>s/e+c</SecretAccessKey>\
            <SessionToken>tok&amp;en</SessionToken><Expiration>2026-12-04T22:07:01Z</Expiration>\
            </Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>";
        let http = Script::new(vec![Ok((200, answer))]);
        let e = env(&[
            ("AWS_WEB_IDENTITY_TOKEN_FILE", file.to_str().unwrap()),
            ("AWS_ROLE_ARN", "arn:aws:iam::123:role/collector"),
            ("AWS_ROLE_SESSION_NAME", "pod-1"),
        ]);
        let lease = resolve(&e, "eu-west-1", &http).unwrap();
        assert_eq!(lease.credentials.access_key_id, "ASIA1");
        assert_eq!(lease.credentials.secret_access_key, "s/e+c");
        assert_eq!(lease.credentials.session_token.as_deref(), Some("tok&en"));
        assert_eq!(lease.expires, parse_time("2026-12-04T22:07:01Z"));
        assert_eq!(
            http.asked.borrow()[0],
            "POST https://sts.eu-west-1.amazonaws.com/ [Content-Type: \
             application/x-www-form-urlencoded] Action=AssumeRoleWithWebIdentity\
             &Version=2011-06-15&RoleArn=arn%3Aaws%3Aiam%3A%3A123%3Arole%2Fcollector\
             &RoleSessionName=pod-1&WebIdentityToken=eyJ.a%2Bb%2Fc%3D"
        );
        let refused = "<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code>\
            <Message>Not authorized</Message></Error></ErrorResponse>";
        let http = Script::new(vec![Ok((403, refused))]);
        let e2 = {
            let mut e2 = e.clone();
            e2.insert("AWS_ENDPOINT_URL_STS".into(), "http://127.0.0.1:9/".into());
            e2
        };
        let err = resolve(&e2, "eu-west-1", &http).unwrap_err();
        assert_eq!(
            err,
            "STS AssumeRoleWithWebIdentity for \"arn:aws:iam::123:role/collector\" answered \
             403 AccessDenied: Not authorized"
        );
        assert!(http.asked.borrow()[0].starts_with("POST http://127.0.0.1:9/ "));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn instance_metadata_v2() {
        let creds = r#"{"Code":"Success","LastUpdated":"2026-12-04T20:00:00Z","Type":"AWS-HMAC",
            "AccessKeyId":"ASIA2","SecretAccessKey":"sec","Token":"tok",
            "Expiration":"2026-12-04T23:00:00Z"}"#;
        let http = Script::new(vec![
            Ok((200, "imds-token")),
            Ok((200, "node-role\n")),
            Ok((200, creds)),
        ]);
        let e = env(&[("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:1/")]);
        let lease = resolve(&e, "us-east-1", &http).unwrap();
        assert_eq!(lease.credentials.access_key_id, "ASIA2");
        assert_eq!(lease.credentials.session_token.as_deref(), Some("tok"));
        assert_eq!(
            lease.source,
            "the instance metadata service (role \"node-role\")"
        );
        let asked = http.asked.borrow();
        assert_eq!(
            asked[0],
            "PUT http://127.0.0.1:1/latest/api/token [X-aws-ec2-metadata-token-ttl-seconds: \
             21600] "
        );
        assert_eq!(
            asked[2],
            "GET http://127.0.0.1:1/latest/meta-data/iam/security-credentials/node-role \
             [X-aws-ec2-metadata-token: imds-token] "
        );
        let http = Script::new(vec![Err("connection refused")]);
        let err = resolve(&e, "us-east-1", &http).unwrap_err();
        assert!(err.starts_with("no credentials:"), "{err}");
        let disabled = env(&[("AWS_EC2_METADATA_DISABLED", "true")]);
        assert!(resolve(&disabled, "us-east-1", &Script::new(vec![]))
            .unwrap_err()
            .contains("disabled"));
    }

    #[test]
    fn container_endpoint_with_its_authorization() {
        let http = Script::new(vec![Ok((
            200,
            r#"{"AccessKeyId":"ASIA3","SecretAccessKey":"s","Token":"t","Expiration":"2026-12-04T23:00:00.123Z"}"#,
        ))]);
        let e = env(&[
            (
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                "http://169.254.170.23/v1/credentials",
            ),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN", "auth"),
        ]);
        let lease = resolve(&e, "us-east-1", &http).unwrap();
        assert_eq!(lease.credentials.access_key_id, "ASIA3");
        assert_eq!(lease.expires, parse_time("2026-12-04T23:00:00Z"));
        assert_eq!(
            http.asked.borrow()[0],
            "GET http://169.254.170.23/v1/credentials [Accept: application/json, \
             Authorization: auth] "
        );
    }

    #[test]
    fn times() {
        assert_eq!(parse_time("1970-01-01T00:00:10Z"), Some(10));
        assert_eq!(
            parse_time("2026-12-04T21:07:01Z"),
            sigv4::parse_amz_date("20261204T210701Z")
        );
        assert_eq!(parse_time("2026-12-04T21:07:01"), None);
        assert_eq!(parse_time("2026-12-04T21:07:01.x5Z"), None);
        assert_eq!(
            iso_time(parse_time("2026-12-04T21:07:01Z").unwrap()),
            "2026-12-04T21:07:01Z"
        );
    }
}
