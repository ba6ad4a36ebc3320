//! A client for OpenAI-compatible chat-completion endpoints (llama.cpp, vLLM, Ollama, hosted
//! APIs), for `kanoclip knowledge`: one request at a time, at most `rate` a second, with
//! retries and back-off for what is worth retrying.
//!
//! - Retried: connection failures and time-outs, HTTP 408, 429 and 5xx (waiting what
//!   `Retry-After` asks, up to a minute, or else `backoff · 2^attempt`), and answers that
//!   are not the JSON an endpoint should send or that the caller cannot parse (a model may
//!   answer better on a second try).
//! - Not retried: other 4xx (a wrong model name or key does not improve); the error
//!   carries the status and the start of the body.

use std::cell::Cell;
use std::time::Duration;

use serde_json::{Value, json};
use web_time::Instant;

use crate::error::{Error, Result};

/// The longest wait between attempts.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(60);

/// How to reach an OpenAI-compatible chat endpoint, and how patiently.
pub struct ChatOptions {
    /// The endpoint's base URL (`…/v1`) or its full `/chat/completions` URL.
    pub endpoint: String,
    /// The model name to ask for.
    pub model: String,
    /// Sent as a bearer token when set.
    pub api_key: Option<String>,
    /// Seconds for a whole request, answer included.
    pub timeout: f64,
    /// Attempts after the first.
    pub retries: u32,
    /// Most requests a second.
    pub rate: f64,
    /// The first back-off wait; it doubles on each retry.
    pub backoff: Duration,
}

/// A chat-completions client with rate limit, time-outs and retries.
pub struct ChatClient {
    agent: ureq::Agent,
    url: String,
    opts: ChatOptions,
    last: Cell<Option<Instant>>,
}

/// One user message: text, with an image (encoded file bytes and their MIME type) or not.
pub struct Message<'a> {
    /// The question.
    pub text: &'a str,
    /// An encoded image and its MIME type.
    pub image: Option<(&'a [u8], &'a str)>,
}

enum Failure {
    Retry(String, Option<Duration>),
    Fatal(String),
}

/// Whether `url`'s host is this machine: `localhost`, or a loopback address (127.0.0.0/8,
/// ::1). A host that only starts like one (`127.0.0.1.example.com`) is not.
fn is_loopback(url: &str) -> bool {
    let Ok(uri) = url.parse::<ureq::http::Uri>() else {
        return false;
    };
    let Some(host) = uri.host() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl ChatClient {
    /// A client for `opts` (checked).
    pub fn new(opts: ChatOptions) -> Result<Self> {
        // Written to refuse NaN too; the bounds keep every wait a representable Duration.
        if !(opts.rate >= 0.001 && opts.rate <= 1000.0) {
            return Err(Error::Invalid(format!(
                "rate {} is not in [0.001, 1000] requests a second",
                opts.rate
            )));
        }
        if !(opts.timeout > 0.0 && opts.timeout <= 3600.0) {
            return Err(Error::Invalid(format!(
                "timeout {} is not in (0, 3600] seconds",
                opts.timeout
            )));
        }
        if opts.retries > 100 || opts.backoff > MAX_WAIT {
            return Err(Error::Invalid(format!(
                "retries {} (at most 100) or back-off {:?} (at most {MAX_WAIT:?}) out of range",
                opts.retries, opts.backoff
            )));
        }
        let base = opts.endpoint.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Error::Invalid(format!(
                "endpoint {base:?} is not an http(s) URL"
            )));
        }
        if opts.api_key.is_some() && base.starts_with("http://") && !is_loopback(base) {
            return Err(Error::Invalid(format!(
                "endpoint {base:?} is plain http:// to another machine: the API key would \
                 cross the network unencrypted; use https://, or http:// to this machine \
                 (localhost, 127.0.0.1, ::1)"
            )));
        }
        let url = if base.ends_with("/chat/completions") {
            base.to_string()
        } else {
            format!("{base}/chat/completions")
        };
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs_f64(opts.timeout)))
            .http_status_as_error(false)
            .build()
            .into();
        Ok(ChatClient {
            agent,
            url,
            opts,
            last: Cell::new(None),
        })
    }

    /// The chat-completions URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The model asked for.
    pub fn model(&self) -> &str {
        &self.opts.model
    }

    fn wait_for_rate(&self) {
        let gap = Duration::from_secs_f64(1.0 / self.opts.rate);
        if let Some(last) = self.last.get() {
            let since = last.elapsed();
            if since < gap {
                std::thread::sleep(gap - since);
            }
        }
        self.last.set(Some(Instant::now()));
    }

    fn body(&self, msg: &Message) -> Value {
        use base64::Engine;
        let content = match msg.image {
            None => json!(msg.text),
            Some((bytes, mime)) => {
                let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
                json!([
                    {"type": "text", "text": msg.text},
                    {"type": "image_url", "image_url": {"url": format!("data:{mime};base64,{b64}")}}
                ])
            }
        };
        json!({
            "model": self.opts.model,
            "messages": [{"role": "user", "content": content}],
            "temperature": 0,
        })
    }

    /// A failure to send or to read the answer: always worth another try.
    fn transport(&self, e: ureq::Error) -> Failure {
        match e {
            ureq::Error::Timeout(_) => {
                Failure::Retry(format!("timed out after {} s", self.opts.timeout), None)
            }
            e => Failure::Retry(e.to_string(), None),
        }
    }

    fn attempt(&self, body: &str) -> std::result::Result<String, Failure> {
        self.wait_for_rate();
        let mut req = self
            .agent
            .post(&self.url)
            .header("Content-Type", "application/json");
        if let Some(key) = &self.opts.api_key {
            req = req.header("Authorization", format!("Bearer {key}"));
        }
        let mut resp = req.send(body).map_err(|e| self.transport(e))?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let text = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| self.transport(e))?;
        let excerpt: String = text.chars().take(200).collect();
        match status {
            200..=299 => {}
            408 | 429 | 500..=599 => {
                return Err(Failure::Retry(
                    format!("HTTP {status}: {excerpt}"),
                    retry_after,
                ));
            }
            _ => return Err(Failure::Fatal(format!("HTTP {status}: {excerpt}"))),
        }
        parse_reply(&text).map_err(|e| Failure::Retry(e, None))
    }

    /// Ask `msg` and parse the answer with `parse`, retrying as the module docs say.
    pub fn ask<T>(
        &self,
        msg: &Message,
        parse: impl Fn(&str) -> std::result::Result<T, String>,
    ) -> Result<T> {
        let body = self.body(msg).to_string();
        let mut last = String::new();
        let mut wait = Duration::ZERO;
        for attempt in 0..=self.opts.retries {
            std::thread::sleep(wait);
            let backoff = self
                .opts
                .backoff
                .checked_mul(2u32.saturating_pow(attempt))
                .map_or(MAX_WAIT, |b| b.min(MAX_WAIT));
            match self.attempt(&body) {
                Ok(content) => match parse(&content) {
                    Ok(v) => return Ok(v),
                    Err(e) => {
                        last = format!("unusable answer ({e})");
                        wait = backoff;
                    }
                },
                Err(Failure::Fatal(m)) => {
                    return Err(Error::Invalid(format!("{}: {m}", self.url)));
                }
                Err(Failure::Retry(m, after)) => {
                    last = m;
                    wait = after.unwrap_or(backoff);
                }
            }
        }
        Err(Error::Invalid(format!(
            "{}: giving up after {} attempts: {last}",
            self.url,
            self.opts.retries + 1
        )))
    }
}

/// The message text of a successful chat-completions reply body (`choices[0].message.content`),
/// or why there is none. Pure, so that it can be tested and fuzzed without a server.
pub fn parse_reply(body: &str) -> std::result::Result<String, String> {
    let excerpt: String = body.chars().take(200).collect();
    let v: Value = serde_json::from_str(body)
        .map_err(|e| format!("the answer is not JSON ({e}): {excerpt}"))?;
    v.pointer("/choices/0/message/content")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| format!("the answer has no choices[0].message.content: {excerpt}"))
}

/// A `Retry-After` header's wait: delay-seconds (RFC 9110; fractions accepted), at most
/// [`MAX_WAIT`]. Anything else — an HTTP date, NaN, a negative or non-numeric value — is
/// `None`, and the client's own back-off applies.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let seconds: f64 = value.trim().parse().ok()?;
    (seconds.is_finite() && seconds >= 0.0)
        .then(|| Duration::from_secs_f64(seconds.min(MAX_WAIT.as_secs_f64())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_parsed_or_refused_with_why() {
        let ok = r#"{"choices": [{"message": {"content": "[\"a dent\"]"}}]}"#;
        assert_eq!(parse_reply(ok).unwrap(), r#"["a dent"]"#);
        for (body, why) in [
            ("<html>502 Bad Gateway</html>", "not JSON"),
            ("", "not JSON"),
            (r#"{"choices": []}"#, "no choices[0].message.content"),
            (
                r#"{"choices": [{"message": {"content": 7}}]}"#,
                "no choices",
            ),
            (r#"{"error": {"message": "quota"}}"#, "no choices"),
        ] {
            let e = parse_reply(body).unwrap_err();
            assert!(e.contains(why), "{body}: {e}");
        }
    }

    #[test]
    fn retry_after_values_that_make_no_sense_fall_back_to_the_back_off() {
        let s = |v: f64| Some(Duration::from_secs_f64(v));
        for (header, want) in [
            ("3", s(3.0)),
            (" 0.5 ", s(0.5)),
            ("0", s(0.0)),
            ("86400", Some(MAX_WAIT)),
            ("1e300", Some(MAX_WAIT)),
            ("inf", None),
            ("NaN", None),
            ("-5", None),
            ("", None),
            ("soon", None),
            ("Wed, 21 Oct 2015 07:28:00 GMT", None),
        ] {
            assert_eq!(parse_retry_after(header), want, "{header:?}");
        }
    }

    #[test]
    fn absurd_client_settings_are_refused() {
        let ok = || ChatOptions {
            endpoint: "http://127.0.0.1:9/v1".into(),
            model: "m".into(),
            api_key: None,
            timeout: 30.0,
            retries: 3,
            rate: 1.0,
            backoff: Duration::from_millis(500),
        };
        assert!(ChatClient::new(ok()).is_ok());
        type Edit = Box<dyn Fn(&mut ChatOptions)>;
        let bad: Vec<(&str, Edit)> = vec![
            ("rate", Box::new(|o| o.rate = f64::NAN)),
            ("rate", Box::new(|o| o.rate = 1e-300)),
            ("rate", Box::new(|o| o.rate = 0.0)),
            ("timeout", Box::new(|o| o.timeout = 1e300)),
            ("timeout", Box::new(|o| o.timeout = -1.0)),
            ("retries", Box::new(|o| o.retries = u32::MAX)),
            (
                "back-off",
                Box::new(|o| o.backoff = Duration::from_secs(u64::MAX)),
            ),
        ];
        // An API key goes over plain http:// only to this machine.
        let keyed = |url: &str| {
            ChatClient::new(ChatOptions {
                endpoint: url.into(),
                api_key: Some("sk-secret".into()),
                ..ok()
            })
        };
        for url in [
            "http://localhost:8080/v1",
            "http://127.0.0.1:9/v1",
            "http://127.3.4.5/v1",
            "http://[::1]:8000/v1",
            "https://api.example.com/v1",
        ] {
            assert!(keyed(url).is_ok(), "{url}");
        }
        for url in [
            "http://api.example.com/v1",
            "http://127.0.0.1.example.com/v1",
            "http://10.0.0.2:8000/v1",
            "http://localhost.example.com/v1",
            "http://user@/v1",
        ] {
            match keyed(url) {
                Err(Error::Invalid(m)) => assert!(m.contains("unencrypted"), "{url}: {m}"),
                other => panic!("{url}: want the key refused, got {:?}", other.err()),
            }
            let no_key = ChatOptions {
                endpoint: url.into(),
                ..ok()
            };
            assert!(ChatClient::new(no_key).is_ok(), "{url} without a key");
        }
        for (want, edit) in bad {
            let mut o = ok();
            edit(&mut o);
            match ChatClient::new(o) {
                Err(Error::Invalid(m)) => assert!(m.contains(want), "want `{want}` in {m}"),
                Err(e) => panic!("want Invalid, got {e}"),
                Ok(_) => panic!("want `{want}` refused"),
            }
        }
    }
}
