//! Getting a token and the storage URL: TempAuth / Swauth v1.0 (`X-Auth-User` / `X-Auth-Key`
//! answered by `X-Storage-Url` / `X-Auth-Token`) or Keystone v3 password authentication (the
//! token in `X-Subject-Token`, the storage URL from the catalog's object-store endpoint of the
//! configured interface and region). Keystone v2 is gone from current OpenStack: not supported.
//!
//! Failures say what to fix: denied names OS_USERNAME / OS_PASSWORD (and the project for v3);
//! a URL that is no auth endpoint names OS_AUTH_URL; 5xx and transport faults are transient.

use std::io;

use serde_json::{json, Value};

use super::settings::{Auth, SwiftConfig};
use super::transport_error;
use crate::error::{Error, Result};

/// What an authentication gives: where the account is and the token for it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Session {
    pub storage_url: String,
    pub token: String,
}

fn fail(kind: io::ErrorKind, msg: String) -> Error {
    Error::storage("authenticate", "", io::Error::new(kind, msg))
}

/// An answer other than success, as an error saying what to fix.
fn refused(cfg: &SwiftConfig, url: &str, status: u16, body: &str) -> Error {
    let body: String = body.chars().take(200).collect();
    match status {
        401 | 403 => fail(io::ErrorKind::PermissionDenied, format!(
            "{url} refused the credentials ({status}): fix OS_USERNAME / OS_PASSWORD{} (OS_PASSWORD: config file or environment)",
            if matches!(cfg.auth, Auth::V3 { .. }) { ", OS_PROJECT_NAME and the domains (OS_USER_DOMAIN_NAME, OS_PROJECT_DOMAIN_NAME)" } else { "" }
        )),
        408 | 429 | 498 | 500..=599 => fail(io::ErrorKind::ConnectionAborted, format!("{url} answered {status}, try again later: {body}")),
        _ => fail(io::ErrorKind::Other, format!(
            "{url} answered {status} ({body}): is OS_AUTH_URL the Swift auth endpoint (v1.0: .../auth/v1.0, Keystone: .../v3)?"
        )),
    }
}

pub(crate) async fn authenticate(client: &reqwest::Client, cfg: &SwiftConfig) -> Result<Session> {
    match &cfg.auth {
        Auth::V1 => v1(client, cfg).await,
        Auth::V3 { .. } => v3(client, cfg).await,
    }
}

fn header(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

async fn v1(client: &reqwest::Client, cfg: &SwiftConfig) -> Result<Session> {
    let url = &cfg.auth_url;
    let resp = client
        .get(url)
        .header("X-Auth-User", &cfg.user)
        .header("X-Auth-Key", &cfg.password.0)
        .send()
        .await
        .map_err(|e| transport_error("authenticate", "", url, &e))?;
    let status = resp.status().as_u16();
    if !(200..300).contains(&status) {
        let body = resp.text().await.unwrap_or_default();
        return Err(refused(cfg, url, status, &body));
    }
    match (header(&resp, "x-storage-url"), header(&resp, "x-auth-token").or_else(|| header(&resp, "x-storage-token"))) {
        (Some(storage_url), Some(token)) => Ok(Session { storage_url: storage_url.trim_end_matches('/').to_string(), token }),
        _ => Err(fail(io::ErrorKind::Other, format!(
            "{url} answered {status} without X-Storage-Url and X-Auth-Token: is OS_AUTH_URL a Swift v1.0 auth endpoint?"
        ))),
    }
}

fn tokens_url(auth_url: &str) -> String {
    if auth_url.ends_with("/v3") {
        format!("{auth_url}/auth/tokens")
    } else {
        format!("{auth_url}/v3/auth/tokens")
    }
}

/// The object-store endpoint of `interface` (in `region`, when given) in a v3 token's catalog.
pub(crate) fn endpoint_from_catalog(token: &Value, interface: &str, region: Option<&str>) -> std::result::Result<String, String> {
    let catalog = token.pointer("/token/catalog").and_then(Value::as_array).ok_or("the token has no service catalog")?;
    let stores: Vec<&Value> = catalog.iter().filter(|s| s.get("type").and_then(Value::as_str) == Some("object-store")).collect();
    if stores.is_empty() {
        return Err("the catalog has no object-store service: is Swift registered in this Keystone?".into());
    }
    let mut seen = Vec::new();
    for s in stores {
        for e in s.get("endpoints").and_then(Value::as_array).into_iter().flatten() {
            let field = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("");
            seen.push(format!("{} {}", field("interface"), field("region")));
            let region_ok = region.is_none_or(|r| field("region") == r || field("region_id") == r);
            if field("interface") == interface && region_ok && !field("url").is_empty() {
                return Ok(field("url").trim_end_matches('/').to_string());
            }
        }
    }
    Err(format!(
        "the catalog has no {interface} object-store endpoint{} (it has: {}): fix OS_REGION_NAME or OS_ENDPOINT_TYPE",
        region.map(|r| format!(" in region {r}")).unwrap_or_default(),
        seen.join(", ")
    ))
}

async fn v3(client: &reqwest::Client, cfg: &SwiftConfig) -> Result<Session> {
    let Auth::V3 { project, user_domain, project_domain, region, interface } = &cfg.auth else { unreachable!() };
    let url = tokens_url(&cfg.auth_url);
    let body = json!({"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": cfg.user, "domain": {"name": user_domain}, "password": cfg.password.0}}},
        "scope": {"project": {"name": project, "domain": {"name": project_domain}}},
    }});
    let resp = client
        .post(&url)
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .map_err(|e| transport_error("authenticate", "", &url, &e))?;
    let status = resp.status().as_u16();
    let token = header(&resp, "x-subject-token");
    let text = resp.text().await.map_err(|e| transport_error("authenticate", "", &url, &e))?;
    if !(200..300).contains(&status) {
        return Err(refused(cfg, &url, status, &text));
    }
    let token = token.ok_or_else(|| fail(io::ErrorKind::Other, format!("{url} answered {status} without X-Subject-Token: is OS_AUTH_URL a Keystone v3 endpoint?")))?;
    let parsed: Value = serde_json::from_str(&text)
        .map_err(|e| fail(io::ErrorKind::Other, format!("{url}: the token's body is no JSON ({e}): is OS_AUTH_URL a Keystone v3 endpoint?")))?;
    let storage_url = endpoint_from_catalog(&parsed, interface, region.as_deref()).map_err(|m| fail(io::ErrorKind::Other, format!("{url}: {m}")))?;
    Ok(Session { storage_url, token })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_endpoint_by_interface_and_region() {
        let token = json!({"token": {"catalog": [
            {"type": "identity", "endpoints": [{"interface": "public", "region": "One", "url": "https://k/v3"}]},
            {"type": "object-store", "endpoints": [
                {"interface": "internal", "region": "One", "region_id": "One", "url": "http://10.0.0.1:8080/v1/AUTH_p"},
                {"interface": "public", "region": "One", "region_id": "One", "url": "https://one.example/v1/AUTH_p/"},
                {"interface": "public", "region": "Two", "region_id": "Two", "url": "https://two.example/v1/AUTH_p"}]}]}});
        assert_eq!(endpoint_from_catalog(&token, "public", None).unwrap(), "https://one.example/v1/AUTH_p");
        assert_eq!(endpoint_from_catalog(&token, "public", Some("Two")).unwrap(), "https://two.example/v1/AUTH_p");
        assert_eq!(endpoint_from_catalog(&token, "internal", Some("One")).unwrap(), "http://10.0.0.1:8080/v1/AUTH_p");
        let e = endpoint_from_catalog(&token, "admin", Some("Two")).unwrap_err();
        assert!(e.contains("OS_REGION_NAME") && e.contains("public Two"), "{e}");
        let e = endpoint_from_catalog(&json!({"token": {"catalog": []}}), "public", None).unwrap_err();
        assert!(e.contains("no object-store service"), "{e}");
        assert_eq!(tokens_url("https://k:5000/v3"), "https://k:5000/v3/auth/tokens");
        assert_eq!(tokens_url("https://k:5000"), "https://k:5000/v3/auth/tokens");
    }
}
