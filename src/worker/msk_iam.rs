//! `kafka_msk_iam`: the worker's OAUTHBEARER token, kept fresh by a thread of its own.
//!
//! The thread finds credentials (the chain may block on HTTP for seconds), signs a token,
//! hands it to librdkafka (`rd_kafka_oauthbearer_set_token` may be called from any thread)
//! and sleeps until 80 % of its lifetime has passed; on a failure it tells librdkafka, which
//! reports it on the main queue, and tries again after a back-off. It never touches nginx:
//! the worker reads its validity (an atomic) on each request and its news on each tick, and
//! answers librdkafka's refresh events from the cached token, waking the thread.

use std::ffi::CString;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::bindings as rdsys;
use rdkafka::types::RDKafkaRespErr;

use crate::aws::credentials::{self, Env, Lease};
use crate::aws::sigv4;

/// Credentials this close to their expiry are fetched again.
const CREDENTIALS_MARGIN_SECS: u64 = 300;
/// Back-off after a failure: from 1 s, doubling, to at most 30 s.
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// The principal librdkafka is told the token is for (MSK takes it from the signature).
const PRINCIPAL: &core::ffi::CStr = c"aws-msk-iam";

/// What the thread tells the worker's log: a token from a new source (or the first after a
/// failure), valid until (ms since the epoch). Failures reach the log through librdkafka.
pub struct News {
    pub source: String,
    pub expires_ms: u64,
}

struct Client(*mut rdsys::rd_kafka_t);
// SAFETY: librdkafka's client handle is thread-safe; the thread uses it only for the
// token calls, under `Shared::client`'s lock, and the worker clears it before the client
// is destroyed.
unsafe impl Send for Client {}

struct Shared {
    /// The producer, until the worker lets go of it.
    client: Mutex<Option<Client>>,
    wake: Condvar,
    /// Until when the token librdkafka has is valid (ms since the epoch; 0: none).
    valid_until_ms: AtomicU64,
    /// The last token handed over and its expiry: librdkafka's requests are answered from it.
    token: Mutex<Option<(String, u64)>>,
    /// The last failure, for readiness.
    reason: Mutex<String>,
    news: Mutex<Vec<News>>,
}

/// The worker's side: dropping it stops the thread (without waiting for it).
pub struct MskIam {
    shared: Arc<Shared>,
}

impl MskIam {
    /// # Safety
    /// `rk` must stay a live client until this is dropped.
    pub unsafe fn start(rk: *mut rdsys::rd_kafka_t, region: String, env: Env) -> MskIam {
        let shared = Arc::new(Shared {
            client: Mutex::new(Some(Client(rk))),
            wake: Condvar::new(),
            valid_until_ms: AtomicU64::new(0),
            token: Mutex::new(None),
            reason: Mutex::new("no token yet: the credentials are being fetched".into()),
            news: Mutex::new(Vec::new()),
        });
        let thread = Arc::clone(&shared);
        let spawned = std::thread::Builder::new()
            .name("kafka-msk-iam".into())
            .spawn(move || refresh(&thread, &region, &env));
        if let Err(e) = spawned {
            *lock(&shared.reason) = format!("the token thread could not start: {e}");
        }
        MskIam { shared }
    }

    /// Whether librdkafka has a token that is still valid.
    pub fn valid(&self) -> bool {
        self.shared.valid_until_ms.load(Ordering::Relaxed) > now_ms()
    }

    /// Why there is no valid token.
    pub fn reason(&self) -> String {
        lock(&self.shared.reason).clone()
    }

    /// librdkafka asks for a token (at start, at 80 % of the last one's lifetime, 10 s after
    /// a failure): it gets the cached one while that is valid (the thread keeps to its own
    /// schedule); without one, the thread is woken to try now. Nothing here waits for the
    /// network.
    pub fn refresh_requested(&self) {
        let cached = lock(&self.shared.token).clone();
        match cached.filter(|(_, e)| *e > now_ms() + 1000) {
            Some((token, expires_ms)) => {
                let _ = hand_over(&self.shared, &token, expires_ms);
            }
            None => self.shared.wake.notify_all(),
        }
    }

    pub fn news(&self) -> Vec<News> {
        std::mem::take(&mut *lock(&self.shared.news))
    }
}

impl Drop for MskIam {
    fn drop(&mut self) {
        // The thread may be in an HTTP request: it finds the client gone when it is back.
        *lock(&self.shared.client) = None;
        self.shared.wake.notify_all();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The thread: until the worker lets go of the client.
fn refresh(shared: &Shared, region: &str, env: &Env) {
    let agent = concat!("nginx-kafka/", env!("CARGO_PKG_VERSION"));
    let http = crate::aws::http::Client::new();
    let mut lease: Option<Lease> = None;
    let mut backoff = BACKOFF_MIN;
    let mut reported: Option<String> = None;
    loop {
        let now = now_ms() / 1000;
        let stale = lease.as_ref().is_none_or(|l| {
            l.expires
                .is_some_and(|e| e <= now + CREDENTIALS_MARGIN_SECS)
        });
        let outcome = if stale {
            match &http {
                Ok(h) => credentials::resolve(env, region, h).map(|l| {
                    lease = Some(l);
                }),
                Err(e) => Err(e.clone()),
            }
        } else {
            Ok(())
        };
        let next = match outcome.and_then(|()| {
            let l = lease.as_ref().expect("a lease");
            let token = sigv4::msk_token(region, &l.credentials, now, agent);
            let expires_ms = match l.expires {
                Some(e) => token.expires_ms.min(e * 1000),
                None => token.expires_ms,
            };
            if expires_ms <= now_ms() + 1000 {
                lease = None;
                return Err("the credentials expire before a token can be used".into());
            }
            hand_over(shared, &token.value, expires_ms)?;
            *lock(&shared.token) = Some((token.value, expires_ms));
            Ok((l.source.clone(), expires_ms))
        }) {
            Ok((source, expires_ms)) => {
                shared.valid_until_ms.store(expires_ms, Ordering::Relaxed);
                *lock(&shared.reason) = "the last token expired before the next came".into();
                if reported.as_deref() != Some(source.as_str()) {
                    lock(&shared.news).push(News {
                        source: source.clone(),
                        expires_ms,
                    });
                    reported = Some(source);
                }
                backoff = BACKOFF_MIN;
                let left = expires_ms.saturating_sub(now_ms());
                Duration::from_millis((left * 8 / 10).max(1000))
            }
            Err(reason) => {
                if lock(&shared.client).is_none() {
                    return;
                }
                fail(shared, &reason);
                reported = None;
                *lock(&shared.reason) = reason;
                let wait = backoff;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                wait
            }
        };
        let client = lock(&shared.client);
        if client.is_none() {
            return;
        }
        let (client, _) = shared
            .wake
            .wait_timeout(client, next)
            .unwrap_or_else(|e| e.into_inner());
        if client.is_none() {
            return;
        }
    }
}

/// Gives librdkafka the token.
fn hand_over(shared: &Shared, token: &str, expires_ms: u64) -> Result<(), String> {
    let client = lock(&shared.client);
    let Some(Client(rk)) = client.as_ref() else {
        return Err("the worker has stopped".into());
    };
    let value = CString::new(token).map_err(|_| "a token with a NUL byte".to_string())?;
    let mut errstr = [0 as core::ffi::c_char; 512];
    // SAFETY: `rk` is live while `client` is held (the worker clears it first); the strings
    // are NUL-terminated and librdkafka copies them; `errstr` is a buffer of its length.
    let err = unsafe {
        rdsys::rd_kafka_oauthbearer_set_token(
            *rk,
            value.as_ptr(),
            expires_ms as i64,
            PRINCIPAL.as_ptr(),
            core::ptr::null_mut(),
            0,
            errstr.as_mut_ptr(),
            errstr.len(),
        )
    };
    if err == RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR {
        return Ok(());
    }
    // SAFETY: librdkafka NUL-terminates what it writes in `errstr`.
    let text = unsafe { core::ffi::CStr::from_ptr(errstr.as_ptr()) };
    Err(format!(
        "librdkafka refused the token: {}",
        text.to_string_lossy()
    ))
}

/// Tells librdkafka no token could be had: it reports the reason as an error event.
fn fail(shared: &Shared, reason: &str) {
    let client = lock(&shared.client);
    let Some(Client(rk)) = client.as_ref() else {
        return;
    };
    let Ok(text) = CString::new(format!("kafka_msk_iam: {reason}")) else {
        return;
    };
    // SAFETY: `rk` is live while `client` is held; librdkafka copies the string.
    unsafe { rdsys::rd_kafka_oauthbearer_set_token_failure(*rk, text.as_ptr()) };
}
