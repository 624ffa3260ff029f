//! The chain's HTTP client: ureq, TLS by OpenSSL (the system's CA bundle), short timeouts.

use std::sync::Arc;
use std::time::Duration;

use super::credentials::Http;

pub struct Client(ureq::Agent);

impl Client {
    pub fn new() -> Result<Client, String> {
        let tls = native_tls::TlsConnector::new().map_err(|e| format!("TLS: {e}"))?;
        Ok(Client(
            ureq::AgentBuilder::new()
                .tls_connector(Arc::new(tls))
                .timeout_connect(Duration::from_secs(2))
                .timeout(Duration::from_secs(10))
                .redirects(0)
                .build(),
        ))
    }
}

impl Http for Client {
    fn call(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Result<(u16, String), String> {
        let mut request = self.0.request(method, url);
        for (name, value) in headers {
            request = request.set(name, value);
        }
        let answer = match body {
            Some(b) => request.send_string(b),
            None => request.call(),
        };
        let response = match answer {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(ureq::Error::Transport(t)) => return Err(format!("{method} {url}: {t}")),
        };
        let status = response.status();
        let text = response
            .into_string()
            .map_err(|e| format!("{method} {url}: {e}"))?;
        Ok((status, text))
    }
}
