//! A stand-in Keystone v3 on loopback, in front of the real Swift's TempAuth.
//!
//! It answers `POST /v3/auth/tokens` the way Keystone does for password authentication scoped to
//! a project: it checks the whole JSON body (method, user and its domain, password, project and
//! its domain) against `Keystone::expect`, answers 401 with Keystone's error body when anything
//! differs, and otherwise logs in to Swift's TempAuth with the Swift user it was given, returning
//! that real token as `X-Subject-Token` and a catalog whose object-store endpoint (public, region
//! `REGION`) is Swift's storage URL. The other endpoints in the catalog lead nowhere, so a client
//! that picks the wrong one fails. `bad_token_next()` makes the next login hand out a token Swift
//! does not know (what an expired token looks like to the client).
//!
//! Only std and serde_json; one thread per connection, HTTP/1.1 with keep-alive (reqwest pools).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

/// The region whose public object-store endpoint is the real Swift.
pub const REGION: &str = "RegionTwo";

/// What the client must send.
#[derive(Clone)]
pub struct Expect {
    pub user: &'static str,
    pub user_domain: &'static str,
    pub password: &'static str,
    pub project: &'static str,
    pub project_domain: &'static str,
}

pub struct Keystone {
    pub port: u16,
    state: Arc<State>,
}

struct State {
    expect: Expect,
    swift_port: u16,
    /// TempAuth credentials the stand-in logs in with.
    swift_user: (&'static str, &'static str),
    /// Logins answered (201 or 401).
    logins: AtomicUsize,
    bad_token_next: AtomicBool,
}

impl Keystone {
    pub fn start(expect: Expect, swift_port: u16, swift_user: (&'static str, &'static str)) -> Keystone {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the stand-in Keystone");
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(State { expect, swift_port, swift_user, logins: AtomicUsize::new(0), bad_token_next: AtomicBool::new(false) });
        let st = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(c) = conn else { continue };
                let st = st.clone();
                std::thread::spawn(move || serve(c, &st));
            }
        });
        Keystone { port, state }
    }

    /// OS_AUTH_URL.
    pub fn auth_url(&self) -> String {
        format!("http://127.0.0.1:{}/v3", self.port)
    }

    pub fn logins(&self) -> usize {
        self.state.logins.load(Ordering::SeqCst)
    }

    pub fn bad_token_next(&self) {
        self.state.bad_token_next.store(true, Ordering::SeqCst);
    }
}

/// One connection: requests until the client closes it.
fn serve(c: TcpStream, st: &State) {
    let mut out = c.try_clone().unwrap();
    let mut r = BufReader::new(c);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.trim().eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0u8; len];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        let (status, headers, body) = if line.starts_with("POST /v3/auth/tokens ") {
            tokens(st, &body)
        } else {
            (404, String::new(), json!({"error": {"code": 404, "title": "Not Found"}}).to_string())
        };
        let reason = match status {
            201 => "Created",
            401 => "Unauthorized",
            _ => "Not Found",
        };
        let resp = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{headers}\r\n{body}",
            body.len()
        );
        if out.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

/// Keystone's answer to a password login: (status, extra header lines, body).
fn tokens(st: &State, body: &[u8]) -> (u16, String, String) {
    st.logins.fetch_add(1, Ordering::SeqCst);
    let denied = || (401, String::new(), json!({"error": {"code": 401, "title": "Unauthorized", "message": "The request you have made requires authentication."}}).to_string());
    let Ok(req) = serde_json::from_slice::<Value>(body) else { return denied() };
    let at = |p: &str| req.pointer(p).and_then(Value::as_str).unwrap_or("");
    let e = &st.expect;
    let methods_ok = req.pointer("/auth/identity/methods") == Some(&json!(["password"]));
    if !methods_ok
        || at("/auth/identity/password/user/name") != e.user
        || at("/auth/identity/password/user/domain/name") != e.user_domain
        || at("/auth/identity/password/user/password") != e.password
        || at("/auth/scope/project/name") != e.project
        || at("/auth/scope/project/domain/name") != e.project_domain
    {
        return denied();
    }
    let (storage_url, token) = tempauth(st.swift_port, st.swift_user);
    let token = if st.bad_token_next.swap(false, Ordering::SeqCst) { "gAAAAAB-not-a-token-swift-knows".to_string() } else { token };
    let nowhere = "http://127.0.0.1:9/v1/AUTH_nowhere";
    let catalog = json!([
        {"type": "identity", "name": "keystone", "endpoints": [
            {"interface": "public", "region": REGION, "region_id": REGION, "url": "http://127.0.0.1:9/v3"}]},
        {"type": "object-store", "name": "swift", "endpoints": [
            {"interface": "public", "region": "RegionOne", "region_id": "RegionOne", "url": nowhere},
            {"interface": "internal", "region": REGION, "region_id": REGION, "url": nowhere},
            {"interface": "public", "region": REGION, "region_id": REGION, "url": storage_url}]},
    ]);
    let body = json!({"token": {
        "methods": ["password"], "expires_at": "2099-01-01T00:00:00.000000Z",
        "user": {"name": e.user, "domain": {"name": e.user_domain}},
        "project": {"name": e.project, "domain": {"name": e.project_domain}},
        "catalog": catalog}});
    (201, format!("X-Subject-Token: {token}\r\n"), body.to_string())
}

/// A real token and the storage URL from Swift's TempAuth.
fn tempauth(port: u16, (user, key): (&str, &str)) -> (String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to Swift");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET /auth/v1.0 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nX-Auth-User: {user}\r\nX-Auth-Key: {key}\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read TempAuth's answer");
    let head = |name: &str| {
        resp.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    };
    match (head("X-Storage-Url"), head("X-Auth-Token")) {
        (Some(url), Some(token)) => (url, token),
        _ => panic!("TempAuth did not log in {user}: {}", resp.lines().next().unwrap_or("")),
    }
}
